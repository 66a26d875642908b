"""A study's data: load the source a config names, check the config against the rows
(columns, target, classes, groups, ``cv``, metric, fusion parameters) and make the splits.

Everything here runs before a run folder exists, so a config error leaves nothing behind;
``mmtk validate`` runs the same checks through :func:`prepare_study`.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.utils import Bunch

from toolkit.study.config import (
    ConfigError,
    StudyConfig,
    check_name,
    resolve_encoder_paths,
    resolve_input_paths,
    validate_config,
)
from toolkit.study.metrics import METRICS, metric_names, mosi_target_problem
from toolkit.study.splits import make_splits
from toolkit.utils import seed_if_unset


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


def _source_params(config: StudyConfig, info) -> dict:
    """``data.params`` as the source is called with them.

    Generators get the config's seed unless the params set one; a manifest with
    ``id_column`` gets the config's target (ids are checked against the labels); a loader of
    real data without ``data_dir`` reads ``$TOOLKIT_DATA_DIR`` (``toolkit.datasets``' data
    home), and its absence is reported here naming the key.
    """
    from toolkit.datasets.loaders import data_home

    data, source = config.data, config.data.source
    params = resolve_input_paths(config)
    if info.kind == "synthetic":
        params.setdefault("random_state", config.seed)
    elif source == "load_manifest":
        if data.target and params.get("id_column"):
            params.setdefault("target", data.target)
    elif info.reads_data_dir and "data_dir" not in params:
        try:
            data_home(None)
        except FileNotFoundError:
            raise ConfigError(
                f"data.params.data_dir: {source} needs a data folder; set it (--set "
                "data.params.data_dir=<folder>) or TOOLKIT_DATA_DIR. Where its data comes from: "
                f"{info.card_meta.get('provenance', 'see its data card')} (`mmtk datasets "
                f"{source}` gives the licence and citation)"
            ) from None
    if "informative" in params and isinstance(params["informative"], list):
        params["informative"] = tuple(params["informative"])
    return params


def _call_source(config: StudyConfig) -> Bunch:
    from toolkit.datasets import DATASETS

    source = config.data.source
    info = DATASETS[source]
    params = _source_params(config, info)
    try:
        bunch = info.function(**params)
    except (TypeError, ValueError, OSError, pickle.UnpicklingError) as exc:
        message = " ".join(str(exc).split())
        raise ConfigError(f"data.params: {source} failed: {message}") from exc
    frame = bunch.frame
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        raise ConfigError(f"data: {source} returned no rows; check data.params")
    return bunch


def _target_and_groups(config: StudyConfig, bunch: Bunch):
    data, frame = config.data, bunch.frame
    if data.target:
        y = _column(frame, "data.target", data.target)
    elif getattr(bunch, "target", None) is not None:
        y = np.asarray(bunch.target)
    else:
        raise ConfigError("data.target: this source has no default target; name a column")
    groups = None
    if data.groups:
        groups = _column(frame, "data.groups", data.groups)
    elif getattr(bunch, "groups", None) is not None:
        groups = np.asarray(bunch.groups)
    return y, groups


def _modalities(config: StudyConfig, bunch: Bunch) -> list:
    """(name, encoder, columns) triples: the config's, else the source's defaults."""
    from toolkit.encoders import ENCODERS

    frame = bunch.frame
    if not config.modalities:
        if not hasattr(bunch, "modalities"):
            raise ConfigError("modalities: this data source has no default modalities; list them")
        return bunch.modalities
    modalities = []
    for i, mod in enumerate(config.modalities):
        cols = mod.columns
        wanted = cols if isinstance(cols, list) else [cols]
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise ConfigError(
                f"modalities[{i}].columns: column(s) {missing} are not in the data "
                f"(columns: {list(frame.columns)[:12]})"
            )
        try:
            enc = ENCODERS[mod.encoder](**resolve_encoder_paths(config, mod.params))
            # settings that need no data are checked now (validate refuses them, no folder)
            check = getattr(enc, "check_settings", None)
            if check is not None:
                check()
            _check_sizes(enc)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"modalities[{i}].params: {exc}") from exc
        if getattr(enc, "parts_are_features", False):  # a table's cells are cheap to check now
            try:
                clone(enc).fit(frame[wanted])
            except (TypeError, ValueError) as exc:
                message = " ".join(str(exc).split())
                raise ConfigError(f"modalities[{i}].columns: {message}") from exc
        modalities.append((mod.name, enc, cols))
    return modalities


def _check_sizes(enc) -> None:
    """An encoder's sizes in a config are held to the limits a loaded model file is
    (:data:`toolkit.persistence.limits.LOAD_LIMITS`): a config cannot raise them."""
    from toolkit.persistence.limits import limit_exceeded, resolve_limits

    found = limit_exceeded(enc, resolve_limits(None))
    if found is not None:
        attr, shown, name, limit, unit, _ = found
        raise ValueError(
            f"{attr}={shown} is above the limit {name}={limit:,} {unit}; a config cannot "
            f"raise it (from Python: toolkit.persistence.limits.LOAD_LIMITS['{name}'] = ...)"
        )


def load_study_data(config: StudyConfig):
    """Return (frame, y, groups, modalities, bunch) for a validated config.

    Relative input paths in ``data.params`` resolve against the config's folder; for
    ``load_manifest`` with ``id_column``, the config's ``data.target`` is passed as the
    manifest's target, so duplicate ids with conflicting labels are refused. A loader of
    real data reads ``data.params.data_dir``, else ``$TOOLKIT_DATA_DIR``. Errors of the data
    source (a missing or unreadable file, a bad parameter) are raised as ConfigError
    naming ``data.params``.
    """
    bunch = _call_source(config)
    y, groups = _target_and_groups(config, bunch)
    return bunch.frame, y, groups, _modalities(config, bunch), bunch


def _regression_target(key: str, y_raw: np.ndarray) -> np.ndarray:
    numeric = y_raw.dtype.kind in "iuf" or all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in y_raw
    )
    if y_raw.dtype == bool or not numeric:
        raise ConfigError(
            f"{key}: a regression target must be numeric, found values such as "
            f"{y_raw[:3].tolist()}; use task: classification for labels"
        )
    y = np.asarray(y_raw, dtype=float)
    bad = ~np.isfinite(y)
    if bad.any():
        raise ConfigError(f"{key}: values in {_rows(bad)} are not finite numbers")
    return y


def _class_target(key: str, y_raw: np.ndarray):
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


def encode_target(config: StudyConfig, y_raw, n_rows: int):
    """(classes, class indices) for classification, (None, float y) for regression."""
    target = config.data.target
    key = f"data.target ('{target}')" if target else "data.target"
    if len(y_raw) != n_rows:
        raise ConfigError(f"{key}: {len(y_raw)} targets for {n_rows} rows")
    if config.task == "regression":
        return None, _regression_target(key, y_raw)
    return _class_target(key, y_raw)


def _check_cv(config: StudyConfig, classes, y, groups) -> None:
    """``evaluation.cv`` folds fit the groups (checked first: with groups they bind before
    the rows do), the rows and the smallest class. Groups too few for the folds that each
    hold a large share of the rows (``sex``, a study arm) are a category of the rows, not
    what repeated rows share: the message says to group by the patient or site instead."""
    n_splits, n = config.evaluation.cv, len(y)
    if groups is not None:
        labels, counts = np.unique(np.asarray(groups).astype(str), return_counts=True)
        n_groups = len(labels)
        key = f"data.groups ('{config.data.groups}')" if config.data.groups else "data.groups"
        if n_splits > n_groups and counts.min() >= max(20, 0.1 * n):
            sizes = ", ".join(f"{g}: {c} rows" for g, c in zip(labels[:5], counts[:5], strict=True))
            raise ConfigError(
                f"{key}: grouping by this column leaves {n_groups} groups ({sizes}"
                f"{', ...' if n_groups > 5 else ''}) of {n} rows, too few for {n_splits} grouped "
                "folds, and groups this large look like a category of the rows (a label-like "
                "column) rather than what repeated rows share. Group by the patient, site or "
                "speaker the rows come from instead; only if each of these "
                f"{n_groups} groups is a unit to hold out, set evaluation.cv: {n_groups}"
            )
        if n_splits > n_groups:
            raise ConfigError(
                f"evaluation.cv: {n_splits} folds need at least {n_splits} groups, found "
                f"{n_groups}; use cv <= {n_groups} ({key}: {n_groups} groups over {n} rows)"
            )
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


def _check_mosi_metrics(config: StudyConfig, y) -> None:
    """MOSI's acc2 / f1 / acc7 only with ``evaluation.mosi_metrics: true`` on a [-3, 3] target."""
    ev = config.evaluation
    primary = ev.primary_metric
    if primary is not None and METRICS[primary].mosi and not ev.mosi_metrics:
        raise ConfigError(
            f"evaluation.primary_metric: '{primary}' is a CMU-MOSI metric; set "
            "evaluation.mosi_metrics: true (for a [-3, 3] sentiment score) or use mae, rmse, "
            "r2 or pearson_r"
        )
    if ev.mosi_metrics and config.task == "regression":
        problem = mosi_target_problem(y)
        if problem:
            raise ConfigError(
                f"evaluation.mosi_metrics: MOSI's acc2 / f1 / acc7 are defined on a [-3, 3] "
                f"sentiment score, but {problem}; set evaluation.mosi_metrics: false (MAE, RMSE, "
                "R² and Pearson r are reported for every regression)"
            )


def _check_primary_metric(config: StudyConfig, classes) -> None:
    primary = config.evaluation.primary_metric
    if primary is not None and classes is not None:
        allowed = metric_names("classification", len(classes), ranking=True)
        if primary not in allowed:
            raise ConfigError(
                f"evaluation.primary_metric: '{primary}' needs a binary target; this one has "
                f"{len(classes)} classes; use one of {allowed}"
            )


def fusion_objects(config: StudyConfig) -> dict:
    """{label: unfitted fusion strategy} for ``config.fusion``, each seeded with the
    config's seed unless its params set one; a strategy listed twice gets ``name_<i>``."""
    from toolkit.fusion import make_fusion

    out = {}
    for entry in config.fusion:
        name, params = entry.name, dict(entry.params)
        fusion = clone(make_fusion(name))
        try:
            fusion.set_params(**params)
        except ValueError as exc:
            raise ConfigError(f"fusion[{name}].params: {exc}") from exc
        seed_if_unset(fusion, config.seed)
        label = name if name not in out else f"{name}_{len(out)}"
        out[label] = fusion
    return out


def _modality_key(config: StudyConfig, i: int, name: str) -> str:
    return f"modalities[{i}].columns" if config.modalities else f"modalities ('{name}')"


def _check_target_features(config: StudyConfig, frame, y, classes, modalities) -> None:
    """No modality reads the target column, or a column holding the target in every row
    (a model given its own label scores perfectly, and the score means nothing)."""
    from toolkit.estimators.checks import is_target_copy

    target = config.data.target
    for i, (name, _, cols) in enumerate(modalities):
        for col in cols if isinstance(cols, list | tuple) else [cols]:
            key = _modality_key(config, i, name)
            if target and col == target:
                raise ConfigError(
                    f"{key}: column '{col}' is the target (data.target); a model given its own "
                    "label scores perfectly (AUROC 1.000) and the score means nothing. Remove "
                    "it from the modality's columns"
                )
            if is_target_copy(frame[col], y, classes is not None):
                raise ConfigError(
                    f"{key}: column '{col}' holds the target{f' {target!r}' if target else ''} "
                    "in every row (the same values, or the same classes under other names); a "
                    "model given its own label scores perfectly and the score means nothing. "
                    "Remove it from the modality's columns"
                )


def _check_groups_and_availability(config: StudyConfig, frame, y, classes, *, groups, modalities):
    """Classification: no class inside one group (e.g. data.groups = the target), and no
    modality present in the rows of one class only (its availability gives the label)."""
    from toolkit.estimators.checks import class_in_one_group, modality_presence

    if classes is None:
        return
    found = class_in_one_group(groups, y)
    if found is not None:
        c, group, n, renamed = found
        key = f"data.groups ('{config.data.groups}')" if config.data.groups else "data.groups"
        raise ConfigError(
            f"{key}: all {n} rows of class {classes.tolist()[c]!r} are in one group "
            f"({group!r}){'; the groups are the target under other names' if renamed else ''}: "
            "grouped folds test that group on a model trained without the class. Group by "
            "what rows share (patient, site, speaker), not by the label, or remove data.groups"
        )
    for i, (name, _, cols) in enumerate(modalities):
        present = modality_presence(frame, cols)
        found = np.unique(y[present])
        if len(found) == 1 and not present.all():
            raise ConfigError(
                f"{_modality_key(config, i, name)}: modality '{name}' is present only in rows "
                f"of class {classes.tolist()[found[0]]!r} ({int(present.sum())} rows; absent from "
                f"all {int(np.sum(y != found[0]))} rows of the other classes): whether a row has "
                "it predicts the label by itself, and its single-modality model cannot be "
                "fitted. Check how the data were collected; remove the modality or add rows of "
                "the other classes that have it"
            )


def _check_conformal(config: StudyConfig, splits) -> None:
    """``evaluation.conformal.calibration`` of the smallest fold's training rows holds out
    enough calibration rows for ``confidence`` and leaves rows to fit on."""
    from toolkit.conformal import check_split_sizes

    conformal = config.evaluation.conformal
    if not conformal.enabled:
        return
    n_train = min(len(train) for train, _ in splits)
    try:
        check_split_sizes(n_train, conformal.calibration, conformal.confidence, "calibration")
    except ValueError as exc:
        raise ConfigError(
            f"evaluation.conformal.calibration: {exc} (of the smallest fold's training rows)"
        ) from None


def _check_fold_classes(config: StudyConfig, splits, y, classes, groups) -> None:
    """Classification: every fold's training rows hold every class, in two or more groups
    when there are groups (the models' inner CV keeps groups apart, so a class in one
    training group cannot be fitted and tested). Raises ConfigError naming the fold."""
    from toolkit.estimators.checks import class_in_one_group

    if classes is None:
        return
    for k, (train, _) in enumerate(splits):
        missing = np.setdiff1d(np.arange(len(classes)), y[train])
        if len(missing):
            raise ConfigError(
                f"evaluation.cv: fold {k}'s training rows have no row of class "
                f"{classes.tolist()[missing[0]]!r}; use fewer folds or add rows of that class"
            )
        found = None if groups is None else class_in_one_group(np.asarray(groups)[train], y[train])
        if found is None:
            continue
        c, group, n, _ = found
        n_groups = len(pd.unique(np.asarray(groups)[y == c]))
        raise ConfigError(  # fmt: skip
            f"evaluation.cv: fold {k}'s training rows have all {n} rows of class "
            f"{classes.tolist()[c]!r} in one group ({group!r}): the class occurs in only "
            f"{n_groups} groups, too few for grouped folds (the models' inner CV keeps groups "
            "apart too, so it cannot fit and test that class). Add groups (patients, speakers) "
            f"with that class{', use fewer folds' if n_groups > 2 else ''}, or remove "
            "data.groups (the estimate is then not across groups)"
        )


def _splits(config: StudyConfig, y, groups, classification: bool):
    try:
        return make_splits(y, groups, config.evaluation.cv, classification, config.seed)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"evaluation.cv: {exc}") from exc


def prepare_study(config, *, limits: dict | None = None) -> Bunch:
    """Load the data of a validated config and check the config against it.

    Checks every column the config names (target, groups, each modality's columns), the
    target against the task (numeric and finite for regression; 2+ classes, whole-number
    labels for classification), ``evaluation.cv`` against the rows, the smallest class
    and the groups, the primary metric against the task and the number of classes, and
    the fusion parameters; then makes the splits. Raises ConfigError naming the key.
    ``limits`` (e.g. ``{"max_bootstrap": 200_000}``) go to ``validate_config``.
    ``config`` is a :class:`~toolkit.study.config.StudyConfig` (a plain mapping is
    checked and converted first).

    Returns
    -------
    Bunch with ``frame``, ``y_raw``, ``y`` (class indices or floats), ``classes`` (or
    None), ``groups`` (or None), ``modalities``, ``fusions`` and ``splits``.
    """
    config = validate_config(config, **(limits or {}))
    frame, y_raw, groups, modalities, _ = load_study_data(config)
    frame = frame.reset_index(drop=True)
    y_raw = np.asarray(y_raw)
    classes, y = encode_target(config, y_raw, len(frame))
    if groups is not None and len(groups) != len(frame):
        raise ConfigError(f"data.groups: {len(groups)} groups for {len(frame)} rows")
    if config.quick:  # a source that cannot be asked for fewer rows is cut (toolkit.study.quick)
        from toolkit.study.quick import quick_rows

        keep = quick_rows(y, classification=classes is not None, seed=config.seed)
        frame, y_raw, y = frame.iloc[keep].reset_index(drop=True), y_raw[keep], y[keep]
        groups = None if groups is None else np.asarray(groups)[keep]
    _check_target_features(config, frame, y, classes, modalities)
    _check_groups_and_availability(config, frame, y, classes, groups=groups, modalities=modalities)
    _check_cv(config, classes, y, groups)
    _check_primary_metric(config, classes)
    _check_mosi_metrics(config, y)
    for name, _, _ in modalities:
        check_name(name, "modalities (from the data source)")
    fusions = fusion_objects(config)
    splits = _splits(config, y, groups, classes is not None)
    _check_fold_classes(config, splits, y, classes, groups)
    _check_conformal(config, splits)
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
