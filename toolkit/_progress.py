"""Progress bars (tqdm) that stay quiet where nobody watches.

One helper for every long loop (folds, encoding per modality, epochs of network
training): a bar on stderr when stderr is a terminal and ``verbose`` is truthy; nothing in
a log file, a CI job, a joblib worker without a terminal, or with ``verbose=0``.
"""

from __future__ import annotations

import sys


def wanted(verbose=1, stream=None) -> bool:
    """Whether a bar should be drawn: ``verbose`` is truthy and ``stream`` (default
    stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(verbose) and callable(isatty) and bool(isatty())


def progress(iterable=None, *, total=None, desc=None, verbose=1, unit="it", leave=False):
    """``tqdm(iterable)`` on stderr, disabled unless :func:`wanted` (the iterable is then
    yielded unchanged, with no output).

    Examples
    --------
    >>> from toolkit._progress import progress
    >>> [x * 2 for x in progress(range(3), desc="doubling", verbose=0)]
    [0, 2, 4]
    """
    from tqdm import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        leave=leave,
        file=sys.stderr,
        disable=not wanted(verbose),
        dynamic_ncols=True,
    )
