"""A small thread pool for reading many items: decoding (soundfile, PIL, numpy) releases the
GIL, so reads overlap with each other and with file-system waits."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: Most reader threads per encoder call.
MAX_READ_THREADS = 4


def read_threads() -> int:
    """Reader threads to use here: the CPUs this process may run on, at most 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_READ_THREADS, cpus))


def map_in_threads(fn: Callable[[Any], Any], items: Sequence, threads: int) -> list:
    """``[fn(item) for item in items]`` computed by up to ``threads`` threads, in input order.

    Each call's outcome is kept: the list holds ``(True, value)`` or ``(False, exception)``
    per item, so the caller handles failures in row order exactly as a serial loop would.
    """

    def call(item):
        try:
            return True, fn(item)
        except Exception as exc:  # handed back to the caller, in row order
            return False, exc

    if threads <= 1 or len(items) <= 1:
        return [call(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        return list(pool.map(call, items))
