"""Per-item cache of the blocks of fixed encoders.

A *fixed* encoder's output for an item does not depend on the data it was fitted on
(feature extractors, pretrained networks), so its embedding of an item can be reused by
every later fit, fold and candidate. The cache keys each item on the encoder (class,
parameters, weights files' content fingerprints, and the package versions and source text
of the classes it is made of) plus the item itself: a string's text, an array's bytes,
and for a file or a folder (a DICOM series) its absolute path and a *content fingerprint*
of every file in it (with names relative to the folder), so a grid search or
cross-validation encodes each raw item once in all, whatever the splits, and an item whose
content changed is encoded again. (A change to code the encoder calls but is not made of,
such as a reader module, is not seen: clear the cache folder after editing one.)

Fingerprints
------------
``fingerprint="sampled"`` (default)
    For each file: its size, modification time, status-change time (ctime), inode and
    device, plus a hash of three blocks of ``sample_bytes`` (64 KiB: the first, the middle
    and the last; a file of at most 3 x 64 KiB is hashed whole). Cost: one ``stat`` and at
    most 192 KiB read per file, per call (well under a millisecond on a local disk); a
    folder item costs that for every file inside it. The kernel sets ctime on every write
    and it cannot be set from user space, so a file rewritten with its old size and
    modification time restored (``cp -p``, ``rsync -t``, ``tar``, ``os.utime``) gets a new
    key. What it can miss: a rewrite in place of bytes outside the sampled blocks on a
    filesystem that does not keep ctime (some FUSE and network mounts, FAT). A ``chmod``,
    ``touch`` or a copy of the data changes the key too (the item is encoded again, never
    served stale).
``fingerprint="full"``
    For each file: its size and a hash of its whole content. Cost: every byte of every
    item and weights file is read at every call (at disk speed, e.g. about 1 s per GB),
    each time an estimator with the cache is fitted or predicts. Detects every change of
    content whatever the filesystem, and ignores metadata (a ``touch`` or a restored backup
    of identical content keeps the key).

Items are told from paths by what the encoder reads: a string that names an existing file
or folder is fingerprinted for every encoder except text encoders (whose items are text).
A file item is keyed on every file the readers read for it: half of an Analyze/NIfTI pair
(``v.hdr``, ``v.img``, ``v.hdr.gz``, ...) also on the other half and on an SPM ``v.mat``
(present or absent; see :func:`toolkit.io._paths.companion_files`), so replacing ``v.img``
while ``v.hdr`` is untouched gives a new key (in :func:`toolkit.distributed.encode_manifest`
too). Files that are not regular (FIFOs, devices, sockets) are never opened: they are keyed
on their type and inode, and left to the encoder's reader to refuse.

Models named rather than given as files are keyed on the files they load (the backends
that declare ``named_model``, see :mod:`toolkit.encoders.backends`: ``"transformers"`` and
``"sentence-transformers"``): ``model=None`` of a text encoder's
transformers or sentence-transformers backend on the folder of the ``embed`` extra's default model (so an
upgrade of that package gives a new key), and a hub id on the local snapshot folder it
resolves to (``huggingface_hub.snapshot_download(local_files_only=True)``, which reads only
the local cache, never the network; each id the backend's ``hub_candidates`` lists, e.g. a
sentence-transformers id without ``/`` with the ``sentence-transformers/`` prefix too, as
that library does). Caveat: a hub id that is
not in the local cache is keyed on the id alone; the encoder cannot load it offline anyway,
and once it is cached the key becomes the snapshot's.

Limits
------
``sample_bytes`` (module constant :data:`SAMPLE_BYTES`, 64 KiB)
    Bytes hashed at each of the three places of a file by the sampled fingerprint.
``max_folder_files`` (module constant :data:`MAX_FOLDER_FILES`, 100,000)
    Files inside one folder item or weights folder; a folder holding more is refused with
    an error naming it (pass a larger ``max_folder_files`` to accept it).

Shards
------
Entries are stored as uncompressed ``.npz`` shards (no pickles) under
``location/<encoder key>/``; each call that encodes new items adds one shard, written to a
temporary name and renamed, so concurrent processes never write the same file. A shard is
checked before any of its entries is served: it must be a regular file holding exactly
``keys`` (1-D strings, unique) and ``values`` (2-D float32, one row per key, all finite,
as wide as the encoder's output), with array headers that match the bytes stored. A shard
that fails is never served: a :class:`CacheShardWarning` names it, it is renamed to
``<name>.rejected`` (when the folder is writable) and its items are encoded again.
Entries of different widths for one encoder are never mixed: shards as wide as the
fitted encoder's ``n_features_out_`` are served, others are rejected. Without loading the
encoder, that width is read from the ``width`` file that a process with the encoder loaded
wrote beside the shards; when it is missing or unreadable, the encoder is loaded to decide.

The checks detect faults (a disk full or a kill mid-copy, a truncated sync, a bug, an
edited encoder); they are not a signature: whoever can write the cache folder can make it
serve what they want, so keep it where only you can write.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
import os
import stat
import sys
import uuid
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from toolkit._utils import is_missing

#: Bytes hashed at the start, middle and end of a file by the "sampled" fingerprint.
SAMPLE_BYTES = 64 * 1024
#: Most files fingerprinted inside one folder item or weights folder.
MAX_FOLDER_FILES = 100_000
#: The fingerprint choices (see the module docstring for their cost).
FINGERPRINTS = ("sampled", "full")

_READ_CHUNK = 1024 * 1024
#: Beside an encoder's shards: the width of its entries, written by a process that had the
#: encoder loaded.
WIDTH_FILE = "width"
_IGNORED_PARAMS = ("progress", "batch_size", "device", "n_jobs")
#: Version of the encoder keys' layout: 2 adds the backend's classes (toolkit.encoders.backends)
#: to the code identity. Entries written under another layout are never found (re-encoded).
KEY_VERSION = 2


class CacheShardWarning(UserWarning):
    """A cache shard failed its checks: it was set aside and its items are encoded again."""


def ensure_fitted(encoder, items):
    """Fit a fixed encoder on ``items`` unless it is fitted already; return it."""
    if not hasattr(encoder, "n_features_out_"):
        encoder.fit(items)
    return encoder


def as_cache(memory) -> EmbeddingCache | None:
    """None, a folder, a ``joblib.Memory`` or an EmbeddingCache -> EmbeddingCache or None.

    A folder gets the default (sampled) fingerprint; pass
    ``EmbeddingCache(folder, fingerprint="full")`` as ``memory`` for a full-content hash.
    """
    if memory is None or isinstance(memory, EmbeddingCache):
        return memory
    if isinstance(memory, str | os.PathLike):
        return EmbeddingCache(memory)
    location = getattr(memory, "location", None)
    if location is None:
        return None
    return EmbeddingCache(Path(location) / "toolkit_embeddings")


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


def _check_limits(sample_bytes, max_folder_files) -> None:
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
    """A tuple that changes when the file at ``path`` changes (see the module docstring)."""
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
        See the module docstring for what each detects and costs.
    sample_bytes : int, default=SAMPLE_BYTES (64 KiB)
    max_folder_files : int, default=MAX_FOLDER_FILES (100,000)

    Returns
    -------
    tuple, hashable with ``joblib.hash``
    """
    check_fingerprint(fingerprint)
    _check_limits(sample_bytes, max_folder_files)
    path = Path(path)
    if path.is_dir():
        files = _folder_files(path, max_folder_files)
        return (
            "folder",
            [(rel, _file_fingerprint(p, fingerprint, sample_bytes)) for rel, p in files],
        )
    return ("file", _file_fingerprint(path, fingerprint, sample_bytes))


def _looks_like_path(text: str) -> bool:
    return len(text) < 4096 and "\n" not in text and "\0" not in text and os.path.exists(text)


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
    named by hub id or left to its default keyed on the folder it resolves to (see the
    module docstring)."""
    import joblib

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
    return f"{cls.__name__}-{joblib.hash(identity)}"


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
    return joblib.hash(("value", item))


def encoder_reads_paths(encoder) -> bool:
    """Whether the encoder reads string items as paths (every encoder but text ones)."""
    return bool(getattr(encoder, "reads_paths", getattr(encoder, "modality", None) != "text"))


# -- shards ---------------------------------------------------------------------------------


def read_npz(path, *, what: str = "shard") -> dict[str, np.ndarray]:
    """The arrays of an uncompressed, pickle-free ``.npz`` file, read with memory bounded
    by the file's size. Raises ValueError naming the file for anything else (not a regular
    file, not a zip, compressed or non-``.npy`` members, object arrays, headers that do not
    match the bytes stored, CRC errors)."""
    path = Path(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("it is not a regular file")
        arrays = {}
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if len(set(names)) != len(names):
                raise ValueError("it holds duplicate members")
            for info in zf.infolist():
                if not info.filename.endswith(".npy") or info.compress_type != zipfile.ZIP_STORED:
                    raise ValueError(f"member '{info.filename}' is not an uncompressed .npy")
                arrays[info.filename[:-4]] = _read_npy(zf, info)
        return arrays
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{what} '{path}' cannot be read ({type(exc).__name__}: {exc})") from exc


def _read_npy(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    from numpy.lib import format as npy

    with zf.open(info) as fh:
        version = npy.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(fh)
        else:
            raise ValueError(f"member '{info.filename}' has unsupported .npy version {version}")
        if dtype.hasobject:
            raise ValueError(f"member '{info.filename}' holds Python objects")
        nbytes = math.prod(shape) * dtype.itemsize
        left = info.file_size - fh.tell()
        if nbytes != left:
            raise ValueError(
                f"member '{info.filename}' declares {shape} {dtype} ({nbytes} bytes) but "
                f"stores {left} bytes"
            )
        data = fh.read(nbytes + 1)  # to the end, so that the zip's CRC is checked
        if len(data) != nbytes:
            raise ValueError(f"member '{info.filename}' is truncated")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def set_aside(path: Path) -> str:
    """Rename a rejected shard to ``<name>.rejected``; say what happened, for a warning."""
    try:
        os.replace(path, path.with_name(path.name + ".rejected"))
    except OSError as exc:
        return f"it could not be set aside ({type(exc).__name__}); it is ignored"
    return f"it was renamed to '{path.name}.rejected'"


def _check_cache_shard(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(keys, values) of a valid cache shard, or ValueError saying what is wrong."""
    arrays = read_npz(path)
    if set(arrays) != {"keys", "values"}:
        raise ValueError(f"it holds {sorted(arrays)}, expected ['keys', 'values']")
    keys, values = arrays["keys"], arrays["values"]
    if keys.ndim != 1 or keys.dtype.kind != "U":
        raise ValueError(f"keys are {keys.dtype} of shape {keys.shape}, expected 1-D strings")
    if values.dtype != np.float32 or values.ndim != 2 or values.shape[1] < 1:
        raise ValueError(f"values are {values.dtype} of shape {values.shape}, expected 2-D float32")
    if len(keys) != len(values):
        raise ValueError(f"it holds {len(keys)} keys but {len(values)} rows of values")
    if len(np.unique(keys)) != len(keys):
        raise ValueError("it holds duplicate keys")
    if not np.isfinite(values).all():
        raise ValueError("it holds non-finite values (NaN or infinity)")
    return keys, values


class EmbeddingCache:
    """Per-item store of fixed encoders' embeddings (see the module docstring).

    Parameters
    ----------
    location : str or path
        Folder for the shards (created when missing).
    fingerprint : {"sampled", "full"}, default="sampled"
        How files and folders (items and encoders' weights) are keyed: ``"sampled"`` (stat
        data plus a hash of three 64 KiB blocks per file) or ``"full"`` (a hash of every
        byte, read at every call). See the module docstring for what each detects and costs.
    sample_bytes : int, default=SAMPLE_BYTES (64 KiB)
        Bytes hashed at each of the three places of a file by the sampled fingerprint.
    max_folder_files : int, default=MAX_FOLDER_FILES (100,000)
        Most files inside one folder item or weights folder; more is an error.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from toolkit import ImageEncoder
    >>> cache = EmbeddingCache(tempfile.mkdtemp(), fingerprint="full")
    >>> block, present = cache.encode(ImageEncoder(pixel_size=4), [np.eye(4), None])
    >>> block.shape, present.tolist()
    ((2, 187), [True, False])
    """

    def __init__(
        self,
        location,
        fingerprint: str = "sampled",
        *,
        sample_bytes: int = SAMPLE_BYTES,
        max_folder_files: int = MAX_FOLDER_FILES,
    ):
        check_fingerprint(fingerprint)
        _check_limits(sample_bytes, max_folder_files)
        self.location = Path(location)
        self.fingerprint = fingerprint
        self.sample_bytes = sample_bytes
        self.max_folder_files = max_folder_files
        # Valid shards read so far: encoder key -> shard name -> (keys, values).
        self._shards: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        self._seen_shards: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.location)!r}, fingerprint={self.fingerprint!r})"

    def _options(self) -> dict:
        return {
            "fingerprint": self.fingerprint,
            "sample_bytes": self.sample_bytes,
            "max_folder_files": self.max_folder_files,
        }

    def _reject(self, ekey: str, name: str, reason: str) -> None:
        path = self.location / ekey / name
        outcome = set_aside(path) if path.exists() else "it is ignored"
        warnings.warn(
            f"embedding cache shard '{path}' is not used: {reason}; {outcome}, and its items "
            "are encoded again",
            CacheShardWarning,
            stacklevel=3,
        )
        self._shards.get(ekey, {}).pop(name, None)

    def _recorded_width(self, ekey: str) -> int | None:
        """The width recorded beside the shards by a process that had the encoder loaded."""
        path = self.location / ekey / WIDTH_FILE
        try:
            text = path.read_text(encoding="ascii") if path.is_file() else None
        except (OSError, UnicodeDecodeError):
            text = ""
        if text is None:
            return None
        if text.strip().isdigit() and 0 < int(text) < 2**31:
            return int(text)
        warnings.warn(
            f"embedding cache width record '{path}' is not a positive integer ({text[:20]!r}); "
            "the encoder is loaded to tell which shards are valid",
            CacheShardWarning,
            stacklevel=3,
        )
        return None

    def _load(self, ekey: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        shards = self._shards.setdefault(ekey, {})
        seen = self._seen_shards.setdefault(ekey, set())
        folder = self.location / ekey
        if folder.is_dir():
            for shard in sorted(folder.glob("*.npz")):
                if shard.name in seen:
                    continue
                seen.add(shard.name)
                try:
                    shards[shard.name] = _check_cache_shard(shard)
                except ValueError as exc:
                    self._reject(ekey, shard.name, str(exc))
        return shards

    def _save(self, ekey: str, keys: list[str], values: np.ndarray) -> None:
        folder = self.location / ekey
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{uuid.uuid4().hex}.npz"
        tmp = folder / f".{name}.tmp"
        keys_arr, values = np.asarray(keys, dtype=str), np.asarray(values, dtype=np.float32)
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=keys_arr, values=values)
        tmp.replace(folder / name)
        if self._recorded_width(ekey) != values.shape[1]:
            tmp = folder / f".{name}.width.tmp"
            tmp.write_text(str(values.shape[1]), encoding="ascii")
            tmp.replace(folder / WIDTH_FILE)
        self._seen_shards.setdefault(ekey, set()).add(name)
        self._shards.setdefault(ekey, {})[name] = (keys_arr, values)

    def _store(self, ekey: str, width: int | None) -> dict[str, np.ndarray]:
        """Entries of the shards of width ``width``; shards of other widths are rejected."""
        store: dict[str, np.ndarray] = {}
        for name, (keys, values) in list(self._shards.get(ekey, {}).items()):
            if width is not None and values.shape[1] != width:
                self._reject(
                    ekey, name, f"its entries are {values.shape[1]} wide, the encoder's {width}"
                )
                continue
            for k, v in zip(keys.tolist(), values, strict=True):
                store.setdefault(k, v)
        return store

    def _item_keys(self, encoder, values: list, items) -> list[str | None]:
        paths = encoder_reads_paths(encoder)
        keys = []
        for i, it in enumerate(values):
            try:
                keys.append(item_key(it, reads_paths=paths, **self._options()))
            except ValueError as exc:
                label = items.index[i] if hasattr(items, "iloc") else i
                column = getattr(items, "name", None)
                where = f"row {label!r}" + (f" of column {column!r}" if column is not None else "")
                raise ValueError(f"{where}: {exc}") from exc
        return keys

    @staticmethod
    def _todo(keys: list[str | None], store: dict) -> list[int]:
        """Positions of the first occurrence of each present key not in ``store``."""
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k is not None and k not in store:
                first.setdefault(k, i)
        return list(first.values())

    @staticmethod
    def _subset(items, values: list, rows: list[int]):
        return items.iloc[rows] if hasattr(items, "iloc") else [values[i] for i in rows]

    def encode(self, encoder, items) -> tuple[np.ndarray, np.ndarray]:
        """``encoder.encode(items)`` for a fixed encoder, encoding only the new items.

        ``items`` is a list or a pandas Series (whose name and index then appear in error
        messages). The encoder is fitted (which, for a fixed encoder, only loads its model)
        when it has new items to encode and is not fitted yet, or when stored shards of
        different widths must be told apart.

        Returns
        -------
        block : ndarray of shape (n_items, n_features_out), float32
            NaN rows where an item is missing.
        available : ndarray of shape (n_items,), bool
        """
        ekey = encoder_key(encoder, **self._options())
        shards = self._load(ekey)
        values = list(items)
        keys = self._item_keys(encoder, values, items)
        if hasattr(encoder, "n_features_out_"):
            width = encoder.n_features_out_
        else:
            width = self._recorded_width(ekey)
            if width is None and shards:  # no record of the width: load the encoder to decide
                width = ensure_fitted(encoder, values).n_features_out_
        store = self._store(ekey, width)
        todo = self._todo(keys, store)
        if todo:
            ensure_fitted(encoder, self._subset(items, values, todo))
            if width != encoder.n_features_out_:  # the stored width was not the encoder's
                width = encoder.n_features_out_
                store = self._store(ekey, width)
                todo = self._todo(keys, store)
        if todo:
            block, present = encoder.encode(self._subset(items, values, todo))
            block, present = np.asarray(block, dtype=np.float32), np.asarray(present, dtype=bool)
            if block.shape != (len(todo), width):
                raise ValueError(
                    f"{type(encoder).__name__} returned a block of shape {block.shape} for "
                    f"{len(todo)} items but declares n_features_out_={width}; nothing was cached"
                )
            if not np.isfinite(block[present]).all():
                raise ValueError(
                    f"{type(encoder).__name__} returned non-finite values for available items; "
                    "nothing was cached"
                )
            new_keys = [keys[i] for i, ok in zip(todo, present, strict=True) if ok]
            for k, v in zip(new_keys, block[present], strict=True):
                store[k] = v
            if new_keys:
                self._save(ekey, new_keys, block[present])
        if width is None:
            width = ensure_fitted(encoder, values).n_features_out_
        n = len(values)
        out = np.full((n, width), np.nan, dtype=np.float32)
        available = np.zeros(n, dtype=bool)
        for i, k in enumerate(keys):
            if k is not None and k in store:
                out[i] = store[k]
                available[i] = True
        return out, available
