"""Helpers for the benchmark scripts: timing, machine description, result rows."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass


def machine() -> str:
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except ImportError:  # pragma: no cover
        gpu = "torch missing"
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {gpu}"
    )


def timed(fn, *args, repeat: int = 1, **kwargs):
    """(best wall time over ``repeat`` runs, result of the last run)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best, result


@dataclass
class Row:
    number: str
    what: str
    value: float
    unit: str
    goal: str
    met: bool | None
    detail: str = ""

    def line(self) -> str:
        status = {True: "met", False: "MISSED", None: "reported"}[self.met]
        return f"| {self.number} | {self.what} | {self.value:.3g} {self.unit} | {self.goal} | {status} | {self.detail} |"


HEADER = "| # | what | measured | goal | status | detail |\n| --- | --- | --- | --- | --- | --- |"


def sentences(n: int, seed: int = 0, max_words: int = 120) -> list[str]:
    """``n`` sentences of 3 to ``max_words`` words (varied lengths, fixed seed)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = "the a film plot was good bad great acting story music really not very long boring fun ending cast".split()
    return [" ".join(rng.choice(words, rng.integers(3, max_words))) for _ in range(n)]
