"""Readers: one raw item (a path, array or string) -> a numeric array.

Each reader raises :class:`toolkit.exceptions.ReadError` (or ``FileNotFoundError``)
with a message that names the item and what is wrong with it.

Other units use the readers' checks through the names below, not through this package's
private modules: :func:`check_path` / :func:`companion_files` (paths that are never opened
when they are not regular files, and the files a path stands for), :func:`check_real_dtype` /
:func:`as_finite_float32` (decoded values), :func:`read_threads` / :func:`map_in_threads`
(parallel reads).
"""

from __future__ import annotations

from toolkit.io._checks import as_finite_float32, check_real_dtype
from toolkit.io._paths import check_path, companion_files
from toolkit.io._threads import map_in_threads, read_threads
from toolkit.io.audio import read_audio
from toolkit.io.image import check_value_range, read_image
from toolkit.io.scan import check_preprocess, quiet_monai, read_scan
from toolkit.io.text import read_text

__all__ = [
    "as_finite_float32",
    "check_path",
    "check_preprocess",
    "check_real_dtype",
    "check_value_range",
    "companion_files",
    "map_in_threads",
    "quiet_monai",
    "read_audio",
    "read_image",
    "read_scan",
    "read_text",
    "read_threads",
]
