"""The model folder on disk: format constants, errors, the scan of a folder, safetensors
headers, and the manifest's checks (files, sizes, hashes, tensors).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from pathlib import Path

import toolkit

FORMAT_VERSION = 2


_MANIFEST = "manifest.json"


_MODEL = "model.skops"


#: Default bound on a model folder's total size, and on the bytes of tensors it describes.
DEFAULT_MAX_BYTES = 8 * 1024**3


#: Largest ``manifest.json`` read.
MAX_MANIFEST_BYTES = 1024**2


#: Largest skops ``schema.json`` read, and deepest nesting walked.
MAX_SCHEMA_BYTES = 64 * 1024**2


MAX_SCHEMA_DEPTH = 200


#: ``model.skops`` may unpack to at most this many times its size (beyond this many bytes).
MAX_COMPRESSION_RATIO = 100


MAX_UNPACKED_FREE = 64 * 1024**2


#: Largest safetensors header read.
MAX_SAFETENSORS_HEADER = 16 * 1024**2


#: File suffixes a model folder may hold (data only: no pickles, no code).
SAFE_SUFFIXES = frozenset({".json", ".safetensors", ".skops", ".txt", ".model", ".md"})
#: The classes a model folder may hold at its top (what ``save`` writes).
_ESTIMATOR_TYPES = frozenset(
    {"toolkit.estimators.MultimodalClassifier", "toolkit.estimators.MultimodalRegressor"}
)


# safetensors dtype codes -> bytes per element
_ST_DTYPES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


class ModelFileError(ValueError):
    """A model folder is corrupt, inconsistent with its manifest, or unsafe to read."""


class UntrustedTypeError(ModelFileError):
    """The model file references types or functions the caller did not trust."""


class NotAModelError(FileNotFoundError):
    """The folder is not a saved toolkit model (it has no manifest or no model file)."""


def sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` (and itself) to disk."""
    for root, dirs, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                os.fsync(fh.fileno())
        for name in dirs:
            _fsync_dir(Path(root) / name)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _scan(folder: Path, what: str, max_bytes: int) -> dict[str, int]:
    """Relative POSIX path -> size of every regular file under ``folder``.

    Refuses symlinks, FIFOs, devices and sockets (none is opened), names outside
    :data:`SAFE_SUFFIXES`, nesting deeper than 8 folders and a total over ``max_bytes``.
    """
    found: dict[str, int] = {}
    stack = [(folder, 0)]
    while stack:
        current, depth = stack.pop()
        if depth > 8:
            raise ModelFileError(f"{what}: folders nest deeper than 8 levels at '{current}'")
        with os.scandir(current) as entries:
            for entry in entries:
                full = Path(entry.path)
                rel = full.relative_to(folder).as_posix()
                if entry.is_symlink():
                    raise ModelFileError(
                        f"{what} holds a symbolic link '{rel}'; a model folder may hold only "
                        "regular files: copy the real files in, or save the model again"
                    )
                if entry.is_dir(follow_symlinks=False):
                    stack.append((full, depth + 1))
                    continue
                mode = entry.stat(follow_symlinks=False).st_mode
                if not stat.S_ISREG(mode):
                    raise ModelFileError(
                        f"{what} holds '{rel}', which is not a regular file (a FIFO, device or "
                        "socket); remove it"
                    )
                found[rel] = entry.stat(follow_symlinks=False).st_size
    total = sum(found.values())
    if total > max_bytes:
        raise ModelFileError(
            f"{what} holds {total:,} bytes, above the max_bytes={max_bytes:,} limit; pass a "
            "larger max_bytes= if you trust it"
        )
    return found


def _inside(root: Path, rel, what: str) -> Path:
    """``root / rel`` for a relative path that stays inside ``root``; else ModelFileError."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise ModelFileError(f"{what}: path {rel!r} is not a relative POSIX path")
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts or rel.startswith("~"):
        raise ModelFileError(f"{what}: path {rel!r} leaves the model folder")
    target = (root / rel).resolve()
    if not target.is_relative_to(root.resolve()):
        raise ModelFileError(f"{what}: path {rel!r} leaves the model folder")
    return target


def _read_header(file: Path, size: int, where: str) -> tuple[dict, int]:
    """A safetensors file's JSON header (bounded by :data:`MAX_SAFETENSORS_HEADER`) and its
    length in bytes."""
    with open(file, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelFileError(f"{where} is truncated (no safetensors header); save it again")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_SAFETENSORS_HEADER or 8 + n > size:
            raise ModelFileError(
                f"{where} declares a {n:,}-byte header in a {size:,}-byte file; it is corrupt"
            )
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # also an integer of over 4300 digits
        raise ModelFileError(
            f"{where} has an unreadable header ({type(exc).__name__}); it is corrupt"
        ) from exc
    if not isinstance(header, dict):
        raise ModelFileError(f"{where} has a header that is not a JSON object; it is corrupt")
    return header, n


def safetensors_header(file: Path, size: int | None = None) -> dict[str, dict]:
    """Parse and bound-check a safetensors header without decoding any tensor.

    Returns ``{name: {"dtype": str, "shape": [int, ...]}}``. Checks that the header is
    JSON of bounded size, every dtype is known, each tensor's byte range matches its dtype and
    shape, ranges are contiguous and the data section ends exactly at the end of the file.
    """
    size = file.stat().st_size if size is None else size
    where = f"weights file '{file}'"
    header, n = _read_header(file, size, where)
    header.pop("__metadata__", None)
    table, spans = {}, []
    for name, info in header.items():
        try:
            dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
            ok = (
                dtype in _ST_DTYPES
                and all(isinstance(d, int) and d >= 0 for d in shape)
                and isinstance(start, int)
                and isinstance(end, int)
            )
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ModelFileError(f"{where}: tensor {name!r} has a malformed header entry")
        numel = 1
        for d in shape:
            numel *= d
        if end - start != numel * _ST_DTYPES[dtype]:
            raise ModelFileError(
                f"{where}: tensor {name!r} ({dtype}, shape {shape}) spans {end - start} bytes; "
                "it is corrupt"
            )
        table[name] = {"dtype": dtype, "shape": list(shape)}
        spans.append((start, end))
    position = 0
    for start, end in sorted(spans):
        if start != position:
            raise ModelFileError(f"{where}: tensor data overlaps or has gaps; it is corrupt")
        position = end
    if 8 + n + position != size:
        raise ModelFileError(
            f"{where}: header describes {position:,} bytes of tensors but the file holds "
            f"{size - 8 - n:,}; it is truncated or corrupt"
        )
    return table


# -- load -------------------------------------------------------------------------------


def _read_manifest(path: Path, files: dict[str, int]) -> dict:
    if _MANIFEST not in files:
        raise NotAModelError(f"'{path}' is not a saved toolkit model (no {_MANIFEST})")
    where = f"manifest '{path / _MANIFEST}'"
    if files[_MANIFEST] > MAX_MANIFEST_BYTES:
        raise ModelFileError(
            f"{where} is {files[_MANIFEST]:,} bytes, above the {MAX_MANIFEST_BYTES:,} limit"
        )
    try:
        manifest = json.loads((path / _MANIFEST).read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # also an integer of over 4300 digits
        raise ModelFileError(
            f"{where} is not valid JSON ({type(exc).__name__}: {str(exc)[:200]}); the folder "
            "is damaged: save the model again"
        ) from exc
    if not isinstance(manifest, dict):
        raise ModelFileError(f"{where} is not a JSON object; the folder is damaged")
    if not isinstance(manifest.get("format"), int) or manifest.get("class") not in _ESTIMATOR_TYPES:
        raise ModelFileError(
            f"{where} does not describe a toolkit model (format {manifest.get('format')!r}, "
            f"class {manifest.get('class')!r})"
        )
    return manifest


def _check_compatible(manifest: dict, path: Path) -> None:
    fmt = manifest.get("format")
    if fmt != FORMAT_VERSION:
        raise ModelFileError(
            f"model '{path}' uses save format {fmt!r}; this toolkit reads format {FORMAT_VERSION}. "
            "Load it with the toolkit version that saved it and re-save, or refit"
        )
    saved = (manifest.get("versions") or {}).get("multimodal-toolkit")
    if not isinstance(saved, str | None):
        raise ModelFileError(f"model '{path}': manifest 'versions' is malformed")
    if saved is not None and saved.split(".")[:2] != toolkit.__version__.split(".")[:2]:
        raise ModelFileError(
            f"model '{path}' was saved by multimodal-toolkit {saved}; this is {toolkit.__version__} "
            "(a different minor version). Load it with the matching version, or refit"
        )


def _check_files(path: Path, manifest: dict, files: dict[str, int], verify: bool) -> None:
    """The folder holds exactly the manifest's files, with their sizes (and hashes)."""
    table = manifest.get("files")
    if not isinstance(table, dict) or not isinstance(manifest.get("tensors"), dict):
        raise ModelFileError(f"model '{path}': manifest has no file or tensor table")
    for rel in table:
        _inside(path, rel, f"model '{path}' manifest 'files'")
    present = set(files) - {_MANIFEST}
    extra, missing = sorted(present - set(table)), sorted(set(table) - present)
    if extra:
        raise ModelFileError(
            f"model '{path}' holds files its manifest does not list: {extra[:10]}; remove them "
            "(a saved model folder is written whole by toolkit.save)"
        )
    if missing:
        raise ModelFileError(f"model '{path}' lacks files its manifest lists: {missing[:10]}")
    unsafe = sorted(rel for rel in table if Path(rel).suffix not in SAFE_SUFFIXES)
    if unsafe:
        raise ModelFileError(
            f"model '{path}' holds files that are not plain data: {unsafe[:10]}; only "
            f"{sorted(SAFE_SUFFIXES)} files are read"
        )
    for rel, info in table.items():
        if not isinstance(info, dict) or info.get("size") != files[rel]:
            raise ModelFileError(
                f"model '{path}': '{rel}' is {files[rel]:,} bytes but the manifest says "
                f"{(info or {}).get('size')!r}; the file was changed or truncated"
            )
        if verify and info.get("sha256") != sha256(path / rel):
            raise ModelFileError(
                f"model '{path}': '{rel}' does not match the SHA-256 in the manifest; the file "
                "was changed after saving"
            )
    weights = {rel for rel in table if rel.endswith(".safetensors")}
    if set(manifest["tensors"]) != weights:
        raise ModelFileError(
            f"model '{path}': the manifest's tensor table names {sorted(manifest['tensors'])}, "
            f"the folder holds {sorted(weights)}"
        )
    for rel in sorted(weights):
        found = safetensors_header(path / rel, files[rel])
        expected = manifest["tensors"][rel]
        if found != expected:
            diff = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))[
                :5
            ]
            detail = [(k, expected.get(k), found.get(k)) for k in diff]
            raise ModelFileError(
                f"model '{path}': weights '{rel}' do not match the manifest (name, expected, "
                f"found): {detail}"
            )
