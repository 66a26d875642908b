"""Loader for the feature pickles that MMSA publishes for CMU-MOSI, CMU-MOSEI and CH-SIMS.

A feature pickle is untrusted input. It is read with a restricted unpickler that admits
only numpy arrays, numpy scalars/dtypes and builtin containers, and resources are bounded:
the file size is checked (``max_bytes``) before it is opened, and every array's element
count (``max_elements``) and byte size are checked while unpickling, before its memory is
allocated. The content is then validated: each split's arrays have one row per label,
``*_lengths`` are integers in [0, frames], features and labels are finite and within the
float32 range, and an ``id`` that occurs twice must carry the same label.
"""

from __future__ import annotations

import math
import pickle
import threading
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from toolkit.datasets._common import data_card
from toolkit.exceptions import ReadError
from toolkit.io import as_finite_float32, check_path, check_real_dtype

#: Largest feature file accepted, in bytes (``max_bytes``); checked before it is opened.
MAX_BYTES = 16 * 2**30
#: Most elements one array in the file may hold (``max_elements``); checked while
#: unpickling, before the array is allocated (CMU-MOSEI's largest array has ~6e8).
MAX_ELEMENTS = 2**31

_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict"),
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "set"),
}  # fmt: skip

_LIMITS = threading.local()
_LENGTHS_MAX = 2**31


class _TooLarge(ValueError):
    """An array in the pickle is above the element or byte limit."""


def _check_size(shape, dtype) -> None:
    """Refuse an array shape/dtype above the limits of the load in progress."""
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    n = math.prod(int(d) for d in shape)
    if any(int(d) < 0 for d in shape):
        raise _TooLarge(f"an array declares a negative dimension in shape {tuple(shape)}")
    itemsize = np.dtype(dtype).itemsize
    if n > _LIMITS.max_elements or n * itemsize > _LIMITS.max_bytes:
        raise _TooLarge(
            f"an array of shape {tuple(int(d) for d in shape)} ({n:,} elements of {itemsize} "
            f"bytes) is above the max_elements={_LIMITS.max_elements:,} / max_bytes="
            f"{_LIMITS.max_bytes:,} limit"
        )


class _BoundedArray(np.ndarray):
    """ndarray whose unpickling checks shape and dtype before the data is copied in."""

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) in (4, 5):
            shape, dtype = state[-4], state[-3]
            _check_size(shape, dtype)
        super().__setstate__(state)


def _ndarray(shape, dtype=float, *args, **kwargs):
    """``numpy.ndarray`` as the unpickler sees it: bounded before allocation."""
    _check_size(shape, dtype)
    return np.ndarray(shape, dtype, *args, **kwargs)


def _reconstruct(subtype, shape, dtype):
    if subtype is not _ndarray and subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refusing to rebuild an array of type {subtype!r}")
    _check_size(shape, dtype)
    return np.ndarray.__new__(_BoundedArray, shape, dtype)


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits only numpy arrays, numpy scalars/dtypes and builtin containers."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load '{module}.{name}' from an MMSA feature file: only numpy arrays "
                "and builtin containers are allowed (the file may be corrupt or not an MMSA "
                "feature file)"
            )
        if name == "ndarray":
            return _ndarray
        if name == "_reconstruct":
            return _reconstruct
        return super().find_class(module, name)


def _unpickle(path: Path, max_bytes: int, max_elements: int):
    _LIMITS.max_bytes, _LIMITS.max_elements = max_bytes, max_elements
    try:
        with open(path, "rb") as fh:
            return _RestrictedUnpickler(fh).load()
    except pickle.UnpicklingError as exc:
        hint = "" if "refusing" in str(exc) else "; the file may be truncated or corrupt"
        raise pickle.UnpicklingError(f"MMSA feature file '{path}': {exc}{hint}") from None
    except _TooLarge as exc:
        raise ValueError(
            f"MMSA feature file '{path}': {exc}; pass larger max_elements / max_bytes only "
            "if you trust the file"
        ) from None
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:  # EOFError, numpy's buffer-size errors, TypeError, ...
        raise ValueError(
            f"MMSA feature file '{path}' could not be unpickled ({type(exc).__name__}: {exc}); "
            "it may be truncated or not an MMSA feature file"
        ) from exc
    finally:
        del _LIMITS.max_bytes, _LIMITS.max_elements


def _rows_of(value, where: str, n: int, max_elements: int) -> list:
    """The per-row items of one split's array or list, checked to have ``n`` rows."""
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            raise ValueError(f"{where} is a scalar, not one entry per row")
        rows = [np.asarray(value[i]) for i in range(len(value))]
    elif isinstance(value, (list, tuple)):
        rows = [np.asarray(v) for v in value]
    else:
        raise ValueError(f"{where} is a {type(value).__name__}, not an array or list of rows")
    if len(rows) != n:
        raise ValueError(f"{where} has {len(rows)} rows but the split has {n} labels")
    total = sum(r.size for r in rows)
    if total > max_elements:
        raise ValueError(
            f"{where} holds {total:,} elements, above the max_elements={max_elements:,} limit"
        )
    return rows


def _lengths_of(part: dict, key: str, where: str, n: int) -> np.ndarray | None:
    if part.get(key) is None:
        return None
    values = _rows_of(part[key], f"{where} '{key}'", n, _LENGTHS_MAX)
    out = np.empty(n, dtype=np.int64)
    for i, v in enumerate(values):
        if v.ndim != 0 or v.dtype.kind not in "iuf" or not np.isfinite(v) or v != np.round(v):
            raise ValueError(
                f"{where} row {i}: {key} = {v!r} is not a whole number of frames; lengths "
                "count each row's real (unpadded) frames"
            )
        out[i] = int(v)
    return out


def _sequence_rows(rows, lengths, where: str, key: str) -> list[np.ndarray]:
    out = []
    for i, seq in enumerate(rows):
        what = f"{where} row {i} '{key}'"
        check_real_dtype(seq, what, "features", allow_bool=True)
        if lengths is not None and seq.ndim >= 1:
            m = int(lengths[i])
            if m < 0 or m > seq.shape[0]:
                problem = "is negative" if m < 0 else f"exceeds its {seq.shape[0]} frames"
                raise ValueError(
                    f"{where} row {i}: {key}_lengths = {m} {problem}; lengths count the real "
                    f"(unpadded) frames, from 0 to {seq.shape[0]}"
                )
            if seq.ndim == 2:
                seq = seq[seq.shape[0] - m :]  # MMSA pads at the front
        out.append(as_finite_float32(seq, what, "features"))
    return out


def _labels(part: dict, where: str) -> np.ndarray:
    labels = np.asarray(part["regression_labels"])
    check_real_dtype(labels, f"{where} 'regression_labels'", "labels")
    if labels.ndim != 1:
        flat = labels.reshape(len(labels), -1) if labels.ndim > 1 else labels.reshape(0, 0)
        if flat.shape[1] != 1:
            raise ValueError(
                f"{where} 'regression_labels' has shape {labels.shape}; expected one score a row"
            )
        labels = flat[:, 0]
    bad = ~np.isfinite(labels.astype(np.float64))
    if bad.any():
        raise ValueError(
            f"{where} 'regression_labels' is NaN or infinite at rows "
            f"{np.flatnonzero(bad)[:5].tolist()}; drop those segments or fix their labels"
        )
    return labels.astype(np.float64)


def _check_conflicting_ids(frame: pd.DataFrame, path: Path) -> None:
    dup = frame[frame["id"].duplicated(keep=False)]
    if dup.empty:
        return
    for seg_id, group in dup.groupby("id", sort=False):
        if group["score"].nunique() > 1:
            places = ", ".join(
                f"{s} row {r} (score {v:g})"
                for s, r, v in zip(group["split"], group["row"], group["score"], strict=True)
            )
            raise ValueError(
                f"MMSA feature file '{path}': id '{seg_id}' occurs {len(group)} times with "
                f"different labels ({places}); fix the labels or remove the duplicate"
            )


def load_mmsa_features(
    path, *, text_key=None, max_bytes: int = MAX_BYTES, max_elements: int = MAX_ELEMENTS
):
    """Load an MMSA feature pickle (CMU-MOSI / MOSEI / CH-SIMS ``unaligned``/``aligned`` files).

    The file is a dict with ``train``, ``valid`` and ``test`` entries, each holding
    ``text`` or ``text_bert``, ``audio``, ``vision`` feature arrays of shape
    (n_segments, T, d), ``regression_labels`` (sentiment in [-3, 3] for MOSI/MOSEI),
    ``id`` and optionally ``audio_lengths`` / ``vision_lengths``.

    Unpickling can run arbitrary code, so the file is read with a *restricted*
    unpickler that only admits numpy arrays, numpy scalars and dtypes, and builtin
    containers; anything else is refused with an error. Sizes are bounded before memory
    is allocated (see the parameters). Only open files you trust.

    Parameters
    ----------
    path : str or path
    text_key : {"text", "text_bert"}, optional
        Text features to use (default: ``text`` when present, else ``text_bert``).
    max_bytes : int, default=16 GiB (:data:`MAX_BYTES`)
        Largest file accepted, checked before opening it; also the largest array, in bytes.
    max_elements : int, default=2**31 (:data:`MAX_ELEMENTS`)
        Most elements one array may hold, checked while unpickling before allocating it.

    Returns
    -------
    Bunch with ``frame`` (one row per segment: ``id``, ``split`` in train/valid/test,
    ``text``, ``audio``, ``vision`` (per-row (T, d) float32 arrays), ``score``,
    ``label`` (score > 0; MOSI's Acc-2 convention excludes score == 0 elsewhere)),
    ``target`` (score), ``modalities`` and ``data_card``.

    Raises
    ------
    pickle.UnpicklingError
        The file references a type or function outside the allow-list.
    ValueError
        Naming the file, split, row and key: too large, truncated, wrong layout, negative
        or too-large lengths, NaN or out-of-float32-range values, conflicting duplicate ids.
    """
    path = Path(path).expanduser()
    size = check_path(path, "MMSA feature").st_size
    if size > max_bytes:
        raise ValueError(
            f"MMSA feature file '{path}' is {size:,} bytes, above the max_bytes={max_bytes:,} "
            "limit; pass a larger max_bytes only if you trust the file"
        )
    data = _unpickle(path, max_bytes, max_elements)
    if not isinstance(data, dict) or not {"train", "valid", "test"} <= set(data):
        raise ValueError(
            f"'{path}' is not an MMSA feature file: expected a dict with train/valid/test"
        )
    parts = []
    for split in ("train", "valid", "test"):
        part = data[split]
        where = f"MMSA feature file '{path}' split '{split}'"
        if not isinstance(part, dict):
            raise ValueError(f"{where} is a {type(part).__name__}, not a dict of arrays")
        key = text_key or ("text" if "text" in part else "text_bert")
        missing = [k for k in (key, "audio", "vision", "regression_labels") if k not in part]
        if missing:
            raise ValueError(f"'{path}' split '{split}' lacks {missing} (keys: {sorted(part)})")
        try:
            score = _labels(part, where)
            n = len(score)
            columns = {}
            for name, source in (("text", key), ("audio", "audio"), ("vision", "vision")):
                rows = _rows_of(part[source], f"{where} '{source}'", n, max_elements)
                lengths = _lengths_of(part, f"{name}_lengths", where, n) if name != "text" else None
                columns[name] = _sequence_rows(rows, lengths, where, source)
            ids = part.get("id")
            ids = [f"{split}_{i}" for i in range(n)] if ids is None else ids
            ids = [str(np.asarray(i)) for i in _rows_of(ids, f"{where} 'id'", n, max_elements)]
        except ReadError as exc:
            raise ValueError(str(exc)) from None
        frame = pd.DataFrame(
            {"id": ids, "split": split, **columns, "score": score, "row": np.arange(n)}
        )
        parts.append(frame)
    frame = pd.concat(parts, ignore_index=True)
    _check_conflicting_ids(frame, path)
    frame = frame.drop(columns="row")
    frame["label"] = (frame["score"] > 0).astype(int)
    from toolkit.encoders import FeatureEncoder

    modalities = [(m, FeatureEncoder(), m) for m in ("text", "audio", "vision")]
    return Bunch(
        frame=frame,
        target=frame["score"].to_numpy(),
        modalities=modalities,
        data_card=data_card("mmsa_features"),
    )
