"""Datasets: ground-truth generators (synthetic, labelled as such) and loaders for real data.

Every public ``make_*`` / ``load_*`` returns a scikit-learn ``Bunch`` whose ``data_card``
points to its card in ``data_cards/`` (provenance, licence, citation, label, splits,
known limitations, intended uses).
"""

from __future__ import annotations

from toolkit.datasets.clinical import make_clinical_cohort
from toolkit.datasets.loaders import (
    load_av_digits,
    load_manifest,
    load_mimic_iv_demo,
    load_pneumoniamnist,
    load_speech_emotion,
    load_uci_sentences,
)
from toolkit.datasets.mmsa import load_mmsa_features
from toolkit.datasets.sentiment import make_sentiment_clips

__all__ = [
    "load_av_digits",
    "load_manifest",
    "load_mimic_iv_demo",
    "load_mmsa_features",
    "load_pneumoniamnist",
    "load_speech_emotion",
    "load_uci_sentences",
    "make_clinical_cohort",
    "make_sentiment_clips",
]
