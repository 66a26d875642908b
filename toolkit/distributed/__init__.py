"""Scale-out through Dask: distributed encoding of large manifests into embedding shards,
and explanations over row partitions. Nothing here is imported by ``import toolkit``; it
needs the ``distributed`` extra (``pip install 'multimodal-toolkit[distributed]'``) only
when a ``client`` is passed.

The toolkit's other parallel work goes through joblib, so a study or a scikit-learn search
spreads over a cluster with ``joblib.parallel_config(backend="dask")`` (``mmtk run
--scheduler ADDRESS`` does this for studies).

Shards and their index
----------------------
:func:`encode_manifest` writes one ``part-NNNNN.npz`` per partition of rows (uncompressed,
no pickles: the row ids, one float32 block per modality, the availability mask and the
partition's fingerprint) and ``index.json``. The index records the job's identity: the row
ids (a hash of their values and dtype, and their count), the partition size, the modality
names, each modality's columns, each encoder's class + parameters key (weights files by
content fingerprint, fitted state for encoders fitted on a sample) and the fingerprint
choice (``"sampled"`` or ``"full"``, as in :mod:`toolkit.cache`). It is written before any
shard, so

- writing into a folder that holds shards of another job (another frame, other modalities,
  columns, encoders or partition size, an index that cannot be read, or shards without an
  index) is refused with an error saying what differs; write into another folder;
- re-running the same job resumes: a shard is kept only when it reads back whole and its
  fingerprint (the job's identity, the partition's row ids and the content keys of its
  cells, files by content fingerprint) matches; a shard that is corrupt, stale (an input
  file changed) or of another job is encoded again, with a
  :class:`~toolkit.cache.CacheShardWarning`.

:func:`load_embeddings` checks every shard against the index (fingerprint, row count, id
dtype, widths, finite values where available) and refuses one that does not match, naming
it; it returns the row ids with the values and dtype they were written with (strings,
integers, floats, naive datetimes or timedeltas; ids of mixed types are refused when
encoding). Ids that ``.npz`` cannot give back unchanged are refused when encoding, saying
what to do: timezone-aware datetimes (the timezone would be lost: convert them to UTC and
drop the zone, or to strings) and strings holding a NUL character (numpy drops trailing
NULs, so ``"a"`` and ``"a\\x00"`` would become the same id).

``index.json`` is read with bounded resources: at most :data:`MAX_INDEX_BYTES` bytes
(``max_index_bytes``) and :data:`MAX_INDEX_DEPTH` levels of nesting (an index nests 4);
a larger or deeper file is refused naming it, as is one that cannot be parsed.

Example
-------
>>> from dask.distributed import Client, LocalCluster            # doctest: +SKIP
>>> client = Client(LocalCluster(n_workers=2))                   # doctest: +SKIP
>>> encode_manifest(frame, modalities, "embeddings/", client=client)   # doctest: +SKIP
>>> emb, row_ids = load_embeddings("embeddings/")               # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import json
import numbers
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit.cache import MAX_FOLDER_FILES

#: Format of the ``index.json`` written by :func:`encode_manifest`.
INDEX_VERSION = 2
#: Largest ``index.json`` read, in bytes (``max_index_bytes`` of :func:`load_embeddings` and
#: :func:`encode_manifest`); an index takes about 200 bytes per partition.
MAX_INDEX_BYTES = 64 * 2**20
#: Deepest nesting of lists and objects accepted in ``index.json`` (the index nests 4).
MAX_INDEX_DEPTH = 16

#: Encoders built on this worker process, keyed by their identity (built once per worker).
_WORKER_ENCODERS: dict[str, object] = {}


def _worker_encoder(encoder, key: str):
    """The worker's own fitted copy of a fixed encoder: built (weights loaded) once per
    process and identity (class, parameters, weights files' fingerprints)."""
    from sklearn.base import clone

    from toolkit.cache import ensure_fitted

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


def _normalise_ids(ids, where: str = "row ids") -> np.ndarray:
    """Row ids as a numpy array that ``.npz`` stores without pickles and gives back as they
    were: strings, integers, floats, booleans or datetimes. Missing and mixed ids are refused."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{where} must be 1-D, got shape {arr.shape}")
    if arr.dtype == object:
        values = arr.tolist()
        missing = [
            i for i, v in enumerate(values) if v is None or (isinstance(v, float) and v != v)
        ]
        if missing:
            raise ValueError(
                f"{where} are missing at positions {missing[:10]}; every row needs an id"
            )
        if all(isinstance(v, str) for v in values):
            _refuse_nul(values, where)
            arr = np.asarray(values, dtype=str)
        elif all(isinstance(v, datetime.datetime) for v in values):
            arr = _datetime_ids(values, where)
        elif all(isinstance(v, datetime.timedelta) for v in values):
            arr = np.asarray(pd.to_timedelta(values).to_numpy())
        elif all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
            try:
                arr = np.asarray(values, dtype=np.int64)
            except OverflowError as exc:
                raise ValueError(f"{where} do not fit in 64-bit integers; use strings") from exc
        elif all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
            arr = np.asarray(values, dtype=np.float64)
        else:
            kinds = sorted({type(v).__name__ for v in values})
            raise ValueError(
                f"{where} mix types {kinds}; shards store ids without pickles, so they must be "
                "all strings or all numbers: convert them (e.g. frame[id_column].astype(str))"
            )
    if arr.dtype.kind not in "biufUSMm":
        raise ValueError(f"{where} of dtype {arr.dtype} cannot be stored; use strings or integers")
    if arr.dtype.kind == "S":
        raise ValueError(
            f"{where} are bytes ({arr.dtype}); numpy drops their trailing NUL bytes, so they "
            "may not come back as written: decode them to strings first"
        )
    if arr.dtype.kind in "fMm" and pd.isna(arr).any():
        bad = np.flatnonzero(pd.isna(arr))[:10].tolist()
        raise ValueError(f"{where} are missing at positions {bad}; every row needs an id")
    return arr


def _refuse_nul(values: list, where: str) -> None:
    bad = [i for i, v in enumerate(values) if "\0" in v]
    if bad:
        raise ValueError(
            f"{where} contain a NUL character ('\\x00') at positions {bad[:10]} (e.g. "
            f"{values[bad[0]]!r}); numpy stores strings without trailing NULs, so such ids would "
            'change or collide ("a" and "a\\x00" become the same): remove the NULs, e.g. '
            "frame[id_column].str.replace('\\x00', '')"
        )


def _datetime_ids(values: list, where: str) -> np.ndarray:
    """Naive datetimes (pandas Timestamps or ``datetime``) as datetime64[ns]."""
    aware = [i for i, v in enumerate(values) if v.tzinfo is not None]
    if aware:
        raise ValueError(
            f"{where} are timezone-aware datetimes (e.g. {values[aware[0]]!s} at position "
            f"{aware[0]}); shards store datetimes without a timezone, so it would be lost: "
            "convert them to UTC and drop the zone (frame[id_column].dt.tz_convert('UTC')"
            ".dt.tz_localize(None); for the index: frame.index.tz_convert('UTC')"
            ".tz_localize(None)), or to strings"
        )
    try:
        return np.asarray(pd.to_datetime(values).to_numpy())
    except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime) as exc:
        raise ValueError(
            f"{where} hold datetimes that numpy's datetime64 cannot store ({exc}); convert "
            "them to strings"
        ) from exc


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
    import joblib

    from toolkit.cache import encoder_key

    key = encoder_key(enc, fingerprint=fingerprint)
    if not getattr(enc, "fixed", False):
        key = f"{key}-fitted-{joblib.hash(enc)}"
    return key


def _job_identity(modalities, ids: np.ndarray, partition_size: int, fingerprint: str) -> dict:
    import joblib

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
    import joblib

    from toolkit.cache import encoder_reads_paths, item_key

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
    import joblib

    cells = [_cells_key(frame, enc, cols, fingerprint, max_files) for _, enc, cols in modalities]
    return joblib.hash((encoders, fingerprint, rid, cells))


def _check_shard(
    path: Path,
    names: list[str],
    *,
    fingerprint: str | None = None,
    row_ids: np.ndarray | None = None,
    n_rows: int | None = None,
    id_dtype: str | None = None,
    widths: dict | None = None,
) -> dict[str, np.ndarray]:
    """The arrays of a manifest shard, or ValueError saying how it fails the expectations."""
    from toolkit.cache import read_npz

    arrays = read_npz(path)
    expected = {"row_id", "mask", "fingerprint"} | {f"block__{m}" for m in names}
    if set(arrays) != expected:
        raise ValueError(f"it holds {sorted(arrays)}, expected {sorted(expected)}")
    stored = arrays["fingerprint"]
    if stored.shape != () or stored.dtype.kind != "U":
        raise ValueError("its fingerprint is not a string")
    if fingerprint is not None and str(stored) != fingerprint:
        raise ValueError(
            "its fingerprint differs from the expected one (it was written by another job, "
            "for other rows or from input files that have changed since)"
        )
    rid = arrays["row_id"]
    n = len(rid) if rid.ndim == 1 else -1
    if rid.ndim != 1 or (n_rows is not None and n != n_rows):
        raise ValueError(f"it holds row ids of shape {rid.shape}, expected ({n_rows},)")
    if id_dtype is not None and rid.dtype.str != id_dtype:
        raise ValueError(f"its row ids are {rid.dtype.str}, expected {id_dtype}")
    if row_ids is not None and (rid.dtype != row_ids.dtype or not np.array_equal(rid, row_ids)):
        raise ValueError("its row ids are not the partition's")
    mask = arrays["mask"]
    if mask.dtype != bool or mask.shape != (n, len(names)):
        raise ValueError(
            f"its mask is {mask.dtype} of shape {mask.shape}, expected bool ({n}, {len(names)})"
        )
    for j, m in enumerate(names):
        block = arrays[f"block__{m}"]
        width = None if widths is None else widths.get(m)
        if block.dtype != np.float32 or block.ndim != 2 or block.shape[0] != n:
            raise ValueError(
                f"block '{m}' is {block.dtype} of shape {block.shape}, expected float32 ({n}, d)"
            )
        if width is not None and block.shape[1] != width:
            raise ValueError(f"block '{m}' is {block.shape[1]} wide, expected {width}")
        if not np.isfinite(block[mask[:, j]]).all():
            raise ValueError(f"block '{m}' holds non-finite values in available rows")
    return arrays


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
    from toolkit.cache import check_fingerprint, check_limit

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
    arrays = {"row_id": rid, "fingerprint": np.asarray(pfp, dtype=str)}
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
    tmp = out_dir / f".{name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    tmp.replace(target)
    record["widths"] = {m: int(arrays[f"block__{m}"].shape[1]) for m in names}
    return record


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
    import joblib

    from toolkit.cache import CacheShardWarning, check_fingerprint, check_limit

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
    if client is None:
        records = [
            encode_partition(df, modalities, rid, out_dir, p, **options) for p, df, rid in parts
        ]
    else:
        [mods] = client.scatter([modalities], broadcast=True)
        job = joblib.hash(identity)[:8]
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
                stacklevel=2,
            )
    widths = records[0]["widths"]
    for rec in records[1:]:
        if rec["widths"] != widths:
            raise ValueError(
                f"shard '{out_dir / rec['name']}' has widths {rec['widths']} but "
                f"'{records[0]['name']}' has {widths}; the encoders are not deterministic"
            )
    partitions = [{k: rec[k] for k in ("name", "n_rows", "fingerprint")} for rec in records]
    index = {
        **base,
        "complete": True,
        "widths": widths,
        "partitions": partitions,
        "n_rows": int(len(ids)),
    }
    return _write_index(out_dir, index)


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


def load_embeddings(out_dir, *, max_index_bytes: int = MAX_INDEX_BYTES):
    """Read the shards written by :func:`encode_manifest`.

    Every shard is checked against ``index.json`` (fingerprint, row count, id dtype, widths,
    finite values where available); one that does not match is refused.

    Parameters
    ----------
    out_dir : str or path
    max_index_bytes : int, default=MAX_INDEX_BYTES (64 MiB)
        Largest ``index.json`` read; a larger, deeper-nested (:data:`MAX_INDEX_DEPTH`) or
        unparsable one is refused naming the file.

    Returns
    -------
    emb : Embeddings
    row_ids : ndarray of shape (n_rows,)
        The ids the shards were written with, in the frame's order.
    """
    import joblib

    from toolkit.cache import check_limit
    from toolkit.embeddings import Embeddings

    check_limit("max_index_bytes", max_index_bytes)
    out_dir = Path(out_dir)
    index_path = out_dir / "index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"'{out_dir}' has no index.json; run encode_manifest first")
    index = _read_index(out_dir, max_index_bytes)
    if not index.get("complete"):
        raise ValueError(
            f"'{index_path}': the encoding did not finish; re-run encode_manifest with the same "
            "arguments to complete it"
        )
    identity, names, widths, partitions = _index_fields(index, index_path)
    blocks = {m: [] for m in names}
    masks, row_ids = [], []
    for part in partitions:
        path = out_dir / part["name"]
        try:
            shard = _check_shard(
                path,
                names,
                fingerprint=part["fingerprint"],
                n_rows=part["n_rows"],
                id_dtype=identity["rows"]["id_dtype"],
                widths=widths,
            )
        except ValueError as exc:
            raise ValueError(
                f"shard '{path}' does not match '{index_path}': {exc}; re-run encode_manifest "
                "with the same arguments to encode it again"
            ) from exc
        for m in names:
            blocks[m].append(shard[f"block__{m}"])
        masks.append(shard["mask"])
        row_ids.append(shard["row_id"])
    ids = np.concatenate(row_ids)
    if len(ids) != index["n_rows"] or joblib.hash(ids) != identity["rows"]["ids"]:
        raise ValueError(
            f"the shards in '{out_dir}' hold {len(ids)} row ids that are not the ones "
            f"'{index_path}' records ({index['n_rows']} rows); re-run encode_manifest into a new "
            "folder"
        )
    emb = Embeddings({m: np.concatenate(b) for m, b in blocks.items()}, np.concatenate(masks))
    return emb, ids


def _explain_part(model, emb, kwargs):
    from toolkit.explain import ModalityExplainer

    exp = ModalityExplainer(model, **kwargs)(emb)
    return exp.values, exp.base_values


def explain_partitions(model, emb, *, client, partition_size: int = 5000, **kwargs):
    """Exact modality Shapley values of ``emb``'s rows, computed over row partitions on a
    Dask cluster with the fitted model broadcast once per worker.

    Returns a ``shap.Explanation`` equal to ``ModalityExplainer(model, **kwargs)(emb)``.
    """
    import shap

    [remote_model] = client.scatter([model], broadcast=True)
    futures = [
        client.submit(_explain_part, remote_model, emb[s : s + partition_size], kwargs, pure=False)
        for s in range(0, emb.n_samples, partition_size)
    ]
    results = client.gather(futures)
    values = np.concatenate([v for v, _ in results])
    base = np.concatenate([b for _, b in results])
    classes = getattr(model, "classes_", None)
    output_names = [str(c) for c in classes] if values.ndim == 3 and classes is not None else None
    return shap.Explanation(
        values=values,
        base_values=base,
        data=emb.mask.astype(float),
        feature_names=list(model.modality_names_),
        output_names=output_names,
    )
