"""Row ids in shards: normalised to values ``.npz`` gives back unchanged (strings, integers,
floats, naive datetimes, timedeltas), or refused saying what to do.
"""

from __future__ import annotations

import datetime
import numbers

import numpy as np
import pandas as pd


def _normalise_ids(ids, where: str = "row ids") -> np.ndarray:
    """Row ids as a numpy array that ``.npz`` stores without pickles and gives back as they
    were: strings, integers, floats, booleans or datetimes. Missing and mixed ids are refused."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{where} must be 1-D, got shape {arr.shape}")
    if arr.dtype == object:
        values = arr.tolist()
        missing = [
            i for i, v in enumerate(values) if v is None or (isinstance(v, float) and v != v)
        ]
        if missing:
            raise ValueError(
                f"{where} are missing at positions {missing[:10]}; every row needs an id"
            )
        if all(isinstance(v, str) for v in values):
            _refuse_nul(values, where)
            arr = np.asarray(values, dtype=str)
        elif all(isinstance(v, datetime.datetime) for v in values):
            arr = _datetime_ids(values, where)
        elif all(isinstance(v, datetime.timedelta) for v in values):
            arr = np.asarray(pd.to_timedelta(values).to_numpy())
        elif all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
            try:
                arr = np.asarray(values, dtype=np.int64)
            except OverflowError as exc:
                raise ValueError(f"{where} do not fit in 64-bit integers; use strings") from exc
        elif all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
            arr = np.asarray(values, dtype=np.float64)
        else:
            kinds = sorted({type(v).__name__ for v in values})
            raise ValueError(
                f"{where} mix types {kinds}; shards store ids without pickles, so they must be "
                "all strings or all numbers: convert them (e.g. frame[id_column].astype(str))"
            )
    if arr.dtype.kind not in "biufUSMm":
        raise ValueError(f"{where} of dtype {arr.dtype} cannot be stored; use strings or integers")
    if arr.dtype.kind == "S":
        raise ValueError(
            f"{where} are bytes ({arr.dtype}); numpy drops their trailing NUL bytes, so they "
            "may not come back as written: decode them to strings first"
        )
    if arr.dtype.kind in "fMm" and pd.isna(arr).any():
        bad = np.flatnonzero(pd.isna(arr))[:10].tolist()
        raise ValueError(f"{where} are missing at positions {bad}; every row needs an id")
    return arr


def _refuse_nul(values: list, where: str) -> None:
    bad = [i for i, v in enumerate(values) if "\0" in v]
    if bad:
        raise ValueError(
            f"{where} contain a NUL character ('\\x00') at positions {bad[:10]} (e.g. "
            f"{values[bad[0]]!r}); numpy stores strings without trailing NULs, so such ids would "
            'change or collide ("a" and "a\\x00" become the same): remove the NULs, e.g. '
            "frame[id_column].str.replace('\\x00', '')"
        )


def _datetime_ids(values: list, where: str) -> np.ndarray:
    """Naive datetimes (pandas Timestamps or ``datetime``) as datetime64[ns]."""
    aware = [i for i, v in enumerate(values) if v.tzinfo is not None]
    if aware:
        raise ValueError(
            f"{where} are timezone-aware datetimes (e.g. {values[aware[0]]!s} at position "
            f"{aware[0]}); shards store datetimes without a timezone, so it would be lost: "
            "convert them to UTC and drop the zone (frame[id_column].dt.tz_convert('UTC')"
            ".dt.tz_localize(None); for the index: frame.index.tz_convert('UTC')"
            ".tz_localize(None)), or to strings"
        )
    try:
        return np.asarray(pd.to_datetime(values).to_numpy())
    except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime) as exc:
        raise ValueError(
            f"{where} hold datetimes that numpy's datetime64 cannot store ({exc}); convert "
            "them to strings"
        ) from exc
