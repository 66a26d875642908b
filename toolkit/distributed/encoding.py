""":func:`encode_partition` and :func:`encode_manifest`: encode a manifest's rows into
embedding shards, on a Dask cluster or in this process, resuming a job already begun.
"""

from __future__ import annotations

import numbers
import os
import warnings
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.base import clone

from toolkit.cache import (
    MAX_FOLDER_FILES,
    CacheShardWarning,
    check_fingerprint,
    check_limit,
    ensure_fitted,
)
from toolkit.distributed.ids import _normalise_ids
from toolkit.distributed.index import (
    INDEX_VERSION,
    MAX_INDEX_BYTES,
    _check_same_job,
    _encoder_identity,
    _job_identity,
    _partition_fingerprint,
    _write_index,
)
from toolkit.distributed.reading import _check_shard

#: Encoders built on this worker process, keyed by their identity (built once per worker).
_WORKER_ENCODERS: dict[str, object] = {}


def _worker_encoder(encoder, key: str):
    """The worker's own fitted copy of a fixed encoder: built (weights loaded) once per
    process and identity (class, parameters, weights files' fingerprints)."""
    if hasattr(encoder, "n_features_out_"):
        return encoder  # already fitted (e.g. a TF-IDF encoder fitted on a training sample)
    if key not in _WORKER_ENCODERS:
        _WORKER_ENCODERS[key] = ensure_fitted(clone(encoder), [])
    return _WORKER_ENCODERS[key]


def _check_modalities(frame: pd.DataFrame, modalities) -> None:
    names = [m[0] for m in modalities]
    if not names:
        raise ValueError("modalities is empty; pass a list of (name, encoder, columns)")
    if not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"modality names must be non-empty strings, got {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"modality names must be unique, got {names}")
    for name, enc, cols in modalities:
        if not getattr(enc, "fixed", False) and not hasattr(enc, "n_features_out_"):
            raise ValueError(
                f"modality '{name}': {type(enc).__name__} learns from data; fit it first (e.g. on a "
                "training sample) and pass the fitted encoder, or use a fixed encoder"
            )
        wanted = list(cols) if isinstance(cols, list | tuple) else [cols]
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise ValueError(
                f"modality '{name}' needs column(s) {missing}, which the frame does not have "
                f"(it has {list(frame.columns)[:10]})"
            )


def encode_partition(
    frame: pd.DataFrame,
    modalities,
    row_ids,
    out_dir,
    part: int,
    *,
    fingerprint: str = "sampled",
    encoders: dict | None = None,
    max_folder_files: int = MAX_FOLDER_FILES,
) -> dict:
    """Encode one partition's rows and write ``part-NNNNN.npz`` atomically.

    A partition whose shard already exists, reads back whole and carries this partition's
    fingerprint (encoders, row ids, the content keys of its cells) is kept, so re-running
    after a failure completes only the missing partitions, and every row id ends up in
    exactly one shard. A shard that fails (corrupt, of other rows or encoders, stale input
    files) is encoded again.

    Parameters
    ----------
    frame : DataFrame
        The partition's rows.
    modalities : list of (name, encoder, columns)
    row_ids : array-like of shape (n_rows,)
    out_dir : str or path
    part : int
        Partition number (the shard is ``part-{part:05d}.npz``).
    fingerprint : {"sampled", "full"}, default="sampled"
        How files are keyed (see :mod:`toolkit.cache`).
    encoders : dict, optional
        Each modality's encoder identity, as :func:`encode_manifest` computes it once.
    max_folder_files : int, default=MAX_FOLDER_FILES (100,000)
        Most files inside one folder item (see :mod:`toolkit.cache`).

    Returns
    -------
    dict with ``name``, ``n_rows``, ``fingerprint``, ``widths`` and ``recomputed`` (why an
    existing shard was encoded again, else None).
    """
    check_fingerprint(fingerprint)
    check_limit("max_folder_files", max_folder_files)
    out_dir = Path(out_dir)
    names = [m for m, _, _ in modalities]
    rid = _normalise_ids(row_ids)
    if len(rid) != len(frame):
        raise ValueError(f"partition {part}: {len(rid)} row ids for {len(frame)} rows")
    if encoders is None:
        encoders = {m: _encoder_identity(e, fingerprint) for m, e, _ in modalities}
    pfp = _partition_fingerprint(frame, modalities, rid, encoders, fingerprint, max_folder_files)
    name = f"part-{part:05d}.npz"
    target = out_dir / name
    record = {"name": name, "n_rows": int(len(rid)), "fingerprint": pfp, "recomputed": None}
    if target.exists() or target.is_symlink():
        try:
            arrays = _check_shard(target, names, fingerprint=pfp, row_ids=rid)
            record["widths"] = {m: int(arrays[f"block__{m}"].shape[1]) for m in names}
            return record
        except ValueError as exc:
            record["recomputed"] = str(exc)
    arrays = {
        "row_id": rid,
        "fingerprint": np.asarray(pfp, dtype=str),
        **_encode_rows(frame, modalities, encoders, rid, part),
    }
    tmp = out_dir / f".{name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    tmp.replace(target)
    record["widths"] = {m: int(arrays[f"block__{m}"].shape[1]) for m in names}
    return record


def _encode_rows(frame, modalities, encoders: dict, rid: np.ndarray, part: int) -> dict:
    """A partition's encoded arrays: one float32 block per modality, then the mask."""
    arrays = {}
    masks = []
    for mod, enc, cols in modalities:
        items = frame[list(cols)] if isinstance(cols, list | tuple) else frame[cols]
        block, present = _worker_encoder(enc, encoders[mod]).encode(items)
        block = np.asarray(block, dtype=np.float32)
        present = np.asarray(present, dtype=bool)
        bad = present & ~np.isfinite(block).all(axis=1)
        if bad.any():
            raise ValueError(
                f"modality '{mod}': {type(enc).__name__} returned non-finite values for "
                f"available rows {rid[bad][:10].tolist()}; nothing was written for partition {part}"
            )
        arrays[f"block__{mod}"] = block
        masks.append(present)
    arrays["mask"] = np.column_stack(masks)
    return arrays


def encode_manifest(
    frame,
    modalities,
    out_dir,
    *,
    client=None,
    partition_size: int = 500,
    id_column=None,
    fingerprint: str = "sampled",
    max_folder_files: int = MAX_FOLDER_FILES,
    max_index_bytes: int = MAX_INDEX_BYTES,
):
    """Encode every row of ``frame`` into embedding shards under ``out_dir``.

    Parameters
    ----------
    frame : DataFrame
        The manifest (e.g. from ``toolkit.datasets.load_manifest``); items are read by the
        workers from shared storage, so paths must be visible to every worker.
    modalities : list of (name, encoder, columns)
        Fixed encoders (feature extractors, pretrained networks), or encoders already
        fitted on a training sample.
    out_dir : str or path
        A new or empty folder, or one written by this same job (which is then resumed).
        A folder holding shards of another job is refused (see the module docstring).
    client : dask.distributed.Client, optional
        Without one, partitions are encoded in this process.
    partition_size : int, default=500
        Rows per shard.
    id_column : str, optional
        Column holding row ids (default: the frame's index). Ids must be unique, not
        missing, and all strings, all numbers, all naive datetimes or all timedeltas;
        timezone-aware datetimes and strings holding NUL are refused (see the module
        docstring).
    fingerprint : {"sampled", "full"}, default="sampled"
        How input files and weights are keyed when deciding whether an existing shard is
        current (cost: see :mod:`toolkit.cache`).
    max_folder_files : int, default=MAX_FOLDER_FILES (100,000)
        Most files inside one folder item (a DICOM series); a folder holding more is
        refused with an error naming its row and column.
    max_index_bytes : int, default=MAX_INDEX_BYTES (64 MiB)
        Largest existing ``index.json`` read when resuming (see the module docstring).

    Returns
    -------
    Path of ``index.json`` (job identity, modality names, widths, partitions, row count).
    """
    check_fingerprint(fingerprint)
    check_limit("max_folder_files", max_folder_files)
    check_limit("max_index_bytes", max_index_bytes)
    if isinstance(partition_size, bool) or not isinstance(partition_size, numbers.Integral):
        raise ValueError(f"partition_size must be a positive integer, got {partition_size!r}")
    if partition_size < 1:
        raise ValueError(f"partition_size must be a positive integer, got {partition_size!r}")
    if len(frame) == 0:
        raise ValueError("frame has 0 rows; there is nothing to encode")
    _check_modalities(frame, modalities)
    ids = _manifest_ids(frame, id_column)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    identity = _job_identity(modalities, ids, partition_size, fingerprint)
    _check_same_job(out_dir, identity, max_index_bytes)
    names = [m for m, _, _ in modalities]
    base = {"version": INDEX_VERSION, "identity": identity, "modalities": names}
    _write_index(out_dir, {**base, "complete": False})
    encoders = identity["encoders"]
    parts = [
        (p, frame.iloc[s : s + partition_size], ids[s : s + partition_size])
        for p, s in enumerate(range(0, len(frame), partition_size))
    ]
    options = {
        "fingerprint": fingerprint,
        "encoders": encoders,
        "max_folder_files": max_folder_files,
    }
    records = _encode_parts(client, parts, modalities, out_dir, joblib.hash(identity)[:8], options)
    widths = _common_widths(records, out_dir)
    partitions = [{k: rec[k] for k in ("name", "n_rows", "fingerprint")} for rec in records]
    index = {
        **base,
        "complete": True,
        "widths": widths,
        "partitions": partitions,
        "n_rows": int(len(ids)),
    }
    return _write_index(out_dir, index)


def _manifest_ids(frame, id_column) -> np.ndarray:
    """The manifest's row ids (``id_column`` or the index), normalised and unique."""
    if id_column is not None and id_column not in frame.columns:
        raise ValueError(f"id_column {id_column!r} is not a column of the frame")
    where = f"row ids (column {id_column!r})" if id_column else "row ids (the frame's index)"
    ids = _normalise_ids(
        frame[id_column].to_numpy() if id_column else frame.index.to_numpy(), where
    )
    if len(pd.unique(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].unique()[:5].tolist()
        raise ValueError(
            f"{where} must be unique, found duplicates {dup}; pass id_column= naming a unique "
            "id column"
        )
    return ids


def _encode_parts(client, parts, modalities, out_dir: Path, job: str, options: dict) -> list:
    """Each partition's record, encoded in this process or on ``client``'s workers; a shard
    that was encoded again is reported with a CacheShardWarning."""
    if client is None:
        records = [
            encode_partition(df, modalities, rid, out_dir, p, **options) for p, df, rid in parts
        ]
    else:
        [mods] = client.scatter([modalities], broadcast=True)
        futures = [
            client.submit(
                encode_partition,
                df,
                mods,
                rid,
                str(out_dir),
                p,
                **options,
                key=f"encode-part-{out_dir.name}-{job}-{p}",
                pure=False,
            )
            for p, df, rid in parts
        ]
        records = client.gather(futures)
    for rec in records:
        if rec["recomputed"]:
            warnings.warn(
                f"shard '{out_dir / rec['name']}' was encoded again: {rec['recomputed']}",
                CacheShardWarning,
                stacklevel=3,
            )
    return records


def _common_widths(records: list, out_dir: Path) -> dict:
    """The block widths every shard shares (else the encoders are not deterministic)."""
    widths = records[0]["widths"]
    for rec in records[1:]:
        if rec["widths"] != widths:
            raise ValueError(
                f"shard '{out_dir / rec['name']}' has widths {rec['widths']} but "
                f"'{records[0]['name']}' has {widths}; the encoders are not deterministic"
            )
    return widths
