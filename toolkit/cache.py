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
That record is ``os.stat``-ed and read up to :data:`MAX_WIDTH_BYTES` bytes: a larger (or
sparse, or special) file is a miss with a :class:`CacheShardWarning`, never read whole.

The cache folder (``memory=``) must be a non-blank path without control characters (``""``
would cache into the working folder). An item string that names an existing file is keyed
on that file whatever characters it holds (a newline included). OS errors while writing
(a full disk, a file where a folder should be), items or parameters that cannot be pickled
for their key, and a shard too large for memory are reported in one line naming the file or
row and what to do.

The checks detect faults (a disk full or a kill mid-copy, a truncated sync, a bug, an
edited encoder); they are not a signature: whoever can write the cache folder can make it
serve what they want, so keep it where only you can write.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import uuid
import warnings
import zipfile
from pathlib import Path

import numpy as np

from toolkit.cache_keys import (
    FINGERPRINTS,
    KEY_VERSION,
    MAX_FOLDER_FILES,
    SAMPLE_BYTES,
    check_fingerprint,
    check_limit,
    check_limits,
    encoder_key,
    encoder_reads_paths,
    fingerprint_path,
    item_key,
    path_fingerprint,
)

__all__ = [
    "FINGERPRINTS",
    "KEY_VERSION",
    "MAX_FOLDER_FILES",
    "SAMPLE_BYTES",
    "WIDTH_FILE",
    "CacheShardWarning",
    "EmbeddingCache",
    "as_cache",
    "check_fingerprint",
    "check_limit",
    "encoder_key",
    "encoder_reads_paths",
    "ensure_fitted",
    "fingerprint_path",
    "item_key",
    "path_fingerprint",
    "read_npz",
    "set_aside",
]

#: Beside an encoder's shards: the width of its entries, written by a process that had the
#: encoder loaded.
WIDTH_FILE = "width"
#: Most bytes read from a width record (a positive int32 in ASCII, with a newline).
MAX_WIDTH_BYTES = 16


class CacheShardWarning(UserWarning):
    """A cache shard failed its checks: it was set aside and its items are encoded again."""


def _cache_error(exc: OSError, path: Path, action: str) -> OSError:
    """One line for an OS error met while the cache reads or writes ``path``: the file,
    the cause (errno's words, not its number) and what to do."""
    cause = exc.strerror or type(exc).__name__
    return type(exc)(
        f"the embedding cache could not {action} '{path}' ({cause}); free disk space or fix "
        "the folder's permissions, point memory= at another folder, or pass memory=None to "
        "run without a cache"
    )


def check_location(location) -> Path:
    """``location`` as a Path: a non-blank path without control characters (``""`` would
    cache into the working folder, a name holding a newline is almost always a mistake)."""
    if not isinstance(location, str | os.PathLike):
        raise TypeError(
            f"the embedding cache location must be a folder path, got {type(location).__name__}"
        )
    text = os.fspath(location)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text.strip():
        raise ValueError(
            f"the embedding cache location is blank ({text!r}), which would cache into the "
            f"working folder '{Path.cwd()}'; pass memory='<cache folder>' (e.g. "
            "'~/.cache/toolkit'), or memory=None for no cache"
        )
    bad = next((c for c in text if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise ValueError(
            f"the embedding cache location {text!r} holds the control character {bad!r}; "
            "pass a folder path without control characters"
        )
    return Path(text).expanduser()


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
    if not hasattr(memory, "location"):
        raise TypeError(
            f"memory must be None, a folder path, a joblib.Memory or an EmbeddingCache, got "
            f"{type(memory).__name__} {memory!r:.60}; pass memory='<cache folder>' or None"
        )
    location = memory.location
    if location is None:  # joblib.Memory(None): caching turned off
        return None
    return EmbeddingCache(Path(location) / "toolkit_embeddings")


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
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, KeyError, TypeError) as exc:
        raise ValueError(f"{what} '{path}' cannot be read ({type(exc).__name__}: {exc})") from exc
    except MemoryError as exc:
        raise MemoryError(
            f"{what} '{path}' does not fit in memory ({path.stat().st_size:,} bytes on disk); "
            "free memory, or delete the file (its items are encoded again)"
        ) from exc


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
        check_limits(sample_bytes, max_folder_files)
        self.location = check_location(location)
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
            st = os.stat(path)
        except OSError:  # none recorded yet (or unreachable): the encoder decides
            return None
        try:
            if not stat.S_ISREG(st.st_mode):
                raise ValueError("it is not a regular file")
            if st.st_size > MAX_WIDTH_BYTES:  # read no more than a width can take
                raise ValueError(
                    f"it holds {st.st_size:,} bytes, more than the {MAX_WIDTH_BYTES} a width "
                    "record takes"
                )
            with open(path, "rb") as fh:
                text = fh.read(MAX_WIDTH_BYTES + 1).decode("ascii")
            if not (text.strip().isdigit() and 0 < int(text) < 2**31):
                raise ValueError(f"it is not a positive integer ({text[:20]!r})")
            return int(text)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            reason = exc if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        warnings.warn(
            f"embedding cache width record '{path}' is not used ({reason}); the encoder is "
            "loaded to tell which shards are valid (delete the file, or clear the cache "
            f"folder '{self.location}', to silence this)",
            CacheShardWarning,
            stacklevel=3,
        )
        return None

    def _load(self, ekey: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        shards = self._shards.setdefault(ekey, {})
        seen = self._seen_shards.setdefault(ekey, set())
        folder = self.location / ekey
        if folder.is_dir():
            try:
                found = sorted(folder.glob("*.npz"))
            except OSError as exc:
                raise _cache_error(exc, folder, "list") from exc
            for shard in found:
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
        name = f"{uuid.uuid4().hex}.npz"
        keys_arr, values = np.asarray(keys, dtype=str), np.asarray(values, dtype=np.float32)
        tmp = folder / f".{name}.tmp"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                np.savez(fh, keys=keys_arr, values=values)
            tmp.replace(folder / name)
            if self._recorded_width(ekey) != values.shape[1]:
                tmp = folder / f".{name}.width.tmp"
                tmp.write_text(str(values.shape[1]), encoding="ascii")
                tmp.replace(folder / WIDTH_FILE)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise _cache_error(exc, tmp if tmp.parent.is_dir() else folder, "write") from exc
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
            except (ValueError, TypeError) as exc:
                label = items.index[i] if hasattr(items, "iloc") else i
                column = getattr(items, "name", None)
                where = f"row {label!r}" + (f" of column {column!r}" if column is not None else "")
                raise type(exc)(f"{where}: {exc}") from exc
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
