"""Shards read back: one checked against its job and partition (:func:`encode_manifest` keeps
only such shards when resuming), and :func:`load_embeddings`, every shard checked against
the index.
"""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np

from toolkit.cache import check_limit, read_npz
from toolkit.distributed.index import MAX_INDEX_BYTES, _index_fields, _read_index
from toolkit.embeddings import Embeddings


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
