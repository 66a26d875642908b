"""Numeric checks shared by the readers: dtype kinds, finiteness and the float32 range."""

from __future__ import annotations

import numpy as np

from toolkit.exceptions import ReadError

_F32_MAX = float(np.finfo(np.float32).max)


def check_real_dtype(arr: np.ndarray, what: str, noun: str, *, allow_bool: bool = False) -> None:
    """Refuse complex, boolean (unless allowed), object, string and other non-real dtypes."""
    kind = arr.dtype.kind
    if kind == "c":
        raise ReadError(
            f"{what}: {noun} are complex ({arr.dtype}); pass real values (e.g. the real part "
            "or the magnitude, chosen explicitly)"
        )
    if kind == "b" and not allow_bool:
        raise ReadError(
            f"{what}: {noun} are boolean; pass numbers (floats, or integers scaled by their "
            "type's range)"
        )
    if kind not in "biuf":
        raise ReadError(
            f"{what}: {noun} have non-numeric dtype {arr.dtype}; pass a numeric array "
            "(floats or integers)"
        )


def as_finite_float32(
    arr: np.ndarray, what: str, noun: str, *, offset: int = 0, copy: bool = True
) -> np.ndarray:
    """``arr`` as float32, refusing NaN, infinity and values beyond the float32 range.

    NaN/infinite values and finite values that only overflow when cast to float32 (about
    ±3.4e38, e.g. 1e308 in a float64 array) get different messages, each with the count
    and the first position. ``offset`` is added to the first index in messages (for a block
    of a longer array; the count is then the block's). With ``copy=False`` a float32 array
    is returned as is (no second copy of a large volume).
    """
    arr = np.asarray(arr)
    if arr.dtype.kind in "biu":
        return arr.astype(np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        first = _position(np.argwhere(bad)[0], offset)
        raise ReadError(
            f"{what} contains NaN or infinite {noun} ({int(bad.sum())} of {arr.size}, first "
            f"at index {first}); fix or drop them (missing items are None, not NaN {noun})"
        )
    del bad
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32, copy=copy)
    if arr.dtype.itemsize > 4:
        over = ~np.isfinite(out)
        if over.any():
            at = tuple(int(i) for i in np.argwhere(over)[0])
            raise ReadError(
                f"{what} holds {noun} out of float32 range ({int(over.sum())} of {arr.size} "
                f"beyond ±{_F32_MAX:.3g}, e.g. {float(arr[at]):.3g} at index "
                f"{_position(at, offset)}); rescale them (they are finite, not NaN)"
            )
    return out


def _position(index, offset: int) -> tuple:
    index = [int(i) for i in index]
    if index:
        index[0] += offset
    return tuple(index)
