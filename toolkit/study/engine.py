"""The study engine: cross-validated comparison of fusion strategies and single-modality
baselines, missing-modality robustness, exact modality contributions, figures, report.

This module runs a study from start to end (:func:`run_study`); each job lives in its own
module: :mod:`~toolkit.study.data` (load and check the data), :mod:`~toolkit.study.splits`,
:mod:`~toolkit.study.orchestration` (folds, joblib / Dask), :mod:`~toolkit.study.summary`
and :mod:`~toolkit.study.metrics`, :mod:`~toolkit.study.writing` (run folder, tables,
model) and :mod:`~toolkit.study.report` (figures, HTML).

Order of a run (:func:`run_study`): the config is validated, the ``--scheduler`` (if any)
is reached, and the data are loaded and checked against the config
(:func:`prepare_study`: columns, target, classes, groups, ``cv``, metrics, fusion
parameters) *before* any run folder exists, so a config error leaves nothing behind.
``mmtk validate`` runs the same checks.

The run folder is ``<out>/<name>-<YYYYmmdd-HHMMSS>[-k]``, always a new, real folder
directly inside ``out`` (resolved; a symbolic link at its place is refused). Its state is
in ``status.json`` (``{"status": "running" | "complete" | "failed", ...}``, replaced
atomically). A run that fails after its folder exists is *marked failed, not deleted*:
``status.json`` says ``failed`` with the error, a ``FAILED`` file holds the error and
its traceback, and the folds that finished stay in ``folds/`` (results that cost time
are kept for inspection). A run killed outright (SIGKILL, power loss) keeps
``"status": "running"`` with no live process: treat it as failed. Only a folder whose
status is ``complete`` holds a finished study.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sklearn.utils import Bunch

from toolkit.study.config import StudyConfig, validate_config
from toolkit.study.data import load_study_data, prepare_study
from toolkit.study.drilldown import pick_rows, run_drilldown, summarize_drilldown
from toolkit.study.errors import SchedulerError, StudyError
from toolkit.study.labs import run_labs, tabular_modalities
from toolkit.study.model_card import write_model_card
from toolkit.study.orchestration import (
    SCHEDULER_TIMEOUT,
    FoldPlan,
    LastFoldModels,
    connect_scheduler,
    fold_results,
    log,
)
from toolkit.study.splits import make_splits
from toolkit.study.summary import OutOfFold, cell_missingness, summarize
from toolkit.study.transfer import transfer_summary
from toolkit.study.writing import (
    FAILED_FILE,
    STATUS_FILE,
    make_run_folder,
    mark_complete,
    mark_failed,
    mark_running,
    out_root,
    save_chosen_model,
    write_fold,
    write_inputs,
    write_tables,
)
from toolkit.utils import progress as progress_bar

__all__ = [
    "FAILED_FILE",
    "SCHEDULER_TIMEOUT",
    "STATUS_FILE",
    "SchedulerError",
    "StudyError",
    "connect_scheduler",
    "load_study_data",
    "make_splits",
    "prepare_study",
    "run_study",
]


@dataclass(frozen=True)
class _Job:
    """A study ready to run: its config, prepared data and how to run it."""

    config: StudyConfig
    study: Bunch
    client: object = None
    command: str | None = None
    progress: bool = True


def _stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def run_study(
    config,
    out_dir="runs",
    *,
    command: str | None = None,
    progress: bool = True,
    scheduler: str | None = None,
    scheduler_timeout: float = SCHEDULER_TIMEOUT,
    limits: dict | None = None,
) -> Path:
    """Run a validated study config; return the run folder.

    The folder (``<name>-quick-<stamp>`` for a quick run) holds ``status.json``, the resolved
    config, ``environment.json``, ``folds/``, ``metrics.json``/``.csv``, ``predictions.csv``,
    ``contributions.csv``, ``interactions.csv``, ``contribution_intervals.csv`` (see
    ``output``), PNG figures (``drilldown_<modality>_row<k>.png``; text only with
    ``output.include_text``, pictures only with ``output.include_images``), ``report.html``,
    ``model/`` (per ``output.model_rule``, refitted on all rows) and ``model_card.md``.

    Parameters
    ----------
    config : StudyConfig
        As :func:`toolkit.study.load_config` returns it (a mapping is checked first).
    out_dir : str or path, default="runs"
        Folder of the run folder (made once the config fits its data; ``~`` expanded).
    scheduler : str, optional
        Address of a running Dask scheduler to run the folds on; ``scheduler_timeout``
        (default SCHEDULER_TIMEOUT, 5 s): seconds to wait for it.
    limits : dict, optional
        Keyword limits for :func:`toolkit.study.validate_config` (``max_bootstrap``,
        ``max_n_jobs``, ``max_synthetic_bytes``); default: its defaults.

    Raises
    ------
    ConfigError
        The config does not fit the data (nothing is written).
    SchedulerError
        ``scheduler`` is not a reachable Dask scheduler (nothing is written).
    StudyError
        The study failed after the run folder was made: the folder is marked failed
        (``status.json``, ``FAILED``) and keeps the finished folds; ``run_folder`` names it.
    """
    config = validate_config(config, **(limits or {}))
    with contextlib.ExitStack() as stack:
        client = None
        if scheduler is not None:
            client = stack.enter_context(connect_scheduler(scheduler, scheduler_timeout))
        study = prepare_study(config, limits=limits)
        name = f"{config.name}-quick" if config.quick else config.name
        run = make_run_folder(out_root(out_dir), name, _stamp())  # once the config fits
        mark_running(run)
        try:
            _execute(run, _Job(config, study, client, command, progress))
        except BaseException as exc:
            error = _failed(run, exc)
            if error is exc:
                raise
            raise error from exc
        mark_complete(run)
    return run


def _failed(run: Path, exc: BaseException) -> BaseException:
    """Mark ``run`` failed; the exception to raise (a StudyError naming the folder, or
    ``exc`` itself for StudyError, KeyboardInterrupt and SystemExit)."""
    mark_failed(run, exc)
    if isinstance(exc, StudyError):
        exc.run_folder = run
        return exc
    if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit
        return exc
    return StudyError(
        f"{type(exc).__name__}: {' '.join(str(exc).split())} (run folder '{run}' is "
        f"marked failed; its {FAILED_FILE} file holds the traceback)",
        run_folder=run,
    )


def _execute(run: Path, job: _Job) -> None:
    """The body of a study run, writing into ``run``."""
    config, study = job.config, job.study
    write_inputs(run, config, job.command)
    log(job.progress, f"run folder {run}")
    plan = FoldPlan.from_study(config, study)
    plan = dataclasses.replace(plan, verbose=job.progress and config.evaluation.n_jobs == 1)
    log(
        job.progress,
        f"{len(study.frame)} rows, {len(plan.names)} modalities {plan.names}, "
        f"{config.evaluation.cv} folds, strategies {list(plan.fusions)}",
    )
    with tempfile.TemporaryDirectory(prefix="mmtk-cache-", dir=run) as cache_dir:
        results = _run_folds(run, job, plan, cache_dir)
        unit = "groups" if study.groups is not None else "rows"
        log(job.progress, f"computing metrics with bootstrap intervals (resampling {unit})")
        summary, rows = summarize(config, results, grouped=study.groups is not None)
        summary["missingness"]["cells"] = cell_missingness(study.frame, study.modalities)
        models = LastFoldModels(plan, results, study.splits, cache_dir)  # each refit once
        drill = _drilldown(job, plan, results, summary, models)
        summary["labs"] = _labs(job, plan, results, summary, models)
        if study.groups is not None and not config.quick:  # a quick run skips it
            log(job.progress, "checking how each modality transfers across groups")
            summary["transfer"] = transfer_summary(
                plan, results, summary, cache_dir=cache_dir,
                group_name=_group_column(config, study),
                include_group_ids=config.output.include_group_ids,
            )  # fmt: skip
    out = config.output
    summary["drilldown"] = summarize_drilldown(
        drill, include_text=out.include_text, max_parts=out.drilldown_max_parts
    )
    write_tables(run, results, summary, rows, group_column=_group_column(config, study))
    if out.save_model:
        chosen = summary["chosen"]
        log(job.progress, f"refitting {chosen['model'] or 'auto'} ({chosen['rule']}) on all rows")
        model = save_chosen_model(run, study, chosen, config.seed, available=results.mask)
        write_model_card(run, config, summary, model)
    if out.report:
        _write_report(run, job, results, summary, drill)
        log(job.progress, f"report: {run / 'report.html'}")


def _drilldown(job: _Job, plan: FoldPlan, results: OutOfFold, summary: dict, models):
    """The drill-down of the explained strategy on ``output.drilldown_rows`` test rows of
    the last fold (None when explanations are off or it is turned off)."""
    out, label = job.config.output, summary.get("explained_model")
    if not plan.explain or out.drilldown_rows < 1 or label not in plan.fusions:
        return None
    log(job.progress, f"drilling into the modalities of {label} on {out.drilldown_rows} rows")
    return run_drilldown(
        plan, label, results, job.study.splits, n_rows=out.drilldown_rows,
        max_parts=out.drilldown_max_parts, models=models,
    )  # fmt: skip


def _labs(job: _Job, plan: FoldPlan, results: OutOfFold, summary: dict, models) -> dict:
    """The lab drill-down (exact Owen values per column of each tabular modality) of the
    explained strategy on the last fold's test rows, with ``"saved"``, the same for the
    saved model when it is one table alone ({} when explanations are off or no modality is
    a table)."""
    label, chosen = summary.get("explained_model"), summary["chosen"].get("model")
    tables = tabular_modalities(plan.modalities)
    if not plan.explain or not tables:
        return {}
    labels = [x for x in (label, chosen) if x in plan.fusions or x in {f"{n} only" for n in tables}]
    out = {}
    for which in dict.fromkeys(labels):
        log(job.progress, f"drilling into the columns of the tables of {which}")
        labs = _labs_of(job, plan, results, which, models)
        if which == label:
            out = {**labs, **out}
        else:
            out["saved"] = labs
    return out


def _labs_of(job: _Job, plan: FoldPlan, results: OutOfFold, label: str, models) -> dict:
    test = job.study.splits[-1][1]
    shown = pick_rows(
        results.models[label][test], plan.y[test], plan.classification,
        job.config.output.drilldown_rows,
        positive=1 if plan.classification and plan.n_classes == 2 else None,
    )  # fmt: skip
    groups = {m.name: m.column_groups for m in job.config.modalities or [] if m.column_groups}
    return run_labs(
        plan, label, results, job.study.splits, column_groups=groups,
        shown_rows=[int(test[p]) for p, _ in shown], models=models,
    )  # fmt: skip


def _run_folds(run: Path, job: _Job, plan: FoldPlan, cache_dir) -> OutOfFold:
    """Run every fold, writing each to ``folds/`` as it finishes; the out-of-fold outputs."""
    results = OutOfFold.empty(plan, job.study.classes)
    folds_dir = run / "folds"
    folds_dir.mkdir()
    n_folds = len(job.study.splits)
    n_jobs = job.config.evaluation.n_jobs
    with contextlib.ExitStack() as stack:
        folds = stack.enter_context(
            fold_results(
                plan, job.study.splits, cache_dir,
                n_jobs=n_jobs, client=job.client, progress=job.progress,
            )
        )  # fmt: skip
        bar = stack.enter_context(
            progress_bar(total=n_folds, desc="folds", unit="fold", verbose=job.progress)
        )
        for done, result in enumerate(folds):
            results.add(result)
            write_fold(folds_dir, result)
            bar.update(1)
            if bar.disable:  # no terminal: one line per fold for the log
                log(
                    job.progress,
                    f"fold {result.fold} of folds 0-{n_folds - 1} done ({done + 1} of {n_folds} "
                    "finished)",
                )
    return results


def _group_column(config: StudyConfig, study: Bunch) -> str | None:
    """The name of the groups' column in predictions.csv (None without groups)."""
    if study.groups is None:
        return None
    return config.data.groups or "group"


def _grouped_by(config: StudyConfig, study: Bunch) -> str | None:
    if study.groups is None:
        return None
    return config.data.groups or "the data source's groups"


def shown_drilldown(drill, *, include_images: bool):
    """The drill-down whose figures the report draws: without ``include_images``
    (``output.include_images``, false by default) its image, scan and audio modalities are
    left out, so no picture of a row (an image, a scan slice, a clip's waveform) is drawn
    (their parts stay listed by name in the table)."""
    from toolkit.study.report import PICTURE_KINDS

    if drill is None or include_images:
        return drill
    kept = {n: e for n, e in drill.explanations.items() if drill.kinds[n] not in PICTURE_KINDS}
    return dataclasses.replace(drill, explanations=kept)


def _write_report(run: Path, job: _Job, results: OutOfFold, summary: dict, drill) -> None:
    from toolkit.study.report import (
        drilldown_figures,
        modality_kinds,
        text_examples,
        write_figures,
        write_report,
    )

    config, study = job.config, job.study
    examples = []
    if config.output.include_text:
        values = results.contributions[summary["explained_model"]]
        examples = text_examples(study.frame, study.modalities, values)
    figures = write_figures(run, results, summary)
    drill = shown_drilldown(drill, include_images=config.output.include_images)
    pictures = drilldown_figures(run, drill, include_text=config.output.include_text)
    write_report(
        run,
        config,
        summary,
        figures=figures,
        drilldown_figures=pictures,
        text_examples=examples,
        grouped_by=_grouped_by(config, study),
        n_groups=None if study.groups is None else len(set(study.groups.tolist())),
        modality_kinds=modality_kinds(study.modalities),
    )
