"""Encoders: one raw column -> a (n_samples, d) float32 block (NaN rows for missing items).

:data:`ENCODERS` is the one list of encoders a study config may name (``encoder:`` of a
modality). Adding an encoder is one new file (``toolkit/encoders/<name>.py``, a
``BaseEncoder`` subclass) plus its entry in :data:`ENCODERS` below.
"""

from __future__ import annotations

from toolkit.encoders.audio import AudioEncoder
from toolkit.encoders.features import FeatureEncoder
from toolkit.encoders.image import ImageEncoder
from toolkit.encoders.scan import ScanEncoder
from toolkit.encoders.tabular import TabularEncoder
from toolkit.encoders.text import TextEncoder
from toolkit.registry import EstimatorRegistry

__all__ = [
    "ENCODERS",
    "AudioEncoder",
    "FeatureEncoder",
    "ImageEncoder",
    "ScanEncoder",
    "TabularEncoder",
    "TextEncoder",
]

#: Class name -> encoder class (built with no arguments), as a study config names it.
ENCODERS = EstimatorRegistry(
    "encoder",
    {
        "TextEncoder": TextEncoder,
        "ImageEncoder": ImageEncoder,
        "AudioEncoder": AudioEncoder,
        "ScanEncoder": ScanEncoder,
        "TabularEncoder": TabularEncoder,
        "FeatureEncoder": FeatureEncoder,
    },
)
