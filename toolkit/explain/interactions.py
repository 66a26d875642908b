"""Pairwise modality interactions: exact Shapley interaction values from the 2^M coalitions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from toolkit.explain.modality import ModalityExplainer, class_position


def interaction_values(model, X, **kwargs):
    """Exact pairwise Shapley interaction values of a fitted model's modalities.

    ``interaction_values(model, X)`` is ``model.explain(X, interactions=True)``: see
    :meth:`ModalityExplainer.interaction_values`. The cost is that of the Shapley values,
    2^M fusion evaluations on the cached embeddings of ``X``.

    Parameters
    ----------
    model : fitted MultimodalClassifier or MultimodalRegressor
    X : DataFrame, dict of columns or Embeddings
    **kwargs
        :class:`ModalityExplainer` parameters (``removal``, ``background``, ``output``, ...).

    Returns
    -------
    shap.Explanation
        ``values`` of shape (n_samples, M, M) (binary / regression) or (n_samples, M, M,
        n_classes); off-diagonal entries are half the Shapley interaction index of the pair,
        diagonal entries the main effects; each row adds up to the modality's Shapley value.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from toolkit import MultimodalClassifier, TabularEncoder
    >>> from toolkit.explain import interaction_values
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"x": rng.normal(size=80), "z": rng.normal(size=80)})
    >>> clf = MultimodalClassifier([("a", TabularEncoder(), ["x"]),
    ...                             ("b", TabularEncoder(), ["z"])], random_state=0)
    >>> clf = clf.fit(df, (df["x"] > 0).astype(int))
    >>> inter = interaction_values(clf, df)
    >>> inter.values.shape
    (80, 2, 2)
    >>> bool(np.allclose(inter.values.sum(axis=2), clf.explain(df).values))
    True
    """
    kwargs["interactions"] = True
    return ModalityExplainer(model, **kwargs)(X)


def interaction_summary(explanation, class_index=None) -> pd.DataFrame:
    """Mean |interaction value| over rows, as a modality x modality DataFrame.

    Parameters
    ----------
    explanation : shap.Explanation from :func:`interaction_values`
    class_index : int, str or None
        Multi-class: the class (position or name) to summarize; None sums |values| over
        classes (as :func:`toolkit.explain.global_importance` does).

    Returns
    -------
    DataFrame of shape (M, M)
        Index and columns are the modality names; entry [a, b] (a != b) is the mean of
        |Phi_ab| (half the interaction of the pair), the diagonal the mean |main effect|.
    """
    values = np.asarray(explanation.values, dtype=float)
    if values.ndim not in (3, 4) or values.shape[1] != values.shape[2]:
        raise ValueError(
            "expected interaction values of shape (n_samples, M, M[, n_classes]) from "
            f"toolkit.explain.interaction_values, got shape {values.shape}"
        )
    if values.ndim == 4:
        if class_index is None:
            magnitude = np.abs(values).sum(axis=3)
        else:
            k = class_position(explanation, class_index)
            magnitude = np.abs(values[..., k])
    else:
        magnitude = np.abs(values)
    names = list(explanation.feature_names)
    return pd.DataFrame(magnitude.mean(axis=0), index=names, columns=names)
