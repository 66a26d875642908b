"""Readers: one raw item (a path, array or string) -> a numeric array.

Each reader raises :class:`toolkit.exceptions.ReadError` (or ``FileNotFoundError``)
with a message that names the item and what is wrong with it.
"""

from __future__ import annotations

from toolkit.io.audio import read_audio
from toolkit.io.image import read_image
from toolkit.io.scan import read_scan
from toolkit.io.text import read_text

__all__ = ["read_audio", "read_image", "read_scan", "read_text"]
