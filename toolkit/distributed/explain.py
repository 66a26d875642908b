""":func:`explain_partitions`: exact modality Shapley values over row partitions on a Dask
cluster.
"""

from __future__ import annotations

import numpy as np


def _explain_part(model, emb, kwargs):
    from toolkit.explain import ModalityExplainer  # imports shap: on first use

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
