"""Helpers shared by the dataset generators and loaders: data cards and argument checks.

The argument checks refuse what would otherwise give a silently wrong or empty result: a
boolean where a number is meant (``True`` is an ``int`` in Python), a float where a count
is meant, a negative or zero count, size or duration, a non-finite number. Their messages
name the parameter and the allowed range.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

DATA_CARDS = Path(__file__).resolve().parents[2] / "data_cards"


def data_card(name: str) -> Path:
    """Path of the data card ``data_cards/{name}.md`` (shipped with the source tree)."""
    return DATA_CARDS / f"{name}.md"


def _range(low, high, low_open: bool = False, high_open: bool = False) -> str:
    if high is None:
        return f"> {low:g}" if low_open else f">= {low:g}"
    left, right = ("(" if low_open else "["), (")" if high_open else "]")
    return f"in {left}{low:g}, {high:g}{right}"


def check_int(name: str, value, *, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``; a bool or a float is refused.

    Raises TypeError (wrong type) or ValueError (out of range), naming ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an integer {_range(low, high)}, got {value!r} ({type(value).__name__})"
        )
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer {_range(low, high)}, got {value!r}")
    return int(value)


def check_float(
    name: str,
    value,
    *,
    low: float = 0.0,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in the given interval; a bool is refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a number {_range(low, high, low_open, high_open)}, got {value!r} "
            f"({type(value).__name__})"
        )
    number = float(value)
    bad = (
        not math.isfinite(number)
        or number < low
        or (low_open and number == low)
        or (high is not None and (number > high or (high_open and number == high)))
    )
    if bad:
        raise ValueError(
            f"{name} must be a finite number {_range(low, high, low_open, high_open)}, "
            f"got {value!r}"
        )
    return number


def read_table(path, what: str = "table", **kwargs):
    """``pandas.read_csv(path, **kwargs)`` with errors that name the file.

    An empty file, bytes that are not UTF-8, a malformed CSV or a truncated ``.gz`` raise
    ValueError naming ``what`` and ``path`` (instead of pandas' ``EmptyDataError``,
    ``UnicodeDecodeError`` or ``ParserError``).
    """
    import gzip
    import zlib

    import pandas as pd

    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError as exc:
        raise ValueError(
            f"{what} '{path}' is empty (no header line); write a header row naming the "
            "columns, then one row per sample"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{what} '{path}' is not UTF-8 text (undecodable byte "
            f"{exc.object[exc.start : exc.start + 1].hex()}); save it as UTF-8 CSV"
        ) from exc
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(
            f"{what} '{path}' is truncated or not a valid compressed file ({exc}); "
            "replace it with a complete copy"
        ) from exc
    except ValueError as exc:  # ParserError and column selection errors
        raise ValueError(f"{what} '{path}' could not be read as CSV: {exc}") from exc
