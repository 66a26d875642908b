"""Text reader."""

from __future__ import annotations

from typing import Any

from toolkit._utils import describe_item, is_missing
from toolkit.exceptions import ReadError


def read_text(item: Any) -> str | None:
    """Return the text of one cell, or ``None`` when the cell is missing.

    Parameters
    ----------
    item : str or None
        A string. ``None``, NaN and empty or blank strings are missing (``None`` is
        returned, never ``""``).

    Returns
    -------
    text : str or None
    """
    if is_missing(item):
        return None
    if isinstance(item, bytes):
        try:
            item = item.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ReadError(f"text item {describe_item(item)} is not valid UTF-8: {exc}") from exc
    if not isinstance(item, str):
        raise ReadError(
            f"text item {describe_item(item)} is a {type(item).__name__}, not a string; "
            "convert the column to str or mark the cell missing with None"
        )
    return item
