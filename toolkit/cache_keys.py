"""How the embedding cache keys items and encoders: content fingerprints of files and
folders, parameters stamped with the fingerprints of the files they name, and the code
identity of an encoder's classes. See :mod:`toolkit.cache` for what each fingerprint detects
and costs; :mod:`toolkit.cache` re-exports the public names."""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import stat
import sys
from pathlib import Path
from typing import Any

from toolkit._utils import is_missing

#: Bytes hashed at the start, middle and end of a file by the "sampled" fingerprint.
SAMPLE_BYTES = 64 * 1024
#: Most files fingerprinted inside one folder item or weights folder.
MAX_FOLDER_FILES = 100_000
#: The fingerprint choices (see :mod:`toolkit.cache` for their cost).
FINGERPRINTS = ("sampled", "full")

_READ_CHUNK = 1024 * 1024
_IGNORED_PARAMS = ("progress", "batch_size", "device", "n_jobs")
#: Version of the encoder keys' layout: 2 adds the backend's classes (toolkit.encoders.backends)
#: to the code identity. Entries written under another layout are never found (re-encoded).
KEY_VERSION = 2


def check_fingerprint(fingerprint) -> str:
    """Return ``fingerprint`` if it is one of :data:`FINGERPRINTS`, else raise ValueError."""
    if not isinstance(fingerprint, str) or fingerprint not in FINGERPRINTS:
        raise ValueError(
            f"fingerprint must be one of {list(FINGERPRINTS)}, got {fingerprint!r}: 'sampled' "
            "(stat + 3 x 64 KiB per file, the default) or 'full' (hash of every byte)"
        )
    return fingerprint


def check_limit(name: str, value) -> int:
    """Return ``value`` if it is a positive integer (not a bool), else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_limits(sample_bytes, max_folder_files) -> None:
    check_limit("sample_bytes", sample_bytes)
    check_limit("max_folder_files", max_folder_files)


# -- fingerprints ---------------------------------------------------------------------------


def _hash_file(path: Path, size: int, fingerprint: str, sample_bytes: int) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        if fingerprint == "full" or size <= 3 * sample_bytes:
            while chunk := fh.read(_READ_CHUNK):
                digest.update(chunk)
        else:
            for offset in (0, size // 2 - sample_bytes // 2, size - sample_bytes):
                fh.seek(offset)
                digest.update(fh.read(sample_bytes))
    return digest.hexdigest()


def _file_fingerprint(path: Path, fingerprint: str, sample_bytes: int) -> tuple:
    """A tuple that changes when the file at ``path`` changes (see :mod:`toolkit.cache`)."""
    try:
        st = os.stat(path)
    except OSError as exc:  # a broken link or a file removed meanwhile
        return ("unreadable", type(exc).__name__, os.path.islink(path) and os.readlink(path))
    if not stat.S_ISREG(st.st_mode):  # FIFO, device, socket: never opened
        return ("special", stat.S_IFMT(st.st_mode), st.st_dev, st.st_ino, st.st_rdev)
    try:
        content = _hash_file(path, st.st_size, fingerprint, sample_bytes)
    except OSError as exc:  # unreadable: the encoder's reader reports it
        content = ("unreadable", type(exc).__name__)
    if fingerprint == "full":
        return ("full", st.st_size, content)
    return ("sampled", st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, content)


def _folder_files(root: Path, max_files: int) -> list[tuple[str, Path]]:
    """(relative name, path) of every file under ``root``, sorted; symlinked folders are
    followed once each (no loops)."""
    found: list[tuple[str, Path]] = []
    visited: set[tuple[int, int]] = set()
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in visited:
            continue
        visited.add((st.st_dev, st.st_ino))
        with os.scandir(folder) as entries:
            for entry in entries:
                rel = f"{prefix}{entry.name}"
                if entry.is_dir(follow_symlinks=True):
                    stack.append((Path(entry.path), f"{rel}/"))
                    continue
                found.append((rel, Path(entry.path)))
                if len(found) > max_files:
                    raise ValueError(
                        f"folder '{root}' holds more than max_folder_files={max_files} files; "
                        "every file inside a folder is fingerprinted. Point the column at a "
                        "smaller folder, or raise the limit with max_folder_files=N (an "
                        "argument of EmbeddingCache and encode_manifest)"
                    )
    return sorted(found)


def fingerprint_path(
    path,
    *,
    fingerprint: str = "sampled",
    sample_bytes: int = SAMPLE_BYTES,
    max_folder_files: int = MAX_FOLDER_FILES,
) -> tuple:
    """Content fingerprint of an existing file or folder (a folder: every file inside it,
    recursively, with its name relative to the folder).

    Parameters
    ----------
    path : str or path
    fingerprint : {"sampled", "full"}, default="sampled"
        See :mod:`toolkit.cache` for what each detects and costs.
    sample_bytes : int, default=SAMPLE_BYTES (64 KiB)
    max_folder_files : int, default=MAX_FOLDER_FILES (100,000)

    Returns
    -------
    tuple, hashable with ``joblib.hash``
    """
    check_fingerprint(fingerprint)
    check_limits(sample_bytes, max_folder_files)
    path = Path(path)
    if path.is_dir():
        files = _folder_files(path, max_folder_files)
        return (
            "folder",
            [(rel, _file_fingerprint(p, fingerprint, sample_bytes)) for rel, p in files],
        )
    return ("file", _file_fingerprint(path, fingerprint, sample_bytes))


def _looks_like_path(text: str) -> bool:
    """Whether ``text`` names an existing file or folder. A name holding a newline or
    another control character is a path too when it exists (it was keyed as a plain value,
    and a changed file was then served stale); only what no file name can hold (a NUL, more
    than the OS's path limit) is ruled out without asking the file system."""
    return len(text) < 4096 and "\0" not in text and os.path.exists(text)


def path_fingerprint(path, **options) -> tuple:
    """:func:`fingerprint_path` of ``path`` and of every other file a reader reads for it
    (the companions of :func:`toolkit.io._paths.companion_files`, present or absent)."""
    from toolkit.io import companion_files

    own = fingerprint_path(path, **options)
    companions = companion_files(path)
    if not companions:
        return own
    return (
        own,
        "companions",
        [(c.name, fingerprint_path(c, **options)) for c in companions],
    )


def _hub_snapshot(repo_id: str, backend) -> Path | None:
    """The local snapshot folder a hub id resolves to, from the local cache only (the
    candidates ``backend.hub_candidates`` lists, in order)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    for candidate in backend.hub_candidates(repo_id):
        try:
            return Path(snapshot_download(candidate, local_files_only=True))
        except Exception:  # not cached, or not a valid id: the encoder reports it on loading
            continue
    return None


def _backend_of(encoder):
    """The backend object of an encoder with a backend registry, else None (also for a
    ``backend`` its registry does not hold: the encoder refuses that itself)."""
    backends = getattr(encoder, "backends", None)
    name = getattr(encoder, "backend", None)
    if backends is None or name not in backends:
        return None
    return backends.get(name)


def _model_stamp(params: dict, options: dict, where: str, backend=None):
    """The ``model`` parameter of a backend that may name a model (``backend.named_model``)
    keyed on the files it loads, or None when the ordinary stamping applies (see the module
    docstring)."""
    model = params.get("model")
    if backend is None or not backend.named_model:
        return None
    if model is None:
        # A backend's default model (e.g. the embed extra's MiniLM of the text encoders).
        try:
            location = backend.default_model()
        except ImportError:  # the embed extra is absent: the encoder cannot load it either
            return ("default model", None)
        if location is None:
            return None
        fp = fingerprint_path(location, **options)
        return ("default model", str(Path(location).resolve()), fp)
    if not isinstance(model, str | os.PathLike):
        return None
    text = os.fspath(model)
    expanded = os.path.expanduser(text)
    if _looks_like_path(expanded):
        try:
            return ("path", str(Path(expanded).resolve()), fingerprint_path(expanded, **options))
        except ValueError as exc:
            raise ValueError(f"encoder parameter '{where}': {exc}") from exc
    if text.startswith((".", "/", "~")):
        return None  # a missing folder: the encoder reports it
    snapshot = _hub_snapshot(text, backend)
    if snapshot is None:
        return ("hub id", text, "not in the local cache")
    return ("hub id", text, str(snapshot), fingerprint_path(snapshot, **options))


def _stamp_params(params: dict, options: dict, where: str, backend=None) -> dict:
    """An estimator's parameters stamped by :func:`_stamp` (``model`` by
    :func:`_model_stamp` where its ``backend`` may name a model)."""
    stamped = {}
    for k, v in sorted(params.items()):
        name = f"{where}.{k}" if where else k
        model = _model_stamp(params, options, name, backend) if k == "model" else None
        stamped[k] = model if model is not None else _stamp(v, options, name)
    return stamped


def _stamp(value, options: dict, where: str):
    """A parameter value with every existing file/folder it names replaced by its path and
    content fingerprint (nested lists, dicts and estimators included)."""
    if isinstance(value, str | os.PathLike) and _looks_like_path(os.fspath(value)):
        try:
            return ("path", str(Path(value).resolve()), fingerprint_path(value, **options))
        except ValueError as exc:
            raise ValueError(f"encoder parameter '{where}': {exc}") from exc
    if isinstance(value, list | tuple):
        return (
            type(value).__name__,
            [_stamp(v, options, f"{where}[{i}]") for i, v in enumerate(value)],
        )
    if isinstance(value, dict):
        return ("dict", [(k, _stamp(v, options, f"{where}[{k!r}]")) for k, v in value.items()])
    if hasattr(value, "get_params") and not isinstance(value, type):
        params = value.get_params(deep=False)
        return (
            "estimator",
            type(value).__module__,
            type(value).__qualname__,
            _stamp_params(params, options, where),
        )
    return value


@functools.lru_cache(maxsize=256)
def _code_identity(cls: type) -> tuple:
    """The package versions and source text of the classes an encoder is made of, so that
    an edited encoder (a new release, or a class changed in place) gets a new key."""
    parts = []
    for base in cls.__mro__:
        top = base.__module__.split(".")[0]
        if top in ("builtins", "abc", "typing", "sklearn"):
            continue
        try:
            source = hashlib.blake2b(inspect.getsource(base).encode(), digest_size=16).hexdigest()
        except (OSError, TypeError):  # defined interactively: no source to read
            source = None
        version = getattr(sys.modules.get(top), "__version__", None)
        parts.append((base.__module__, base.__qualname__, version, source))
    return tuple(parts)


def encoder_key(
    encoder,
    *,
    fingerprint: str = "sampled",
    sample_bytes: int = SAMPLE_BYTES,
    max_folder_files: int = MAX_FOLDER_FILES,
) -> str:
    """``<class name>-<hash>`` of an encoder's class (package versions and source text of
    the classes it is made of, and its ``features_version`` if it declares one) and
    parameters (less those that do not change the output, such as ``n_jobs``), with every
    weights file or folder a parameter names keyed on its content fingerprint, and a model
    named by hub id or left to its default keyed on the folder it resolves to (see
    :mod:`toolkit.cache`)."""

    options = {
        "fingerprint": fingerprint,
        "sample_bytes": sample_bytes,
        "max_folder_files": max_folder_files,
    }
    cls = type(encoder)
    kept = {k: v for k, v in encoder.get_params(deep=False).items() if k not in _IGNORED_PARAMS}
    backend = _backend_of(encoder)
    params = _stamp_params(kept, options, "", backend)
    # ``features_version``: an encoder's own version of what it computes, bumped when a
    # helper outside the class (e.g. a module-level feature function) changes its output.
    version = getattr(cls, "features_version", None)
    # The backend's classes are part of the code that computes the block.
    code = (_code_identity(cls), None if backend is None else _code_identity(type(backend)))
    identity = (KEY_VERSION, cls.__module__, cls.__qualname__, code, version, params)
    what = f"{cls.__name__}: one of its parameters"
    return f"{cls.__name__}-{_hash(identity, what, 'give it a plain value (path, number, string)')}"


def item_key(
    item: Any,
    *,
    fingerprint: str = "sampled",
    reads_paths: bool = True,
    sample_bytes: int = SAMPLE_BYTES,
    max_folder_files: int = MAX_FOLDER_FILES,
) -> str | None:
    """A content key for one raw item, or None if it is missing.

    A string naming an existing file or folder (when ``reads_paths``) is keyed on its
    absolute path and the content fingerprint of every file read for it
    (:func:`path_fingerprint`: the other half of an Analyze/NIfTI pair too); any other
    value on itself.
    """
    import joblib

    if is_missing(item):
        return None
    if reads_paths and isinstance(item, str | os.PathLike) and _looks_like_path(os.fspath(item)):
        fp = path_fingerprint(
            item,
            fingerprint=fingerprint,
            sample_bytes=sample_bytes,
            max_folder_files=max_folder_files,
        )
        return joblib.hash(("path", str(Path(item).resolve()), fp))
    return _hash(("value", item), f"a {type(item).__name__} item", "pass paths, arrays or bytes")


def _hash(value, what: str, fix: str) -> str:
    """``joblib.hash(value)``; a value that cannot be pickled (an open file, a lock, a
    generator) is a TypeError naming ``what`` and the fix, not pickle's raw message."""
    import pickle

    import joblib

    try:
        return joblib.hash(value)
    except (TypeError, AttributeError, pickle.PicklingError) as exc:
        raise TypeError(
            f"the embedding cache cannot key {what} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); {fix}, or turn the cache "
            "off with memory=None"
        ) from exc


def encoder_reads_paths(encoder) -> bool:
    """Whether the encoder reads string items as paths (every encoder but text ones)."""
    return bool(getattr(encoder, "reads_paths", getattr(encoder, "modality", None) != "text"))
