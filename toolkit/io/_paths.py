"""Path helpers shared by the file readers.

Every reader calls :func:`check_path` before it opens anything: the path is ``os.stat``-ed
(following symbolic links) and only a regular file (or, where the reader accepts one, a
folder) is let through. FIFOs (named pipes), character and block devices (``/dev/zero``,
``/dev/urandom``, a disk) and sockets are refused without being opened: opening a FIFO
blocks until a writer appears, and a device never ends.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from toolkit.exceptions import ReadError

#: Compression suffixes nibabel accepts after an Analyze/NIfTI pair suffix (``v.hdr.gz``).
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst")
_PAIR_SUFFIXES = (".hdr", ".img")

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def as_path(item: Any) -> Path | None:
    """``Path`` for str/PathLike items, else ``None``."""
    if isinstance(item, (str, os.PathLike)):
        return Path(item)
    return None


def file_kind(mode: int) -> str:
    """A human name for a non-regular ``st_mode`` (FIFO, device, socket, ...)."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def check_path(path: Path, what: str, *, allow_dir: bool = False) -> os.stat_result:
    """``os.stat`` ``path`` and refuse anything but a regular file (or a folder if allowed).

    Parameters
    ----------
    path : Path
    what : str
        The kind of file, used in messages ("audio", "scan", ...).
    allow_dir : bool, default=False
        Whether a folder is acceptable (a DICOM series).

    Returns
    -------
    os.stat_result of the path (symbolic links followed).

    Raises
    ------
    FileNotFoundError
        The path (or the target of a symbolic link) does not exist.
    ReadError
        The path is a FIFO, device, socket, an unexpected folder, an empty file, or cannot
        be inspected (permissions).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        link = " (a symbolic link whose target is missing)" if os.path.islink(path) else ""
        where = (
            ""
            if os.path.isabs(path)
            else f" (a relative path is resolved against the working directory '{Path.cwd()}')"
        )
        raise FileNotFoundError(
            f"{what} file '{path}' does not exist{link}; check the path{where}"
        ) from None
    except OSError as exc:
        raise ReadError(
            f"{what} path '{path}' cannot be inspected ({type(exc).__name__}: {exc}); "
            "check its permissions"
        ) from exc
    if stat.S_ISDIR(st.st_mode):
        if allow_dir:
            return st
        raise ReadError(f"{what} path '{path}' is a folder, not a {what} file; pass a file")
    if not stat.S_ISREG(st.st_mode):
        raise ReadError(
            f"{what} path '{path}' is {file_kind(st.st_mode)}, not a regular file; it was not "
            "opened (readers never open FIFOs, devices or sockets); copy the data to a file"
        )
    if st.st_size == 0:
        raise ReadError(f"{what} file '{path}' is empty (0 bytes); re-export or remove it")
    return st


def pair_suffix(path) -> str | None:
    """``".hdr"`` or ``".img"`` when ``path`` names half of an Analyze/NIfTI pair (also
    compressed: ``.hdr.gz``, ``.img.bz2``, ...; any case), else None."""
    name = Path(path).name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    for suffix in _PAIR_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


def companion_files(path) -> list[Path]:
    """The other files the scan reader reads for ``path``, whether they exist or not.

    For half of an Analyze/NIfTI pair: the other half and the SPM ``.mat`` beside it,
    named as nibabel names them (``v.hdr`` -> ``v.img``, ``v.mat``; ``v.HDR.gz`` ->
    ``v.IMG.gz``, ...); for anything else, ``[]``. Caches key a file item on these files
    too, so replacing ``v.img`` while ``v.hdr`` is untouched gives a new key.
    """
    if pair_suffix(path) is None:
        return []
    from nibabel.spm99analyze import Spm99AnalyzeImage

    try:
        file_map = Spm99AnalyzeImage.filespec_to_file_map(str(path))
    except Exception:  # nibabel does not see a pair in this name: nothing else is read
        return []
    own = Path(path)
    return [
        Path(holder.filename)
        for _, holder in sorted(file_map.items())
        if Path(holder.filename) != own
    ]
