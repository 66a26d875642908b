"""Datasets: ground-truth generators (synthetic, labelled as such) and loaders for real data.

:data:`DATASETS` is the one list of datasets: function name -> :class:`DatasetInfo`
(function, kind, one-line description, data card). A study config's ``data.source``,
``mmtk datasets`` and the study report read it; :func:`dataset_info` looks one up. Each
dataset's licence and citation are read from its card's front matter
(``toolkit/data_cards/<card>.md``, shipped inside the package), never repeated in code.

Every public ``make_*`` / ``load_*`` returns a scikit-learn ``Bunch`` whose ``data_card``
points to its card (provenance, licence, citation, label, splits, known limitations,
intended uses). Adding a dataset is one new file with its function, one card, and one entry
in :data:`DATASETS` below.

Examples
--------
>>> from toolkit.datasets import dataset_info
>>> info = dataset_info("load_mimic_iv_demo")
>>> info.kind, info.licence
('real', 'Open Data Commons Open Database License (ODbL) 1.0')
"""

from __future__ import annotations

from toolkit.datasets import clinical, sentiment
from toolkit.datasets._common import DATA_CARDS, DatasetInfo, data_card
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
from toolkit.datasets.mosi import load_mosi
from toolkit.datasets.sentiment import make_sentiment_clips
from toolkit.registry import Registry

__all__ = [
    "DATASETS",
    "DATA_CARDS",
    "DatasetInfo",
    "data_card",
    "dataset_info",
    "load_av_digits",
    "load_manifest",
    "load_mimic_iv_demo",
    "load_mmsa_features",
    "load_mosi",
    "load_pneumoniamnist",
    "load_speech_emotion",
    "load_uci_sentences",
    "make_clinical_cohort",
    "make_sentiment_clips",
]


def _sentiment_clips_bytes(p: dict) -> int:
    """float32 waveform and face image of each clip."""
    return sentiment.generated_bytes(
        p["n_samples"], p["sample_rate"], p["duration"], p["image_size"]
    )


def _clinical_cohort_bytes(p: dict) -> int:
    """float32 scan (and X-ray) of each visit."""
    return clinical.generated_bytes(
        p["n_samples"], p["scan_size"], p["xray_size"], p["include_xray"]
    )


def _entry(function, kind: str, description: str, card: str, **extra) -> DatasetInfo:
    return DatasetInfo(function.__name__, function, kind, description, card, **extra)


#: Function name -> DatasetInfo, in the order ``mmtk datasets`` lists them.
DATASETS: Registry[DatasetInfo] = Registry("dataset")
for _info in (
    _entry(
        make_sentiment_clips,
        "synthetic",
        "transcript + voice + face clips with ground truth",
        "sentiment_clips",
        estimate_bytes=_sentiment_clips_bytes,
    ),
    _entry(
        make_clinical_cohort,
        "synthetic",
        "clinical table + note + 3-D scan (+ X-ray) with ground truth",
        "clinical_cohort",
        estimate_bytes=_clinical_cohort_bytes,
    ),
    _entry(
        load_av_digits, "real", "FSDD spoken digits paired with handwritten digits", "av_digits"
    ),
    _entry(load_uci_sentences, "real", "UCI sentiment labelled sentences", "uci_sentences"),
    _entry(
        load_speech_emotion, "real", "emotional speech with arousal / valence", "speech_emotion"
    ),
    _entry(load_pneumoniamnist, "real", "PneumoniaMNIST chest X-rays", "pneumoniamnist"),
    _entry(
        load_mimic_iv_demo,
        "real",
        "MIMIC-IV demo admissions (mortality, long stay)",
        "mimic_iv_demo",
    ),
    _entry(
        load_mmsa_features,
        "real",
        "MMSA feature pickles (CMU-MOSI / MOSEI / CH-SIMS)",
        "mmsa_features",
    ),
    _entry(
        load_mosi,
        "real",
        "CMU-MOSI training videos: transcripts, openSMILE audio, video context",
        "mosi",
    ),
    _entry(load_manifest, "user", "a CSV of columns and file paths", "manifest"),
):
    DATASETS.register(_info.name, _info)
del _info


def dataset_info(name: str) -> DatasetInfo:
    """The registered dataset ``name`` (a ``make_*`` / ``load_*`` function name).

    Raises
    ------
    toolkit.registry.UnknownNameError
        ``name`` is not registered (a ``KeyError`` and a ``ValueError``); the message lists
        the registered names.
    """
    return DATASETS[name]
