"""Text reader: one cell -> a string (or ``None`` when missing).

Bytes are decoded as UTF-8; bytes that are not valid UTF-8, and strings holding unpaired
surrogates (what decoding with ``errors="surrogateescape"`` leaves for undecodable bytes,
and what tokenizers cannot encode), are refused with a :class:`~toolkit.exceptions.ReadError`
that says where the bad byte or character is, never passed on as a raw
``UnicodeDecodeError`` / ``UnicodeEncodeError``.
"""

from __future__ import annotations

import re
from typing import Any

from toolkit._utils import describe_item, is_missing
from toolkit.exceptions import ReadError

_SURROGATE = re.compile("[\ud800-\udfff]")


def read_text(item: Any) -> str | None:
    """Return the text of one cell, or ``None`` when the cell is missing.

    Parameters
    ----------
    item : str, bytes or None
        A string, or UTF-8 encoded bytes. ``None``, NaN and empty or blank strings are
        missing (``None`` is returned, never ``""``).

    Returns
    -------
    text : str or None

    Raises
    ------
    ReadError
        Not a string; bytes that are not valid UTF-8; a string with unpaired surrogates.
    """
    if is_missing(item):
        return None
    if isinstance(item, (bytes, bytearray)):
        try:
            item = bytes(item).decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = exc.object[exc.start : exc.end]
            raise ReadError(
                f"text item {describe_item(bytes(item))} is not valid UTF-8: byte(s) {bad!r} at "
                f"position {exc.start} ({exc.reason}); decode it with its real encoding "
                "(e.g. bytes.decode('cp1252')) and pass the string"
            ) from exc
        if is_missing(item):
            return None
    if not isinstance(item, str):
        raise ReadError(
            f"text item {describe_item(item)} is a {type(item).__name__}, not a string; "
            "convert the column to str or mark the cell missing with None"
        )
    bad_char = _SURROGATE.search(item)
    if bad_char is not None:
        raise ReadError(
            f"text item {describe_item(item)} holds an unpaired surrogate {bad_char.group()!r} "
            f"at position {bad_char.start()} (left by decoding bytes that were not valid "
            "UTF-8, e.g. with errors='surrogateescape'); decode the source with its real "
            "encoding"
        )
    return item
