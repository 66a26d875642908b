"""Modality-level explanations: exact Shapley values over modalities as shap.Explanation."""

from __future__ import annotations

from toolkit.explain.modality import (
    ModalityExplainer,
    global_importance,
    modality_shares,
    plot_contributions,
    shapley_weights,
)

__all__ = [
    "ModalityExplainer",
    "global_importance",
    "modality_shares",
    "plot_contributions",
    "shapley_weights",
]
