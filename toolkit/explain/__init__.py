"""Modality-level explanations: exact Shapley values over modalities as shap.Explanation.

Everything evaluates coalitions through one value function, :func:`value_function`
(v(S) over a fitted model and its Embeddings); :mod:`toolkit.explain.shapley` holds the
Shapley arithmetic. Beyond the Shapley values: pairwise interactions
(:func:`interaction_values`), confidence intervals over rows and refits
(:func:`contribution_intervals`, :func:`refit_intervals`), drill-down inside text, image,
audio, scan and tabular modalities (:func:`drill_down`) and their plots.
"""

from __future__ import annotations

from toolkit.explain.drilldown import (
    ImageGrid,
    Parts,
    ScanBlocks,
    TimeSegments,
    Words,
    drill_down,
    drill_down_cost,
    rank_parts,
)
from toolkit.explain.features import explain_features
from toolkit.explain.interactions import interaction_summary, interaction_values
from toolkit.explain.intervals import contribution_intervals, refit_intervals
from toolkit.explain.modality import (
    ModalityExplainer,
    class_position,
    contribution_magnitudes,
    global_importance,
    modality_shares,
    plot_contributions,
    select_class,
)
from toolkit.explain.plots import (
    plot_audio_parts,
    plot_image_parts,
    plot_interactions,
    plot_intervals,
    plot_scan_parts,
    plot_text_parts,
)
from toolkit.explain.shapley import (
    coalition_weights,
    exact_interactions,
    exact_shapley,
    interaction_weights,
    shapley_weights,
)
from toolkit.explain.text_parts import Clauses
from toolkit.explain.value import ModalityValue, value_function

__all__ = [
    "Clauses",
    "ImageGrid",
    "ModalityExplainer",
    "ModalityValue",
    "Parts",
    "ScanBlocks",
    "TimeSegments",
    "Words",
    "class_position",
    "coalition_weights",
    "contribution_intervals",
    "contribution_magnitudes",
    "drill_down",
    "drill_down_cost",
    "exact_interactions",
    "exact_shapley",
    "explain_features",
    "global_importance",
    "interaction_summary",
    "interaction_values",
    "interaction_weights",
    "modality_shares",
    "plot_audio_parts",
    "plot_contributions",
    "plot_image_parts",
    "plot_interactions",
    "plot_intervals",
    "plot_scan_parts",
    "plot_text_parts",
    "rank_parts",
    "refit_intervals",
    "select_class",
    "shapley_weights",
    "value_function",
]
