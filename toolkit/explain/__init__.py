"""Modality-level explanations: exact Shapley values over modalities as shap.Explanation."""

from __future__ import annotations

from toolkit.explain.features import explain_features
from toolkit.explain.modality import (
    ModalityExplainer,
    global_importance,
    modality_shares,
    plot_contributions,
    shapley_weights,
)

__all__ = [
    "ModalityExplainer",
    "explain_features",
    "global_importance",
    "modality_shares",
    "plot_contributions",
    "shapley_weights",
]
