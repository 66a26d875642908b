"""Small shared helpers: missing-cell detection, column handling, devices, progress."""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import numbers
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state


def is_missing(item: Any) -> bool:
    """Whether a raw cell means "this modality is absent for this row".

    ``None``, float NaN, ``pandas.NA``/``NaT`` and empty or blank strings are missing.
    Arrays, paths and non-empty strings are not (an unreadable file is decided by the
    reader, not here).
    """
    if item is None:
        return True
    if isinstance(item, str):
        return item.strip() == ""
    if isinstance(item, numbers.Number) and not isinstance(item, bool):
        # ``item != item`` is NaN's test that also works for ints too large for a float.
        return bool(item != item) if isinstance(item, numbers.Real) else False
    return item is pd.NA or item is pd.NaT


def as_item_list(X: Any, *, what: str = "column") -> tuple[list, str | None]:
    """Turn one column of raw items into a list, plus the column's name when known.

    Accepts a pandas Series, a one-column DataFrame, a list/tuple, or a 1-D object
    array. A 2-D array with one column is accepted too (as ``ColumnTransformer`` passes).
    """
    name = None
    if isinstance(X, pd.DataFrame):
        if X.shape[1] != 1:
            raise ValueError(
                f"expected a single {what}, got a DataFrame with {X.shape[1]} columns "
                f"{list(X.columns)[:5]}; select one column"
            )
        name = str(X.columns[0])
        return list(X.iloc[:, 0]), name
    if isinstance(X, pd.Series):
        return list(X), (None if X.name is None else str(X.name))
    if isinstance(X, np.ndarray):
        if X.dtype != object and X.ndim >= 2:
            raise ValueError(
                f"expected a single {what} of items (strings, paths or arrays), got a numeric "
                f"array of shape {X.shape}; wrap per-row arrays in a list or pandas Series"
            )
        if X.ndim == 2 and X.shape[1] == 1:
            return list(X[:, 0]), None
        if X.ndim != 1:
            raise ValueError(f"expected a 1-D {what} of items, got an array of shape {X.shape}")
        return list(X), None
    if isinstance(X, (list, tuple)):
        return list(X), None
    if isinstance(X, str):
        raise TypeError(
            f"expected a {what} of items, got a single string {X[:40]!r}; wrap it in a list"
        )
    raise TypeError(
        f"expected a {what} as a pandas Series, list or 1-D array, got {type(X).__name__}"
    )


def describe_item(item: Any, limit: int = 80) -> str:
    """A short human-readable description of a raw item for error messages."""
    if isinstance(item, np.ndarray):
        return f"array of shape {item.shape} and dtype {item.dtype}"
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], np.ndarray):
        return f"(waveform of shape {item[0].shape}, {item[1]})"
    text = repr(str(item)) if not isinstance(item, str) else repr(item)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def resolve_device(device: str | None):
    """``"auto"`` -> CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def batches(indices: Sequence[int], batch_size: int) -> Iterator[Sequence[int]]:
    """Consecutive chunks of ``indices`` of at most ``batch_size``."""
    for start in range(0, len(indices), batch_size):
        yield indices[start : start + batch_size]


def progress(iterable, *, total: int, desc: str, enabled: bool):
    """Wrap ``iterable`` in a bar when enabled (callers decide what is long work): on a
    terminal, or in Jupyter with ipywidgets; nothing elsewhere (see ``toolkit._progress``)."""
    if not enabled:
        return iterable
    from toolkit._progress import progress as bar

    return bar(iterable, total=total, desc=desc, verbose=True)


def check_random_state_seed(random_state) -> int:
    """An integer seed derived from ``random_state`` (for torch generators)."""
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def seed_if_unset(estimator, seed):
    """Set ``random_state=seed`` on an estimator that has one and left it None."""
    params = estimator.get_params(deep=False)
    if "random_state" in params and params["random_state"] is None:
        estimator.set_params(random_state=seed)
    return estimator


def package_versions(names) -> dict:
    """Installed version of each distribution in ``names`` (None when not installed)."""
    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


#: Largest magnitude a float32 can hold (about 3.4e38). Blocks and embeddings are float32, so
#: a user value beyond it would silently become infinite; it is refused where it enters.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def value_kind(value: Any) -> str | None:
    """The kind of a raw cell for type checks: "str", "number", "bool", None (missing) or
    the type's name for anything else (e.g. "complex", "dict")."""
    if is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, str):
        return "str"
    if isinstance(value, numbers.Real):
        return "number"
    return type(value).__name__


def rows_by_kind(values: Sequence, labels: Sequence, limit: int = 5) -> dict[str, list]:
    """``{kind: first row labels}`` of the non-missing ``values`` (see :func:`value_kind`)."""
    out: dict[str, list] = {}
    for value, label in zip(values, labels, strict=True):
        kind = value_kind(value)
        if kind is None:
            continue
        rows = out.setdefault(kind, [])
        if len(rows) < limit:
            rows.append(label.item() if isinstance(label, np.generic) else label)
    return out


def describe_kinds(kinds: dict[str, list]) -> str:
    """``"str (rows [0, 2]) and number (rows [1])"`` for :func:`rows_by_kind` output."""
    parts = [f"{kind} (rows {rows})" for kind, rows in sorted(kinds.items())]
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


def check_column_labels(columns, *, what: str = "X", mixed_types: bool = False) -> None:
    """Refuse column labels that are duplicated, collide once printed, or (unless
    ``mixed_types``) mix str and non-str types, which scikit-learn's feature-name checks
    refuse with a raw error."""
    labels = list(columns)
    seen: dict[str, Any] = {}
    for label in labels:
        text = str(label)
        if text in seen:
            first = seen[text]
            same = first == label and type(first) is type(label)
            detail = (
                f"column {label!r} appears more than once"
                if same
                else f"columns {first!r} and {label!r} have the same name once printed"
            )
            raise ValueError(
                f"{what}: {detail}; give every column a unique name (e.g. rename or drop the "
                "duplicate)"
            )
        seen[text] = label
    strings = [c for c in labels if isinstance(c, str)]
    others = [c for c in labels if not isinstance(c, str)]
    if strings and others and not mixed_types:
        kinds = sorted({type(c).__name__ for c in labels})
        raise TypeError(
            f"{what}: column names mix types {kinds} (e.g. {others[0]!r} and {strings[0]!r}); "
            "make them all strings, e.g. X.columns = X.columns.astype(str)"
        )


def first_non_numeric_cell(X) -> tuple[int, int, Any] | None:
    """(row, column, value) of the first cell of a 2-D array-like that is not a real number
    (a complex number, a string that does not parse, any other object); None if all are."""
    try:
        arr = np.asarray(X, dtype=object)
    except ValueError:
        return None
    if arr.ndim != 2:
        return None
    for j in range(arr.shape[1]):
        for i in range(arr.shape[0]):
            value = arr[i, j]
            if isinstance(value, complex | np.complexfloating):
                return i, j, value
            try:
                float(value)
            except (TypeError, ValueError):
                return i, j, value
    return None


def tensor_table(state_dict) -> dict[str, dict]:
    """``{name: {"dtype": safetensors dtype code, "shape": [...]}}`` of a torch state dict
    (meta tensors work: nothing is read)."""
    import torch

    codes = {
        torch.float64: "F64",
        torch.float32: "F32",
        torch.float16: "F16",
        torch.bfloat16: "BF16",
        torch.int64: "I64",
        torch.int32: "I32",
        torch.int16: "I16",
        torch.int8: "I8",
        torch.uint8: "U8",
        torch.bool: "BOOL",
    }
    return {
        k: {"dtype": codes.get(v.dtype, str(v.dtype)), "shape": list(v.shape)}
        for k, v in state_dict.items()
    }


def raise_non_numeric(exc: Exception, X, describe) -> None:
    """Re-raise scikit-learn's numeric-conversion error ``exc`` naming the first cell of ``X``
    that is not a number: ``describe(row, column, value, first line of exc)`` gives the
    message. ``exc`` itself is re-raised when every cell is numeric."""
    where = first_non_numeric_cell(X)
    if where is None:
        raise exc
    i, j, value = where
    kind = TypeError if isinstance(exc, TypeError) else ValueError
    raise kind(describe(i, j, value, str(exc).splitlines()[0])) from exc


def binary_roc_auc(y, score) -> float:
    """The area under the ROC curve of a two-class target: the Mann-Whitney statistic,
    ties counted one half (the same value as ``sklearn.metrics.roc_auc_score``, to rounding).

    The larger of the two labels is the positive class, as in scikit-learn. It skips
    scikit-learn's input validation, which costs about 100x the computation on the few
    hundred rows of a bootstrap resample (a study computes thousands of them); anything
    that validation would refuse (not two classes, non-finite scores, shapes that differ)
    is passed to scikit-learn for its error.
    """
    y = np.asarray(y)
    score = np.asarray(score, dtype=float)
    classes = np.unique(y) if y.ndim == 1 else ()
    if len(classes) != 2 or score.shape != y.shape or not np.isfinite(score).all():
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(y, score))
    positive = y == classes[1]
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based, ties averaged
    n_pos = int(positive.sum())
    n_neg = len(y) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


_HUB_OFFLINE_LOCK = threading.Lock()
_HUB_OFFLINE_STATE = [0, False]  # open hub_offline() blocks, the value they replaced


@contextlib.contextmanager
def hub_offline():
    """huggingface_hub's offline mode inside (``constants.HF_HUB_OFFLINE``, which
    transformers reads through ``is_offline_mode``), restored when the last open block
    leaves. ``local_files_only=True`` alone still let huggingface_hub fetch its "agent
    harnesses" registry from the hub while building request headers for a hub id (cached
    or not); in offline mode it makes no request. The toolkit's own loads run inside."""
    try:
        from huggingface_hub import constants
    except ImportError:  # no transformers stack: nothing to keep offline
        yield
        return
    with _HUB_OFFLINE_LOCK:
        if _HUB_OFFLINE_STATE[0] == 0:
            _HUB_OFFLINE_STATE[1] = constants.HF_HUB_OFFLINE
            constants.HF_HUB_OFFLINE = True
        _HUB_OFFLINE_STATE[0] += 1
    try:
        yield
    finally:
        with _HUB_OFFLINE_LOCK:
            _HUB_OFFLINE_STATE[0] -= 1
            if _HUB_OFFLINE_STATE[0] == 0:
                constants.HF_HUB_OFFLINE = _HUB_OFFLINE_STATE[1]
