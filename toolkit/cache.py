"""Per-item cache of the blocks of fixed encoders.

A *fixed* encoder's output for an item does not depend on the data it was fitted on
(feature extractors, pretrained networks), so its embedding of an item can be reused by
every later fit, fold and candidate. The cache keys each item on the encoder's class
and parameters plus the item itself (a string's text, a file's absolute path, size and
modification time, an array's bytes), so a grid search or cross-validation encodes each
raw item once in all, whatever the splits.

Entries are stored as ``.npz`` shards (no pickles) under
``location/<encoder key>/``; each call that encodes new items adds one shard, so
concurrent processes never write the same file.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from toolkit._utils import is_missing


def ensure_fitted(encoder, items):
    """Fit a fixed encoder on ``items`` unless it is fitted already; return it."""
    if not hasattr(encoder, "n_features_out_"):
        encoder.fit(items)
    return encoder


def as_cache(memory) -> EmbeddingCache | None:
    """None, a folder, a ``joblib.Memory`` or an EmbeddingCache -> EmbeddingCache or None."""
    if memory is None or isinstance(memory, EmbeddingCache):
        return memory
    if isinstance(memory, str | os.PathLike):
        return EmbeddingCache(memory)
    location = getattr(memory, "location", None)
    if location is None:
        return None
    return EmbeddingCache(Path(location) / "toolkit_embeddings")


def _file_stamp(value):
    """(path, size, mtime) for a parameter naming an existing file or folder, else the value."""
    if isinstance(value, str | os.PathLike) and _looks_like_path(str(value)):
        path = Path(value)
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        return (
            str(path.resolve()),
            [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files],
        )
    return value


def _encoder_key(encoder) -> str:
    """Encoder class + parameters (weights files by path, size and modification time)."""
    import joblib

    ignored = ("progress", "batch_size", "device")
    params = {
        k: _file_stamp(v) for k, v in encoder.get_params(deep=False).items() if k not in ignored
    }
    return f"{type(encoder).__name__}-{joblib.hash((type(encoder).__module__, type(encoder).__qualname__, params))}"


def item_key(item: Any) -> str | None:
    """A content key for one raw item (a file by path, size and mtime), or None if missing."""
    import joblib

    if is_missing(item):
        return None
    if isinstance(item, str | os.PathLike) and _looks_like_path(str(item)):
        path = Path(item)
        stat = path.stat()
        return joblib.hash(("path", str(path.resolve()), stat.st_size, stat.st_mtime_ns))
    return joblib.hash(("value", item))


def _looks_like_path(text: str) -> bool:
    return len(text) < 4096 and "\n" not in text and os.path.exists(text)


class EmbeddingCache:
    """Per-item store of fixed encoders' embeddings (see the module docstring).

    Parameters
    ----------
    location : str or path
        Folder for the shards (created when missing).
    """

    def __init__(self, location):
        self.location = Path(location)
        self._memory: dict[str, dict[str, np.ndarray]] = {}
        self._seen_shards: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.location)!r})"

    def _load(self, ekey: str) -> dict[str, np.ndarray]:
        store = self._memory.setdefault(ekey, {})
        seen = self._seen_shards.setdefault(ekey, set())
        folder = self.location / ekey
        if folder.is_dir():
            for shard in sorted(folder.glob("*.npz")):
                if shard.name in seen:
                    continue
                with np.load(shard, allow_pickle=False) as data:
                    for k, v in zip(data["keys"], data["values"], strict=True):
                        store[str(k)] = v
                seen.add(shard.name)
        return store

    def _save(self, ekey: str, keys: list[str], values: np.ndarray) -> None:
        folder = self.location / ekey
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{uuid.uuid4().hex}.npz"
        tmp = folder / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=np.asarray(keys), values=values)
        tmp.replace(folder / name)
        self._seen_shards.setdefault(ekey, set()).add(name)

    def encode(self, encoder, items) -> tuple[np.ndarray, np.ndarray]:
        """``encoder.encode(items)`` for a fixed encoder, encoding only the new items.

        ``items`` is a list or a pandas Series (whose name and index then appear in error
        messages). The encoder is fitted (which, for a fixed encoder, only loads its model)
        when it has new items to encode and is not fitted yet.
        """
        ekey = _encoder_key(encoder)
        store = self._load(ekey)
        values = list(items)
        keys = [item_key(it) for it in values]
        todo = [i for i, k in enumerate(keys) if k is not None and k not in store]
        if todo:
            subset = items.iloc[todo] if hasattr(items, "iloc") else [values[i] for i in todo]
            ensure_fitted(encoder, subset)
            block, present = encoder.encode(subset)
            new_keys = [keys[i] for i, ok in zip(todo, present, strict=True) if ok]
            if new_keys:
                new_values = block[present]
                for k, v in zip(new_keys, new_values, strict=True):
                    store[k] = v
                self._save(ekey, new_keys, new_values)
        n = len(values)
        width = (
            next(iter(store.values())).shape[0]
            if store
            else ensure_fitted(encoder, values).n_features_out_
        )
        out = np.full((n, width), np.nan, dtype=np.float32)
        available = np.zeros(n, dtype=bool)
        for i, k in enumerate(keys):
            if k is not None and k in store:
                out[i] = store[k]
                available[i] = True
        return out, available
