"""``mmtk``: run, validate and list studies from the command line."""

from __future__ import annotations

import argparse
import sys


class Terminated(SystemExit):
    """SIGTERM arrived while ``mmtk run`` ran (exit status 128 + 15)."""


def _terminate(signum, frame):
    raise Terminated(128 + signum)


def _cmd_run(args) -> int:
    import signal
    import threading

    from toolkit.study import load_config, run_study
    from toolkit.study.engine import SCHEDULER_TIMEOUT

    config = load_config(args.config, _overrides(args))
    # SIGTERM (a scheduler's kill, `kill PID`) unwinds like Ctrl-C, so the run folder is
    # marked failed instead of staying "running".
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        run = run_study(
            config,
            args.out,
            command=" ".join(["mmtk", *sys.argv[1:]]),
            progress=not args.quiet,
            scheduler=args.scheduler,
            scheduler_timeout=SCHEDULER_TIMEOUT
            if args.scheduler_timeout is None
            else args.scheduler_timeout,
        )
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    _print_summary(run)
    print(f"run folder: {run}")
    print(f"report: {run / 'report.html'}")
    return 0


def _overrides(args) -> list[str]:
    """The ``--set`` assignments, then ``quick=true`` with ``--quick``."""
    return [*(args.set or []), *(["quick=true"] if args.quick else [])]


def _print_summary(run) -> None:
    """One screen: the headline, the primary metric of every model with its 95% interval,
    the contributions and the conformal coverage of the chosen model."""
    import json
    import textwrap

    from toolkit.study.disclosure import headline_text

    metrics = json.loads((run / "metrics.json").read_text())
    primary = metrics["primary_metric"]
    chosen = metrics["chosen"]["model"]
    print(textwrap.fill(headline_text(metrics), width=100))
    print(f"{'model':<24}{primary:>10}   95% interval")
    for group in ("strategies", "baselines"):
        for name, entry in metrics[group].items():
            m = entry[primary]
            label = f"{name} fusion" if group == "strategies" else name
            label += " *" if name == chosen else ""
            interval = (
                f"[{m['low']:.3f}, {m['high']:.3f}]"
                if m["low"] == m["low"]  # NaN when evaluation.bootstrap is 0
                else "(no bootstrap)"
            )
            print(f"{label:<24}{m['value']:>10.3f}   {interval}")
    explained = metrics.get("explained_model", metrics["best_strategy"])
    shares = metrics["mean_abs_contribution"].get(explained, {})
    if shares:
        total = sum(shares.values()) or 1.0
        parts = ", ".join(f"{k} {shares[k] / total:.0%}" for k in metrics["contribution_ranking"])
        print(f"modality contributions ({explained} fusion): {parts}")
    conformal = metrics.get("conformal") or {}
    per_pattern = conformal.get("strategies", {}).get(chosen) or {}
    if per_pattern.get("all"):
        worst = min((v["coverage"], p) for p, v in per_pattern.items() if p != "all")
        print(
            f"conformal coverage ({chosen}, asked {conformal['confidence']:.0%}): "
            f"{per_pattern['all']['coverage']:.1%} overall, lowest {worst[0]:.1%} ({worst[1]})"
            + (
                f"; {per_pattern['all']['uninformative']:.0%} of rows got an uninformative "
                "set/interval (covered by construction)"
                if per_pattern["all"].get("uninformative")
                else ""
            )
        )


def _cmd_validate(args) -> int:
    from toolkit.study import load_config
    from toolkit.study.engine import prepare_study

    config = load_config(args.config, _overrides(args))
    study = prepare_study(config)
    print(
        f"{args.config}: valid ({config.task}, data {config.data.source}: "
        f"{len(study.frame)} rows, modalities {[m[0] for m in study.modalities]}, "
        f"{config.evaluation.cv} folds, fusion {config.fusion_names})"
        + (" — quick run, not for reporting" if config.quick else "")
    )
    return 0


def _cmd_datasets(args) -> int:
    """One line per registered dataset with its licence and card; with a name, its
    citation too. Licences and citations are read from the data cards."""
    from toolkit.datasets import DATASETS

    if args.name is not None:
        if args.name not in DATASETS:
            print(f"mmtk: {DATASETS.unknown(args.name)}", file=sys.stderr)
            return 2
        info = DATASETS[args.name]
        print(f"{info.name} ({info.kind}): {info.title}")
        print(f"  licence: {info.licence}")
        print(f"  citation: {info.citation}")
        print(f"  card: {info.card}")
        return 0
    width = max(len(name) for name in DATASETS)
    for info in DATASETS.values():
        print(f"{info.name:<{width}}  {info.kind:<9}  {info.description}")
        print(f"{'':<{width}}  licence: {info.licence}")
        print(f"{'':<{width}}  card: {info.card}")
    return 0


QUICK_HELP = (
    "a test-sized run (about 80 rows, 2 folds, 10 resamples, small encoders) marked 'quick "
    "run - not for reporting' in the report and metrics.json: to see that a config runs"
)
SET_HELP = (
    "override a config key, e.g. --set evaluation.cv=3; a list entry by position or name: "
    "--set modalities.2.params.backend=statistics, --set modalities.note.params.n_components=8"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmtk", description="Multimodal sentiment and clinical studies from YAML configs."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a study config and write a run folder with a report")
    run.add_argument("config", help="path of a YAML study config (see pipelines/)")
    run.add_argument(
        "--out", default="runs", help="folder under which the run folder is created (default: runs)"
    )
    run.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help=SET_HELP,
    )
    run.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the folds on an existing Dask scheduler (needs the 'distributed' extra)",
    )
    run.add_argument(
        "--scheduler-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds to wait for --scheduler to answer (default: 5)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress messages")
    run.add_argument("--quick", action="store_true", help=QUICK_HELP)
    run.set_defaults(func=_cmd_run)
    val = sub.add_parser(
        "validate",
        help="check a study config against its data (columns, target, cv, metrics) without "
        "running it",
    )
    val.add_argument("config")
    val.add_argument("--set", action="append", metavar="KEY=VALUE")
    val.add_argument("--quick", action="store_true", help="validate the config as --quick runs it")
    val.set_defaults(func=_cmd_validate)
    ds = sub.add_parser(
        "datasets", help="list the datasets the toolkit can make or load, with licences"
    )
    ds.add_argument(
        "name", nargs="?", help="a dataset's function name: print its licence and citation"
    )
    ds.set_defaults(func=_cmd_datasets)
    return parser


def main(argv=None) -> int:
    """Run ``mmtk``; return the exit status.

    0: done. 2: the command, config or data is wrong (a config key, a column, the
    scheduler, ``--out``, a missing file); nothing was run. 1: the study failed while
    running; its run folder is marked failed. 130: interrupted (Ctrl-C); 143: SIGTERM;
    a run folder already made is marked failed. Each error is one line on stderr.
    """
    from toolkit.study.config import ConfigError
    from toolkit.study.engine import SchedulerError, StudyError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"mmtk: config error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except SchedulerError as exc:
        print(f"mmtk: {_one_line(exc)}", file=sys.stderr)
        return 2
    except StudyError as exc:
        print(f"mmtk: study failed: {_one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # a missing file, --out that is a file, no permission
        print(f"mmtk: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmtk: interrupted (a run folder already made is marked failed)", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    raise SystemExit(main())
