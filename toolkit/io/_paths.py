"""Path helpers shared by the file readers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def as_path(item: Any) -> Path | None:
    """``Path`` for str/PathLike items, else ``None``."""
    if isinstance(item, (str, os.PathLike)):
        return Path(item)
    return None


def check_exists(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(
            f"{what} file '{path}' does not exist; check the path (relative paths are "
            f"resolved against the working directory '{Path.cwd()}')"
        )
    if path.is_file() and path.stat().st_size == 0:
        from toolkit.exceptions import ReadError

        raise ReadError(f"{what} file '{path}' is empty (0 bytes); re-export or remove it")
