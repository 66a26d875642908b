"""The study engine: cross-validated comparison of fusion strategies and single-modality
baselines, missing-modality robustness, exact modality contributions, figures, report.

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

import datetime as _dt
import json
import os
import platform
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.base import clone
from sklearn.utils import Bunch

from toolkit._utils import seed_if_unset
from toolkit.study.config import (
    ConfigError,
    check_name,
    metric_names,
    resolve_input_paths,
    validate_config,
)
from toolkit.study.metrics import (
    bootstrap_interval,
    classification_metrics,
    paired_difference,
    regression_metrics,
)

LOWER_IS_BETTER = {"mae", "brier"}
#: Seconds to wait for a ``--scheduler`` to answer before giving up.
SCHEDULER_TIMEOUT = 5.0
STATUS_FILE = "status.json"
FAILED_FILE = "FAILED"


class StudyError(RuntimeError):
    """A study failed after its run folder was made; the folder is marked failed and
    finished folds are kept in it (``run_folder``)."""

    def __init__(self, message: str, run_folder: Path | None = None):
        super().__init__(message)
        self.run_folder = run_folder


class SchedulerError(RuntimeError):
    """The ``--scheduler`` address is not a reachable Dask scheduler (or dask is absent)."""


def _log(enabled: bool, message: str) -> None:
    if enabled:
        print(f"[mmtk] {message}", file=sys.stderr, flush=True)


# -- data -------------------------------------------------------------------------------


def _default_data_dir(config_path: str | None) -> str | None:
    if os.environ.get("TOOLKIT_DATA_DIR"):
        return os.environ["TOOLKIT_DATA_DIR"]
    candidates = [Path.cwd().parent / "shared" / "data"]
    if config_path:
        candidates.append(Path(config_path).resolve().parents[1].parent / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return str(candidate)
    return None


def _rows(mask) -> str:
    rows = np.flatnonzero(np.asarray(mask))
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return f"row(s) {rows[:5].tolist()}{more}"


def _column(frame: pd.DataFrame, key: str, name: str) -> np.ndarray:
    """A column that must exist and have no missing value."""
    if name not in frame.columns:
        raise ConfigError(
            f"{key}: column '{name}' is not in the data (columns: {list(frame.columns)[:12]})"
        )
    values = frame[name]
    missing = values.isna().to_numpy()
    if missing.any():
        raise ConfigError(
            f"{key}: column '{name}' has no value in {_rows(missing)}; fill them or drop the rows"
        )
    return values.to_numpy()


def load_study_data(config: dict):
    """Return (frame, y, groups, modalities, bunch) for a validated config.

    Relative input paths in ``data.params`` resolve against the config's folder; for
    ``load_manifest`` with ``id_column``, the config's ``data.target`` is passed as the
    manifest's target, so duplicate ids with conflicting labels are refused. Errors
    of the data source (a missing or unreadable file, a bad parameter) are raised as
    ConfigError naming ``data.params``.
    """
    import pickle

    import toolkit.datasets as datasets
    import toolkit.encoders as encoders

    data = config["data"]
    source = data["source"]
    params = resolve_input_paths(config)
    if source.startswith("make_"):
        params.setdefault("random_state", config["seed"])
    elif source == "load_manifest":
        if data.get("target") and params.get("id_column"):
            params.setdefault("target", data["target"])  # ids are checked against the labels
    elif source == "load_mmsa_features":
        pass
    elif "data_dir" not in params:
        found = _default_data_dir(config.get("_path"))
        if found is None:
            raise ConfigError(
                f"data.params.data_dir: {source} needs a data folder; set it, or TOOLKIT_DATA_DIR"
            )
        params["data_dir"] = found
    if "informative" in params and isinstance(params["informative"], list):
        params["informative"] = tuple(params["informative"])
    try:
        bunch = getattr(datasets, source)(**params)
    except (TypeError, ValueError, OSError, pickle.UnpicklingError) as exc:
        message = " ".join(str(exc).split())
        raise ConfigError(f"data.params: {source} failed: {message}") from exc
    frame = bunch.frame
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        raise ConfigError(f"data: {source} returned no rows; check data.params")
    if data.get("target"):
        y = _column(frame, "data.target", data["target"])
    elif getattr(bunch, "target", None) is not None:
        y = np.asarray(bunch.target)
    else:
        raise ConfigError("data.target: this source has no default target; name a column")
    groups = None
    if data.get("groups"):
        groups = _column(frame, "data.groups", data["groups"])
    elif getattr(bunch, "groups", None) is not None:
        groups = np.asarray(bunch.groups)
    if config.get("modalities"):
        modalities = []
        for i, mod in enumerate(config["modalities"]):
            cols = mod["columns"]
            wanted = cols if isinstance(cols, list) else [cols]
            missing = [c for c in wanted if c not in frame.columns]
            if missing:
                raise ConfigError(
                    f"modalities[{i}].columns: column(s) {missing} are not in the data "
                    f"(columns: {list(frame.columns)[:12]})"
                )
            encoder = getattr(encoders, mod["encoder"])
            try:
                enc = encoder(**(mod.get("params") or {}))
            except TypeError as exc:
                raise ConfigError(f"modalities[{i}].params: {exc}") from exc
            modalities.append((mod["name"], enc, cols))
    else:
        if not hasattr(bunch, "modalities"):
            raise ConfigError("modalities: this data source has no default modalities; list them")
        modalities = bunch.modalities
    return frame, y, groups, modalities, bunch


def _target(config: dict, y_raw, n_rows: int):
    """(classes, encoded y) for classification, (None, float y) for regression."""
    key = (
        f"data.target ('{config['data']['target']}')"
        if config["data"].get("target")
        else ("data.target")
    )
    if len(y_raw) != n_rows:
        raise ConfigError(f"{key}: {len(y_raw)} targets for {n_rows} rows")
    if config["task"] == "regression":
        if (
            y_raw.dtype == bool
            or y_raw.dtype.kind not in "iuf"
            and not all(
                isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in y_raw
            )
        ):
            raise ConfigError(
                f"{key}: a regression target must be numeric, found values such as "
                f"{y_raw[:3].tolist()}; use task: classification for labels"
            )
        y = np.asarray(y_raw, dtype=float)
        bad = ~np.isfinite(y)
        if bad.any():
            raise ConfigError(f"{key}: values in {_rows(bad)} are not finite numbers")
        return None, y
    if y_raw.dtype.kind == "f" and not np.all(np.mod(y_raw, 1) == 0):
        raise ConfigError(
            f"{key}: the target has non-integer values such as "
            f"{y_raw[np.mod(y_raw, 1) != 0][:3].tolist()}; for a continuous target use "
            "task: regression"
        )
    try:
        classes, y = np.unique(y_raw, return_inverse=True)
    except TypeError as exc:
        raise ConfigError(
            f"{key}: labels of mixed types ({sorted({type(v).__name__ for v in y_raw})}); "
            "make every label the same type"
        ) from exc
    if len(classes) < 2:
        raise ConfigError(
            f"{key}: a classification study needs 2+ classes, found {classes.tolist()}"
        )
    return classes, y


def _check_cv(config: dict, classes, y, groups) -> None:
    n_splits = config["evaluation"]["cv"]
    n = len(y)
    if n_splits > n:
        raise ConfigError(
            f"evaluation.cv: {n_splits} folds need at least {n_splits} rows, found {n}"
        )
    if classes is not None:
        counts = np.bincount(y, minlength=len(classes))
        smallest = int(counts.min())
        if n_splits > smallest:
            raise ConfigError(
                f"evaluation.cv: {n_splits} folds need at least {n_splits} rows of every class; "
                f"class {classes.tolist()[int(np.argmin(counts))]!r} has {smallest}; "
                f"use cv <= {smallest}"
            )
    if groups is not None:
        n_groups = len(pd.unique(groups))
        if n_splits > n_groups:
            raise ConfigError(
                f"evaluation.cv: {n_splits} folds need at least {n_splits} groups, found "
                f"{n_groups}; use cv <= {n_groups}"
            )


def prepare_study(config: dict, *, limits: dict | None = None) -> Bunch:
    """Load the data of a validated config and check the config against it.

    Checks every column the config names (target, groups, each modality's columns), the
    target against the task (numeric and finite for regression; 2+ classes, whole-number
    labels for classification), ``evaluation.cv`` against the rows, the smallest class
    and the groups, the primary metric against the task and the number of classes, and
    the fusion parameters; then makes the splits. Raises ConfigError naming the key.
    ``limits`` (e.g. ``{"max_bootstrap": 200_000}``) go to ``validate_config``.

    Returns
    -------
    Bunch with ``frame``, ``y_raw``, ``y`` (class indices or floats), ``classes`` (or
    None), ``groups`` (or None), ``modalities``, ``fusions`` and ``splits``.
    """
    validate_config(config, **(limits or {}))
    frame, y_raw, groups, modalities, _ = load_study_data(config)
    frame = frame.reset_index(drop=True)
    y_raw = np.asarray(y_raw)
    classes, y = _target(config, y_raw, len(frame))
    if groups is not None and len(groups) != len(frame):
        raise ConfigError(f"data.groups: {len(groups)} groups for {len(frame)} rows")
    _check_cv(config, classes, y, groups)
    primary = config["evaluation"].get("primary_metric")
    if primary is not None and classes is not None:
        allowed = metric_names("classification", len(classes))
        if primary not in allowed:
            raise ConfigError(
                f"evaluation.primary_metric: '{primary}' needs a binary target; this one has "
                f"{len(classes)} classes; use one of {allowed}"
            )
    names = [m[0] for m in modalities]
    for name in names:
        check_name(name, "modalities (from the data source)")
    fusions = _fusion_objects(config)
    classification = classes is not None
    try:
        splits = make_splits(y, groups, config["evaluation"]["cv"], classification, config["seed"])
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"evaluation.cv: {exc}") from exc
    return Bunch(
        frame=frame,
        y_raw=y_raw,
        y=y,
        classes=classes,
        groups=groups,
        modalities=modalities,
        fusions=fusions,
        splits=splits,
    )


# -- splits -----------------------------------------------------------------------------


def make_splits(y, groups, n_splits: int, classification: bool, seed: int):
    """Stratified (classification) and grouped (when groups are given) K-fold splits,
    with a guard that no group appears on both sides of any split."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    X = np.zeros(len(y))
    if groups is not None:
        n_groups = len(np.unique(groups))
        if n_groups < n_splits:
            raise ConfigError(
                f"evaluation.cv: {n_splits} folds need at least {n_splits} groups, found {n_groups}"
            )
        splitter = (
            StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
            if classification
            else GroupKFold(n_splits)
        )
        splits = list(splitter.split(X, y, groups))
        for k, (tr, te) in enumerate(splits):
            shared = set(groups[tr]) & set(groups[te])
            if shared:
                raise StudyError(
                    f"fold {k}: groups {sorted(shared)[:5]} are in both train and test"
                )
        return splits
    splitter = (
        StratifiedKFold(n_splits, shuffle=True, random_state=seed)
        if classification
        else KFold(n_splits, shuffle=True, random_state=seed)
    )
    return list(splitter.split(X, y))


# -- the run ----------------------------------------------------------------------------


def _stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _out_root(out_dir) -> Path:
    """``out_dir`` made (if needed) and resolved; a file in its place is refused."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out '{out}' is a file, not a folder; choose a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out.resolve()


def _run_folder(root: Path, name: str) -> Path:
    """A new, real folder ``<root>/<name>-<stamp>[-k]`` that lies inside ``root``."""
    check_name(name, "name")
    base = f"{name}-{_stamp()}"
    for k in range(1, 1000):
        folder = root / (base if k == 1 else f"{base}-{k}")
        if folder.is_symlink():
            raise FileExistsError(
                f"'{folder}' is a symbolic link (to '{os.readlink(folder)}'), not a run folder; "
                "remove it: run folders are never made through links"
            )
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        real = folder.resolve()
        if folder.is_symlink() or real.parent != root or not real.is_relative_to(root):
            raise FileExistsError(f"run folder '{folder}' resolves to '{real}', outside '{root}'")
        return real
    raise FileExistsError(f"no free run folder name '{base}-k' in '{root}'")


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def _mark_failed(run: Path, exc: BaseException) -> None:
    """``status.json`` -> failed (with the error) and a ``FAILED`` file with the traceback."""
    error = f"{type(exc).__name__}: {exc}".strip()
    when = _dt.datetime.now().isoformat(timespec="seconds")
    try:
        (run / FAILED_FILE).write_text(
            f"This study failed at {when}; its results are incomplete.\n{error}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        )
        _write_json(run / STATUS_FILE, {"status": "failed", "finished": when, "error": error})
    except OSError:  # the disk that failed the run may fail this too; keep the first error
        pass


def connect_scheduler(address: str, timeout: float = SCHEDULER_TIMEOUT):
    """A ``dask.distributed.Client`` for ``address``, or SchedulerError within ``timeout`` s.

    Refused with one line (no traceback): dask.distributed not installed, an address
    Dask cannot parse (``http://...``, no port), nothing answering within ``timeout``
    seconds (default :data:`SCHEDULER_TIMEOUT`), or a server that is not a Dask scheduler.
    """
    import gc

    if not isinstance(address, str) or not address.strip():
        raise SchedulerError(
            f"--scheduler: expected an address such as tcp://host:8786, got {address!r}"
        )
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 600:
        raise SchedulerError(f"--scheduler-timeout: expected seconds in (0, 600], got {timeout!r}")
    try:
        from dask.distributed import Client
    except ImportError as exc:
        raise SchedulerError(
            f"--scheduler {address}: dask.distributed is not installed; install the "
            "'distributed' extra (pip install 'multimodal-toolkit[distributed]') or drop --scheduler"
        ) from exc
    try:
        return Client(address, timeout=timeout)
    except Exception as exc:  # OSError, TimeoutError, ValueError, garbage from a non-Dask server
        detail = " ".join(str(exc).split())[:200]
        message = (
            f"--scheduler {address}: not a reachable Dask scheduler ({type(exc).__name__}: "
            f"{detail}); start one with 'dask scheduler', check the address "
            f"(tcp://host:port), or drop --scheduler"
        )
    # The half-made Client complains from its __del__; collect it quietly.
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook
    raise SchedulerError(message)


def _environment(config: dict, command: str | None) -> dict:
    from toolkit._utils import package_versions

    versions = package_versions(
        (
            "multimodal-toolkit",
            "numpy",
            "pandas",
            "scikit-learn",
            "torch",
            "torchaudio",
            "transformers",
            "monai",
            "shap",
        )
    )
    return {
        "command": command or " ".join(sys.argv),
        "seed": config["seed"],
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.system()} {os.cpu_count()} cores",
        "versions": versions,
    }


def _fusion_objects(config: dict) -> dict:
    from toolkit.fusion import make_fusion

    out = {}
    for entry in config["fusion"]:
        name = entry if isinstance(entry, str) else entry["name"]
        fusion = clone(make_fusion(name))
        params = {} if isinstance(entry, str) else dict(entry.get("params") or {})
        try:
            fusion.set_params(**params)
        except ValueError as exc:
            raise ConfigError(f"fusion[{name}].params: {exc}") from exc
        seed_if_unset(fusion, config["seed"])
        label = name if name not in out else f"{name}_{len(out)}"
        out[label] = fusion
    return out


def _model_output(classification: bool, fusion, emb, prior):
    """Fusion output with rows that have no modality answered by the prior."""
    out = fusion.predict_output(emb)
    empty = ~emb.mask.any(axis=1)
    if empty.any():
        out[empty] = prior if classification else prior[0]
    return out


def run_study(
    config: dict,
    out_dir="runs",
    *,
    command: str | None = None,
    progress: bool = True,
    scheduler: str | None = None,
    scheduler_timeout: float = SCHEDULER_TIMEOUT,
    limits: dict | None = None,
    _fail_after_folds: int | None = None,
) -> Path:
    """Run a validated study config; return the run folder.

    The folder holds ``status.json``, ``config.resolved.yaml``, ``environment.json``,
    ``folds/`` (each finished fold's predictions, written as soon as the fold ends),
    ``metrics.json``, ``metrics.csv``, ``predictions.csv``, ``contributions.csv``, PNG
    figures, ``report.html`` and ``model/`` (the best strategy refitted on all rows).

    Parameters
    ----------
    config : dict
        As :func:`toolkit.study.load_config` returns it.
    out_dir : str or path, default="runs"
        Folder under which the run folder is made (created if needed; ``~`` expanded).
    scheduler : str, optional
        Address of a running Dask scheduler to run the folds on.
    scheduler_timeout : float, default=SCHEDULER_TIMEOUT (5 s)
        Seconds to wait for ``scheduler`` to answer.
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
    import contextlib

    validate_config(config, **(limits or {}))
    root = _out_root(out_dir)
    with contextlib.ExitStack() as stack:
        client = None
        if scheduler is not None:
            client = stack.enter_context(connect_scheduler(scheduler, scheduler_timeout))
        study = prepare_study(config, limits=limits)
        run = _run_folder(root, config["name"])
        _write_json(
            run / STATUS_FILE,
            {"status": "running", "started": _dt.datetime.now().isoformat(timespec="seconds"),
             "pid": os.getpid()},
        )  # fmt: skip
        try:
            _execute(run, config, study, client, command, progress, _fail_after_folds)
        except BaseException as exc:
            _mark_failed(run, exc)
            if isinstance(exc, StudyError):
                exc.run_folder = run
                raise
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit
                raise
            raise StudyError(
                f"{type(exc).__name__}: {' '.join(str(exc).split())} (run folder '{run}' is "
                f"marked failed; its {FAILED_FILE} file holds the traceback)",
                run_folder=run,
            ) from exc
        _write_json(
            run / STATUS_FILE,
            {"status": "complete", "finished": _dt.datetime.now().isoformat(timespec="seconds")},
        )
    return run


def _execute(run, config, study, client, command, progress, _fail_after_folds) -> None:
    """The body of a study run, writing into ``run``."""
    from toolkit.estimators import MultimodalClassifier, MultimodalRegressor

    classification = config["task"] == "classification"
    seed = config["seed"]
    public = {k: v for k, v in config.items() if not k.startswith("_")}
    (run / "config.resolved.yaml").write_text(yaml.safe_dump(public, sort_keys=False))
    (run / "environment.json").write_text(json.dumps(_environment(config, command), indent=2))
    _log(progress, f"run folder {run}")
    frame, y_raw, y, classes = study.frame, study.y_raw, study.y, study.classes
    modalities, fusions, splits = study.modalities, study.fusions, study.splits
    n = len(frame)
    ev = config["evaluation"]
    names = [m[0] for m in modalities]
    _log(
        progress,
        f"{n} rows, {len(names)} modalities {names}, {ev['cv']} folds, strategies {list(fusions)}",
    )
    width = len(classes) if classification else None
    shape = (n, width) if classification else (n,)
    oof = {s: np.full(shape, np.nan) for s in fusions}
    baselines = {f"{m} only": np.full(shape, np.nan) for m in names} if ev["baselines"] else {}
    robust = (
        {(s, m): np.full(shape, np.nan) for s in fusions for m in names} if ev["robustness"] else {}
    )
    explain_on = config["explanation"]["enabled"]
    contributions = {
        s: np.full((n, len(names)) + ((width,) if classification and width > 2 else ()), np.nan)
        for s in fusions
    }
    fold_of = np.full(n, -1)
    folds_dir = run / "folds"
    folds_dir.mkdir()
    Estimator = MultimodalClassifier if classification else MultimodalRegressor

    spec = {
        "frame": frame, "y": y, "modalities": modalities, "fusions": fusions, "names": names,
        "classification": classification, "width": width, "seed": seed,
        "robustness": ev["robustness"], "baselines": ev["baselines"], "explain": explain_on,
        "removal": config["explanation"]["removal"],
    }  # fmt: skip
    import contextlib

    from joblib import Parallel, delayed

    n_jobs = ev.get("n_jobs", 1)
    with contextlib.ExitStack() as inner:
        cache_dir = inner.enter_context(tempfile.TemporaryDirectory(prefix="mmtk-cache-", dir=run))
        if client is not None:
            # Folds run on an existing Dask cluster through joblib's dask backend.
            import joblib

            inner.enter_context(joblib.parallel_config(backend="dask"))
            n_jobs = len(client.scheduler_info()["workers"]) or 1
            _log(progress, f"running folds on the Dask cluster ({n_jobs} workers)")
        jobs = (delayed(_run_fold)(spec, k, tr, te, cache_dir) for k, (tr, te) in enumerate(splits))
        results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs)
        for done, result in enumerate(results):
            if _fail_after_folds is not None and done >= _fail_after_folds:
                raise StudyError(f"injected failure after {done} folds; they are in {folds_dir}")
            k, te = result["fold"], np.asarray(result["test_index"])
            fold_of[te] = k
            for label in fusions:
                oof[label][te] = result["oof"][label]
                contributions[label][te] = result["contributions"].get(label, np.nan)
                for name in names if ev["robustness"] else []:
                    robust[(label, name)][te] = result["robust"][(label, name)]
            for label in baselines:
                baselines[label][te] = result["baselines"][label]
            record = {"fold": k, "test_index": te.tolist()}
            record.update(
                {
                    label: np.asarray(v).tolist()
                    for label, v in {**result["oof"], **result["baselines"]}.items()
                }
            )
            (folds_dir / f"fold_{k}.json").write_text(json.dumps(record))
            _log(progress, f"fold {k + 1}/{len(splits)} done ({done + 1} of {len(splits)})")
    _log(progress, "computing metrics with bootstrap intervals")
    report = _summarize(
        run,
        config,
        classes,
        y,
        oof,
        baselines,
        robust,
        contributions,
        names,
        fold_of,
        classification,
    )
    if config["output"]["save_model"]:
        from toolkit.persistence import save

        best = report["best_strategy"]
        _log(progress, f"refitting {best} fusion on all rows and saving the model")
        model = Estimator(modalities, fusion=clone(fusions[best]), random_state=seed).fit(
            frame, y_raw
        )
        save(model, run / "model")
    if config["output"]["report"]:
        from toolkit.study.report import write_figures, write_report

        examples = (
            _text_examples(frame, modalities, names, contributions[report["best_strategy"]])
            if config["output"]["include_text"]
            else []
        )
        figures = write_figures(
            run, config, classes, y, oof, baselines, robust, contributions, names, report
        )
        write_report(run, config, report, figures, examples)
        _log(progress, f"report: {run / 'report.html'}")


def _text_examples(frame, modalities, names, values, per_modality: int = 5) -> list[dict]:
    """Raw text of the rows whose text modality contributed most (only on request)."""
    from toolkit.encoders.text import TextEncoder

    examples = []
    mags = np.abs(values) if values.ndim == 2 else np.abs(values).sum(axis=2)
    for name, enc, col in modalities:
        if not isinstance(enc, TextEncoder) or isinstance(col, list | tuple):
            continue
        j = names.index(name)
        for row in np.argsort(-np.nan_to_num(mags[:, j]))[:per_modality]:
            examples.append(
                {
                    "row": int(row),
                    "modality": name,
                    "text": str(frame[col].iloc[row]),
                    "contribution": float(values[row, j] if values.ndim == 2 else mags[row, j]),
                }
            )
    return examples


def _run_fold(spec: dict, k: int, tr, te, cache_dir) -> dict:
    """Encode one fold once, fit every strategy and baseline on it, predict its test rows
    (also with each modality removed) and explain them. Runs in a joblib worker."""
    from toolkit.cache import EmbeddingCache
    from toolkit.estimators import MultimodalClassifier, MultimodalRegressor
    from toolkit.explain import ModalityExplainer
    from toolkit.fusion import LateFusion

    classification, width, seed, names = (
        spec["classification"],
        spec["width"],
        spec["seed"],
        spec["names"],
    )
    frame, y = spec["frame"], spec["y"]
    Estimator = MultimodalClassifier if classification else MultimodalRegressor
    holder = Estimator(spec["modalities"], memory=EmbeddingCache(cache_dir), random_state=seed)
    df_tr, df_te = frame.iloc[tr], frame.iloc[te]
    holder._frame(df_tr, reset=True)
    emb_tr = holder._encode(df_tr, fit=True)
    emb_te = holder._encode(df_te, fit=False)
    holder.modality_names_ = list(emb_tr.names)
    if classification:
        holder.classes_ = np.arange(width)
    out = {
        "fold": k,
        "test_index": np.asarray(te),
        "oof": {},
        "robust": {},
        "contributions": {},
        "baselines": {},
    }
    for label, proto in spec["fusions"].items():
        fusion = clone(proto).fit(emb_tr, y[tr], n_classes=width)
        prior = fusion.prior_
        out["oof"][label] = _model_output(classification, fusion, emb_te, prior)
        for m, name in enumerate(names if spec["robustness"] else []):
            mask = emb_te.mask.copy()
            mask[:, m] = False
            out["robust"][(label, name)] = _model_output(
                classification, fusion, emb_te.with_mask(mask), prior
            )
        if spec["explain"]:
            holder.fusion_, holder.prior_ = fusion, prior
            background = None
            if spec["removal"] == "background":  # up to 100 training rows of this fold
                pick = np.random.RandomState(seed).permutation(emb_tr.n_samples)[:100]
                background = emb_tr[np.sort(pick)]
            out["contributions"][label] = ModalityExplainer(
                holder, removal=spec["removal"], background=background
            )(emb_te).values
    for name in names if spec["baselines"] else []:
        single_tr, single_te = emb_tr.select([name]), emb_te.select([name])
        keep = single_tr.mask[:, 0]
        base = LateFusion(random_state=seed).fit(single_tr[keep], y[tr][keep], n_classes=width)
        out["baselines"][f"{name} only"] = _model_output(
            classification, base, single_te, base.prior_
        )
    return out


def _metric_fn(classification: bool, metric: str, classes, threshold: float):
    from toolkit.study.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS

    if classification:
        fn = CLASSIFICATION_METRICS[metric]
        return lambda yt, p: fn(yt, p, threshold)
    return REGRESSION_METRICS[metric]


def _summarize(
    run, config, classes, y, oof, baselines, robust, contributions, names, fold_of, classification
):
    ev = config["evaluation"]
    rng = np.random.RandomState(config["seed"])
    thr = ev["threshold"]

    def all_metrics(pred):
        return (
            classification_metrics(y, pred, classes, thr)
            if classification
            else regression_metrics(y, pred)
        )

    primary = ev.get("primary_metric") or (
        ("auroc" if len(classes) == 2 else "accuracy") if classification else "mae"
    )
    models = {**oof, **baselines}
    results, rows = {}, []
    for label, pred in models.items():
        values = all_metrics(pred)
        if primary not in values:
            raise ConfigError(
                f"evaluation.primary_metric: '{primary}' is not one of {sorted(values)}"
            )
        entry = {}
        for metric, value in values.items():
            low, high = bootstrap_interval(
                _metric_fn(classification, metric, classes, thr), ev["bootstrap"], rng, y, pred
            )
            entry[metric] = {"value": value, "low": low, "high": high}
            kind = "fusion" if label in oof else "baseline"
            rows.append(
                {
                    "model": label,
                    "kind": kind,
                    "removed": "",
                    "metric": metric,
                    "value": value,
                    "low": low,
                    "high": high,
                }
            )
        results[label] = entry
    sign = -1 if primary in LOWER_IS_BETTER else 1
    best = max(oof, key=lambda s: sign * results[s][primary]["value"])
    best_baseline = (
        max(baselines, key=lambda s: sign * results[s][primary]["value"]) if baselines else None
    )
    comparisons = {}
    if best_baseline:
        fn = _metric_fn(classification, primary, classes, thr)
        for label in oof:
            comparisons[label] = {
                "against": best_baseline,
                "metric": primary,
                **paired_difference(
                    fn, ev["bootstrap"], rng, y, oof[label], baselines[best_baseline]
                ),
            }
    robustness = {}
    for (label, removed), pred in robust.items():
        values = all_metrics(pred)
        robustness.setdefault(label, {})[removed] = values
        for metric, value in values.items():
            rows.append(
                {
                    "model": label,
                    "kind": "robustness",
                    "removed": removed,
                    "metric": metric,
                    "value": value,
                    "low": np.nan,
                    "high": np.nan,
                }
            )
    shares = {}
    for label, values in contributions.items():
        if np.isnan(values).all():
            continue
        mags = np.abs(values) if values.ndim == 2 else np.abs(values).sum(axis=2)
        mean_abs = mags.mean(axis=0)
        shares[label] = {n: float(v) for n, v in zip(names, mean_abs, strict=True)}
    summary = {
        "task": config["task"],
        "n_samples": int(len(y)),
        "folds": ev["cv"],
        "grouped": config["data"].get("groups") is not None or None,
        "primary_metric": primary,
        "best_strategy": best,
        "best_single_modality": best_baseline,
        "strategies": {k: results[k] for k in oof},
        "baselines": {k: results[k] for k in baselines},
        "comparisons": comparisons,
        "robustness": robustness,
        "mean_abs_contribution": shares,
        "contribution_ranking": sorted(shares.get(best, {}), key=lambda n: -shares[best][n]),
    }
    (run / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    pd.DataFrame(rows).to_csv(run / "metrics.csv", index=False)
    pred_cols = {
        "row": np.arange(len(y)),
        "fold": fold_of,
        "y_true": classes[y] if classification else y,
    }
    for label, pred in models.items():
        if classification and pred.shape[1] == 2:
            pred_cols[f"{label}_proba"] = pred[:, 1]
        elif classification:
            pred_cols[f"{label}_pred"] = classes[np.argmax(pred, axis=1)]
        else:
            pred_cols[f"{label}_pred"] = pred
    pd.DataFrame(pred_cols).to_csv(run / "predictions.csv", index=False)
    values = contributions[best]
    if not np.isnan(values).all():
        if values.ndim == 3:
            chosen = np.argmax(oof[best], axis=1)
            values = values[np.arange(len(y)), :, chosen]
        total = np.abs(values).sum(axis=1, keepdims=True)
        share = np.divide(np.abs(values), total, out=np.zeros_like(values), where=total > 0)
        contrib = pd.DataFrame(
            {
                "row": np.repeat(np.arange(len(y)), len(names)),
                "fold": np.repeat(fold_of, len(names)),
                "strategy": best,
                "modality": np.tile(names, len(y)),
                "contribution": values.ravel(),
                "share": share.ravel(),
            }
        )
        contrib.to_csv(run / "contributions.csv", index=False)
    return summary
