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
