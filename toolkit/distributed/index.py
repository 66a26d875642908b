"""``index.json``: the job's identity (row ids, partition size, modalities, columns, encoder
keys, fingerprint choice), partition fingerprints, and the bounded reading and comparison of
an index already in a folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from toolkit.cache import encoder_key, encoder_reads_paths, item_key

#: Format of the ``index.json`` written by :func:`encode_manifest`.
INDEX_VERSION = 2


#: Largest ``index.json`` read, in bytes (``max_index_bytes`` of :func:`load_embeddings` and
#: :func:`encode_manifest`); an index takes about 200 bytes per partition.
MAX_INDEX_BYTES = 64 * 2**20


#: Deepest nesting of lists and objects accepted in ``index.json`` (the index nests 4).
MAX_INDEX_DEPTH = 16


def _index_depth(value) -> int:
    """Nesting depth of parsed JSON, computed without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if deepest > MAX_INDEX_DEPTH:
                return deepest
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _encoder_identity(enc, fingerprint: str) -> str:
    """Class + parameters key (weights by content); for an encoder fitted on a sample, also
    a hash of its fitted state."""
    key = encoder_key(enc, fingerprint=fingerprint)
    if not getattr(enc, "fixed", False):
        key = f"{key}-fitted-{joblib.hash(enc)}"
    return key


def _job_identity(modalities, ids: np.ndarray, partition_size: int, fingerprint: str) -> dict:
    return {
        "rows": {
            "n_rows": int(len(ids)),
            "ids": joblib.hash(ids),
            "id_dtype": ids.dtype.str,
            "partition_size": int(partition_size),
        },
        "modalities": [m for m, _, _ in modalities],
        "columns": {m: list(c) if isinstance(c, list | tuple) else c for m, _, c in modalities},
        "encoders": {m: _encoder_identity(e, fingerprint) for m, e, _ in modalities},
        "fingerprint": fingerprint,
    }


def _cells_key(frame: pd.DataFrame, enc, cols, fingerprint: str, max_folder_files: int) -> str:
    """Content key of one modality's cells in a partition (files by content fingerprint)."""
    if isinstance(cols, list | tuple):
        return joblib.hash([(c, frame[c].to_numpy()) for c in cols])
    paths = encoder_reads_paths(enc)
    keys = []
    for label, item in zip(frame.index, frame[cols], strict=True):
        try:
            keys.append(
                item_key(
                    item,
                    fingerprint=fingerprint,
                    reads_paths=paths,
                    max_folder_files=max_folder_files,
                )
            )
        except ValueError as exc:
            raise ValueError(f"row {label!r} of column {cols!r}: {exc}") from exc
    return joblib.hash(keys)


def _partition_fingerprint(frame, modalities, rid, encoders: dict, fingerprint, max_files):
    cells = [_cells_key(frame, enc, cols, fingerprint, max_files) for _, enc, cols in modalities]
    return joblib.hash((encoders, fingerprint, rid, cells))


def _read_index(out_dir: Path, max_index_bytes: int = MAX_INDEX_BYTES) -> dict:
    path = out_dir / "index.json"
    advice = (
        "the shards beside it cannot be trusted: write into another folder (or delete this one "
        "to start over)"
    )
    try:
        size = os.stat(path).st_size
        if size <= max_index_bytes:
            with open(path, encoding="utf-8") as fh:
                index = json.loads(fh.read(max_index_bytes + 1))
    except RecursionError:
        raise ValueError(f"'{path}' nests lists or objects too deeply to parse; {advice}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"'{path}' cannot be read ({type(exc).__name__}: {exc}); {advice}"
        ) from exc
    if size > max_index_bytes:
        raise ValueError(
            f"'{path}' is {size:,} bytes, above the max_index_bytes={max_index_bytes:,} limit "
            f"(an index takes about 200 bytes per partition); {advice}, or raise max_index_bytes"
        )
    depth = _index_depth(index)
    if depth > MAX_INDEX_DEPTH:
        raise ValueError(
            f"'{path}' nests lists or objects more than {MAX_INDEX_DEPTH} deep (an index nests "
            f"4); it was not written by encode_manifest: {advice}"
        )
    if not isinstance(index, dict) or index.get("version") != INDEX_VERSION:
        raise ValueError(
            f"'{path}' is not an index of this toolkit version (format {INDEX_VERSION}) and "
            "records no fingerprint; write into another folder (or delete this one and encode "
            "again)"
        )
    return index


def _write_index(out_dir: Path, index: dict) -> Path:
    path = out_dir / "index.json"
    tmp = out_dir / f".index.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(index, indent=2), encoding="utf-8")
    tmp.replace(path)
    return path


_WHAT = {
    "rows": "another frame",
    "modalities": "other modalities",
    "columns": "other columns",
    "fingerprint": "another fingerprint choice",
    "encoders": "other encoders, encoder parameters or weights",
}


def _difference(part: str, old, new) -> str:
    """What differs between the index's identity ``old`` and this job's ``new``."""
    if part == "rows" and isinstance(old, dict):
        diff = [k for k in new if old.get(k) != new[k]]
        return ", ".join(
            "the row id values" if k == "ids" else f"{k} (index {old.get(k)!r}, now {new[k]!r})"
            for k in diff
        )
    if part in ("columns", "encoders") and isinstance(old, dict):
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return f"{part} of modalities {diff}"
    return f"{part} (index {old!r}, now {new!r})"


def _check_same_job(out_dir: Path, identity: dict, max_index_bytes: int) -> None:
    """Refuse a folder holding shards of another job; allow one without shards (an index
    left by a run that failed before writing any is replaced) or the same job."""
    shards = sorted(p.name for p in out_dir.glob("part-*.npz"))
    if not shards:
        return
    if not (out_dir / "index.json").exists():
        raise ValueError(
            f"'{out_dir}' holds shards {shards[:3]} but no index.json, so what they hold "
            "cannot be checked; write into another folder (or delete those shards)"
        )
    index = _read_index(out_dir, max_index_bytes)
    stored = index.get("identity")
    stored = stored if isinstance(stored, dict) else {}
    for part, what in _WHAT.items():
        if stored.get(part) != identity[part]:
            raise ValueError(
                f"'{out_dir}' holds embeddings of {what} (differing: "
                f"{_difference(part, stored.get(part), identity[part])}). Encode into another "
                "folder, or re-run with the arguments that wrote it to resume"
            )


def _index_fields(index: dict, path: Path):
    """(identity, modality names, widths, partitions) of a complete index, checked for shape."""
    try:
        identity, names, widths = index["identity"], index["modalities"], index["widths"]
        partitions = index["partitions"]
        ok = (
            isinstance(names, list)
            and names
            and all(isinstance(m, str) for m in names)
            and isinstance(widths, dict)
            and set(widths) == set(names)
            and isinstance(identity["rows"]["ids"], str)
            and isinstance(identity["rows"]["id_dtype"], str)
            and isinstance(index["n_rows"], int)
            and isinstance(partitions, list)
            and partitions
            and all(
                isinstance(p["name"], str)
                and Path(p["name"]).name == p["name"]
                and p["name"].endswith(".npz")
                and isinstance(p["n_rows"], int)
                and isinstance(p["fingerprint"], str)
                for p in partitions
            )
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"'{path}' is malformed (missing {exc}); re-run encode_manifest into a new folder"
        ) from exc
    if not ok:
        raise ValueError(
            f"'{path}' is malformed (a field has the wrong type, or a shard name is not a "
            "plain .npz file name in the folder); re-run encode_manifest into a new folder"
        )
    return identity, names, widths, partitions
