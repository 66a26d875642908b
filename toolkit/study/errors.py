"""Errors of a study run (config errors are :class:`toolkit.study.config.ConfigError`)."""

from __future__ import annotations

from pathlib import Path


class StudyError(RuntimeError):
    """A study failed after its run folder was made; the folder is marked failed and
    finished folds are kept in it (``run_folder``)."""

    def __init__(self, message: str, run_folder: Path | None = None):
        super().__init__(message)
        self.run_folder = run_folder


class SchedulerError(RuntimeError):
    """The ``--scheduler`` address is not a reachable Dask scheduler (or dask is absent)."""
