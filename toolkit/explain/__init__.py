"""Modality-level explanations: exact Shapley values over modalities as shap.Explanation.

Everything evaluates coalitions through one value function, :func:`value_function`
(v(S) over a fitted model and its Embeddings); :mod:`toolkit.explain.shapley` holds the
Shapley arithmetic.
"""

from __future__ import annotations

from toolkit.explain.features import explain_features
from toolkit.explain.modality import (
    ModalityExplainer,
    contribution_magnitudes,
    global_importance,
    modality_shares,
    plot_contributions,
)
from toolkit.explain.shapley import coalition_weights, exact_shapley, shapley_weights
from toolkit.explain.value import ModalityValue, value_function

__all__ = [
    "ModalityExplainer",
    "ModalityValue",
    "coalition_weights",
    "contribution_magnitudes",
    "exact_shapley",
    "explain_features",
    "global_importance",
    "modality_shares",
    "plot_contributions",
    "shapley_weights",
    "value_function",
]
