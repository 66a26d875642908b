"""Scale-out through Dask: distributed encoding of large manifests into embedding shards,
and explanations over row partitions. Nothing here is imported by ``import toolkit``; it
needs the ``distributed`` extra (``pip install 'multimodal-toolkit[distributed]'``).

The toolkit's other parallel work goes through joblib, so a study or a scikit-learn search
spreads over a cluster with ``joblib.parallel_config(backend="dask")`` (``mmtk run
--scheduler ADDRESS`` does this for studies).

Example
-------
>>> from dask.distributed import Client, LocalCluster            # doctest: +SKIP
>>> client = Client(LocalCluster(n_workers=2))                   # doctest: +SKIP
>>> encode_manifest(frame, modalities, "embeddings/", client=client)   # doctest: +SKIP
>>> emb, row_ids = load_embeddings("embeddings/")               # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

#: Encoders built on this worker process, keyed by their parameters (built once per worker).
_WORKER_ENCODERS: dict[str, object] = {}


def _worker_encoder(encoder):
    """The worker's own fitted copy of a fixed encoder: built (weights loaded) once per process."""
    import joblib
    from sklearn.base import clone

    from toolkit.cache import ensure_fitted

    if hasattr(encoder, "n_features_out_"):
        return encoder  # already fitted (e.g. a TF-IDF encoder fitted on a training sample)
    key = joblib.hash(
        (type(encoder).__module__, type(encoder).__qualname__, encoder.get_params(deep=False))
    )
    if key not in _WORKER_ENCODERS:
        _WORKER_ENCODERS[key] = ensure_fitted(clone(encoder), [])
    return _WORKER_ENCODERS[key]


def _check_modalities(modalities):
    for name, enc, _ in modalities:
        if not getattr(enc, "fixed", False) and not hasattr(enc, "n_features_out_"):
            raise ValueError(
                f"modality '{name}': {type(enc).__name__} learns from data; fit it first (e.g. on a "
                "training sample) and pass the fitted encoder, or use a fixed encoder"
            )


def encode_partition(frame: pd.DataFrame, modalities, row_ids, out_dir, part: int) -> str:
    """Encode one partition's rows and write ``part-NNNNN.npz`` atomically; return its name.

    A partition whose shard already exists is skipped, so re-running after a failure
    completes only the missing partitions, and every row id ends up in exactly one shard.
    """
    out_dir = Path(out_dir)
    name = f"part-{part:05d}.npz"
    target = out_dir / name
    if target.exists():
        return name
    rid = np.asarray(row_ids)
    arrays = {
        "row_id": rid.astype(str) if rid.dtype == object else rid
    }  # no object arrays in shards
    masks = []
    for mod, enc, cols in modalities:
        items = frame[list(cols)] if isinstance(cols, list | tuple) else frame[cols]
        block, present = _worker_encoder(enc).encode(items)
        arrays[f"block__{mod}"] = block
        masks.append(present)
    arrays["mask"] = np.column_stack(masks)
    tmp = out_dir / f".{name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    tmp.replace(target)
    return name


def encode_manifest(
    frame, modalities, out_dir, *, client=None, partition_size: int = 500, id_column=None
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
    client : dask.distributed.Client, optional
        Without one, partitions are encoded in this process.
    partition_size : int, default=500
    id_column : str, optional
        Column holding row ids (default: the frame's index).

    Returns
    -------
    Path of ``index.json`` (modality names, widths, partitions, row count).
    """
    _check_modalities(modalities)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = frame[id_column].to_numpy() if id_column else frame.index.to_numpy()
    if len(pd.unique(ids)) != len(ids):
        raise ValueError("row ids must be unique; pass id_column= naming a unique id column")
    starts = range(0, len(frame), partition_size)
    parts = [
        (p, frame.iloc[s : s + partition_size], ids[s : s + partition_size])
        for p, s in enumerate(starts)
    ]
    if client is None:
        names = [encode_partition(df, modalities, rid, out_dir, p) for p, df, rid in parts]
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
                key=f"encode-part-{out_dir.name}-{p}",
                pure=False,
            )
            for p, df, rid in parts
        ]
        names = client.gather(futures)
    widths = {}
    with np.load(out_dir / names[0]) as first:
        for mod, _, _ in modalities:
            widths[mod] = int(first[f"block__{mod}"].shape[1])
    index = {
        "modalities": [m for m, _, _ in modalities],
        "widths": widths,
        "partitions": names,
        "n_rows": int(len(frame)),
    }
    path = out_dir / "index.json"
    path.write_text(json.dumps(index, indent=2))
    return path


def load_embeddings(out_dir):
    """Read the shards written by :func:`encode_manifest`; return (Embeddings, row_ids)."""
    from toolkit.embeddings import Embeddings

    out_dir = Path(out_dir)
    index_path = out_dir / "index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"'{out_dir}' has no index.json; run encode_manifest first")
    index = json.loads(index_path.read_text())
    blocks = {m: [] for m in index["modalities"]}
    masks, row_ids = [], []
    for name in index["partitions"]:
        with np.load(out_dir / name, allow_pickle=False) as shard:
            for m in index["modalities"]:
                blocks[m].append(shard[f"block__{m}"])
            masks.append(shard["mask"])
            row_ids.append(shard["row_id"])
    emb = Embeddings({m: np.concatenate(b) for m, b in blocks.items()}, np.concatenate(masks))
    ids = np.concatenate(row_ids)
    if len(ids) != index["n_rows"] or len(np.unique(ids)) != len(ids):
        raise ValueError(
            f"shards in '{out_dir}' hold {len(ids)} rows ({len(np.unique(ids))} unique), index says {index['n_rows']}"
        )
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
