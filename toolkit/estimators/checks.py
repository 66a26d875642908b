"""Checks of what the estimators are given: modality column specs, class labels, regression
targets, and rows with no modality.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable

import numpy as np
import pandas as pd
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

from toolkit._utils import describe_kinds, is_missing, rows_by_kind, value_kind
from toolkit.embeddings import Embeddings
from toolkit.exceptions import MissingModalityError


def _column_items(df: pd.DataFrame, columns):
    """One modality's input: a Series for a single column, a DataFrame for several."""
    if isinstance(columns, (list, tuple)):
        return df[list(columns)]
    return df[columns]


def _check_columns(name: str, cols) -> None:
    """A modality's columns: one column label, or a non-empty list/tuple of distinct ones."""
    if isinstance(cols, list | tuple):
        if not cols:
            raise ValueError(
                f"modality '{name}' selects no columns (an empty list); name at least one"
            )
        for c in cols:
            if not isinstance(c, Hashable) or c is None:
                raise TypeError(
                    f"modality '{name}': column {c!r} is not a column name; give names as "
                    "strings (or the DataFrame's column labels)"
                )
        seen = set()
        dupes = [c for c in cols if c in seen or seen.add(c)]
        if dupes:
            raise ValueError(
                f"modality '{name}' lists column(s) {dupes} more than once; list each once"
            )
        return
    if cols is None or not isinstance(cols, Hashable):
        raise TypeError(
            f"modality '{name}': columns must be a column name or a list of names, got "
            f"{type(cols).__name__}"
            + ("; use a list (a set has no order)" if isinstance(cols, set | frozenset) else "")
        )


def _label_positions(y, bad: np.ndarray) -> list:
    """Row labels (a pandas y) or positions of the first flagged entries of ``y``."""
    labels = y.index if isinstance(y, pd.Series) else np.arange(len(bad))
    return np.asarray(labels[np.asarray(bad, dtype=bool)][:10]).tolist()


def _check_y_shape(y):
    """``y`` as a 1-D array (a single column is raveled, as scikit-learn does)."""
    if y is None:
        raise ValueError("requires y to be passed, but the target y is None")
    wrong = TypeError(
        f"y must be an array-like with one value per row of X, got {type(y).__name__}"
    )
    if isinstance(y, str | bytes | dict | set):
        raise wrong
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 1:
            raise ValueError(
                f"y must be one column (one value per row of X), got a DataFrame with "
                f"{y.shape[1]} columns {list(y.columns)[:5]}; select the target column"
            )
        y = y.iloc[:, 0]
    if isinstance(y, pd.Series):
        return y
    try:
        arr = np.asarray(y) if not isinstance(y, list | tuple) else _object_array(y)
    except ValueError as exc:
        raise ValueError(f"y is not a rectangular array ({exc})") from None
    if arr.ndim == 0:
        raise wrong
    if arr.ndim == 2 and arr.shape[1] == 1:
        return column_or_1d(arr, warn=True)
    if arr.ndim != 1:
        raise ValueError(
            f"y must be 1-D (one value per row of X), got an array of shape {arr.shape}"
        )
    return arr


def _object_array(values) -> np.ndarray:
    """A list of labels as an array without numpy's silent conversions (1 and '1' -> '1')."""
    if any(isinstance(v, list | tuple | np.ndarray) for v in values):
        return np.asarray(values)
    if len({value_kind(v) for v in values} - {None}) <= 1:
        return np.asarray(values)
    arr = np.empty(len(values), dtype=object)
    arr[:] = list(values)
    return arr


def _check_class_labels(y) -> np.ndarray:
    """Class labels as a 1-D array: one kind of label, none missing or infinite."""
    y = _check_y_shape(y)
    values = y.to_numpy() if isinstance(y, pd.Series) else y
    n_missing = int(pd.isna(pd.Series(values)).sum())
    if n_missing:
        raise ValueError(f"y holds {n_missing} missing label(s); drop those rows or label them")
    kinds: dict = {}
    if values.dtype == object:
        labels = y.index if isinstance(y, pd.Series) else range(len(values))
        kinds = rows_by_kind(values, labels)
        if len(kinds) > 1:
            raise TypeError(
                f"y mixes label types: {describe_kinds(kinds)}. Labels such as 1 and '1' look "
                "alike but are different classes; give every label the same type, e.g. "
                "y.astype(str)"
            )
        odd = set(kinds) - {"str", "number", "bool"}
        if odd:
            raise TypeError(
                f"y holds labels of type {sorted(odd)} (rows {kinds[min(odd)]}); class labels "
                "must be strings, numbers or booleans"
            )
    if values.dtype.kind == "c":
        raise ValueError("y holds complex numbers; class labels must be strings or real numbers")
    numeric = values.dtype.kind == "f" or (values.dtype == object and set(kinds) == {"number"})
    if numeric:
        as_float = values.astype(np.float64)
        bad = np.isinf(as_float)
        if bad.any():
            raise ValueError(
                f"y holds infinite label(s) at rows {_label_positions(y, bad)}; drop or fix them"
            )
        fractional = as_float != np.round(as_float)
        if fractional.any():
            first = _label_positions(y, fractional)
            raise ValueError(
                f"Unknown label type: continuous. y holds non-integer numbers (e.g. "
                f"{as_float[fractional][0].item()!r} at row {first[0]!r}) but a classifier needs "
                "discrete class labels; use MultimodalRegressor for a continuous target, or "
                "bin y"
            )
    check_classification_targets(values)
    return values


def _check_target(y) -> np.ndarray:
    """A regression target as a finite 1-D float64 array."""
    y = _check_y_shape(y)
    values = y.to_numpy() if isinstance(y, pd.Series) else y
    if values.dtype.kind == "c":
        raise ValueError(
            "y holds complex numbers; a regression target must be real (e.g. its magnitude)"
        )
    if values.dtype.kind in "mM" or isinstance(getattr(y, "dtype", None), pd.DatetimeTZDtype):
        raise TypeError(
            f"y holds dates or durations (dtype {getattr(y, 'dtype', values.dtype)}); convert "
            "them to numbers first, e.g. days since a reference date"
        )
    if values.dtype.kind not in "biuf":
        converted = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)
        bad = pd.notna(pd.Series(values)).to_numpy() & np.isnan(converted)
        if bad.any():
            first = values[bad][0]
            first = first.item() if isinstance(first, np.generic) else first
            raise ValueError(
                f"y must be numeric for a regressor, got dtype {values.dtype} with "
                f"non-numeric values at rows {_label_positions(y, bad)} (e.g. {first!r}); "
                "convert the target to numbers"
            )
        values = converted
    values = values.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"y holds {int(bad.sum())} NaN or infinite value(s) at rows "
            f"{_label_positions(y, bad)}; drop or fix those rows"
        )
    return values


def _unique_index(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a unique index: messages name rows by index label, or else by position."""
    return df if df.index.is_unique else df.reset_index(drop=True)


def _refuse_empty_rows(emb: Embeddings, labels=None) -> None:
    """Raise MissingModalityError naming the rows of ``emb`` where every modality is missing
    (by ``labels``, e.g. the DataFrame's index, or by position)."""
    none = ~emb.mask.any(axis=1)
    if none.any():
        rows = (np.arange(len(none)) if labels is None else np.asarray(labels))[none][:10]
        raise MissingModalityError(
            f"{int(none.sum())} row(s) have every modality missing (rows {rows.tolist()}); "
            "there is nothing to predict from. Remove them or provide at least one modality"
        )


def _supervised(encoder) -> bool:
    """Whether an encoder learns from the labels (``encoder.supervised``)."""
    return bool(getattr(encoder, "supervised", False))


def align_to_rows(X, values, what: str = "y"):
    """``values`` (a pandas ``y`` or ``groups``) in the order of ``X``'s rows.

    A Series whose index holds the same labels as ``X``'s index in another order is
    reordered to ``X``'s (pandas pairs by label; a positional pairing would give rows the
    wrong labels). One whose labels differ from ``X``'s is refused. Arrays, lists and
    non-DataFrame ``X`` are paired by position, as scikit-learn does.
    """
    if not isinstance(X, pd.DataFrame) or not isinstance(values, pd.Series | pd.DataFrame):
        return values
    if len(values) != len(X) or values.index.equals(X.index):
        return values
    if values.index.is_unique and X.index.is_unique and values.index.isin(X.index).all():
        return values.reindex(X.index)
    foreign = values.index[~values.index.isin(X.index)][:5].tolist()
    detail = (
        f"{what} has index label(s) {foreign} that X's index lacks"
        if foreign
        else f"{what}'s or X's index repeats labels, so rows cannot be paired by label"
    )
    raise ValueError(
        f"{what}'s index does not match X's ({detail}; X's index starts "
        f"{X.index[:3].tolist()}, {what}'s {values.index[:3].tolist()}). Used by position, "
        f"rows would get another row's {what}. Give {what} X's index ({what}.reindex(X.index) "
        f"to pair by label), or pass {what}.to_numpy() to pair by position"
    )


def _used_columns(frame: pd.DataFrame, spec) -> list[tuple[str, object]]:
    """(modality name, column) of every column the modalities read."""
    out = []
    for name, _, cols in spec:
        wanted = frame.columns if cols is None else cols
        wanted = list(wanted) if isinstance(wanted, list | tuple | pd.Index) else [wanted]
        out.extend((name, c) for c in wanted)
    return out


def is_target_copy(column: pd.Series, y: np.ndarray, classification: bool) -> bool:
    """Whether ``column`` holds ``y`` in every row (a class column: under any one-to-one
    relabeling, e.g. codes for names)."""
    if column.isna().any():
        return False
    try:
        if not classification:
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            return bool(np.array_equal(values, np.asarray(y, dtype=np.float64)))
        codes = pd.factorize(column)[0]
    except (TypeError, ValueError):  # cells that are arrays or files: not the target
        return False
    y_codes = pd.factorize(pd.Series(y))[0]
    if codes.max() != y_codes.max():
        return False
    pairs = codes.astype(np.int64) * (int(y_codes.max()) + 1) + y_codes
    return len(np.unique(pairs)) == int(codes.max()) + 1


def warn_target_columns(frame: pd.DataFrame, spec, y, classification: bool) -> None:
    """LeakageWarning for each modality column that holds the target itself."""
    from toolkit.exceptions import LeakageWarning

    y = np.asarray(y)
    for name, col in _used_columns(frame, spec):
        if col in frame.columns and is_target_copy(frame[col], y, classification):
            warnings.warn(
                f"column {col!r} of modality '{name}' holds the target y in all "
                f"{len(y)} rows (the same values"
                + (", or a one-to-one relabeling of them)" if classification else ")")
                + ": the model reads the answer from its input, and its scores will not "
                "hold on new rows. Remove the column from the modality's columns",
                LeakageWarning,
                stacklevel=4,
            )


def class_in_one_group(groups, codes):
    """The first class whose rows all lie in one group, when there are 2+ groups, as
    (class code, that group, its rows, whether groups are the labels renamed); or None."""
    if groups is None or len(pd.unique(pd.Series(groups))) < 2:
        return None
    codes = np.asarray(codes)
    g_codes = pd.factorize(pd.Series(groups))[0]
    for c in np.unique(codes):
        rows = codes == c
        if len(np.unique(g_codes[rows])) == 1:
            renamed = is_target_copy(pd.Series(g_codes), codes, True)
            return int(c), _label(np.asarray(groups)[rows][0]), int(rows.sum()), renamed


def check_groups_classes(groups, codes, classes) -> None:
    """Refuse groups under which a class lies in one group (e.g. groups = the target): a
    split that keeps groups apart then tests that class on a model trained without it."""
    found = class_in_one_group(groups, codes)
    if found is None:
        return
    c, group, n, renamed = found
    same = "; groups are the labels under other names" if renamed else ""
    raise ValueError(
        f"groups: all {n} rows of class {_label(classes[c])!r} are in one group ({group!r})"
        f"{same}. A split that keeps groups apart tests that group on a model trained without "
        "the class. Pass the groups the rows share (patient, speaker, site), not the labels, "
        "or fit without groups"
    )


def modality_presence(frame: pd.DataFrame, cols) -> np.ndarray:
    """Whether each row has the modality reading ``cols`` (some cell not missing: not None,
    NaN or blank text), as the encoders decide before reading an item."""
    cols = list(cols) if isinstance(cols, list | tuple) else [cols]
    missing = np.column_stack([frame[c].map(is_missing).to_numpy(dtype=bool) for c in cols])
    return ~missing.all(axis=1)


def check_class_only_modalities(emb: Embeddings, codes, classes) -> None:
    """Refuse a modality present in the rows of one class only: whether a row has it
    alone predicts the label (and no per-modality head can learn from it)."""
    codes = np.asarray(codes)
    if len(np.unique(codes)) < 2:
        return
    for m, name in enumerate(emb.names):
        present = emb.mask[:, m]
        found = np.unique(codes[present])
        if len(found) == 1 and not present.all():
            others = int(np.sum(codes != found[0]))
            raise ValueError(
                f"modality '{name}' is present only in rows of class {_label(classes[found[0]])!r} "
                f"({int(present.sum())} rows; absent from all {others} rows of the other "
                "classes): whether a row has it alone predicts the label, and its head cannot "
                "learn to tell the classes apart. Check how the data were collected; remove the "
                "modality, or add rows of the other classes that have it"
            )


def _label(value):
    """A label as shown in a message (a numpy scalar as its Python value)."""
    return value.item() if isinstance(value, np.generic) else value
