"""Diagnostics of a multimodal model on data with groups (patients, speakers, sites).

:func:`group_transfer` asks, for each modality, whether its signal carries over to groups
the model has never seen: its cross-validated score when the test rows come from groups
seen in training (row-level folds) against its score on held-out groups (group-level
folds). A modality that scores well only on groups it has seen has learnt the person or
the site, not the label. It also gives the distribution of the model's own score over the
held-out groups (per-group scores, worst group, spread).

The module uses only the estimators' public seams (``fit_encode``, ``fit(Embeddings, y)``,
``output``) and the splits of :mod:`toolkit.model_selection`.
"""

from __future__ import annotations

from toolkit.diagnostics.result import (
    CLASSIFICATION_SCORES,
    REGRESSION_SCORES,
    TransferCheck,
    group_scores,
)
from toolkit.diagnostics.transfer import group_transfer

__all__ = [
    "CLASSIFICATION_SCORES",
    "REGRESSION_SCORES",
    "TransferCheck",
    "group_scores",
    "group_transfer",
]
