"""Encoders: one raw column -> a (n_samples, d) float32 block (NaN rows for missing items)."""

from __future__ import annotations

from toolkit.encoders.audio import AudioEncoder
from toolkit.encoders.features import FeatureEncoder
from toolkit.encoders.image import ImageEncoder
from toolkit.encoders.scan import ScanEncoder
from toolkit.encoders.tabular import TabularEncoder
from toolkit.encoders.text import TextEncoder

__all__ = [
    "AudioEncoder",
    "FeatureEncoder",
    "ImageEncoder",
    "ScanEncoder",
    "TabularEncoder",
    "TextEncoder",
]
