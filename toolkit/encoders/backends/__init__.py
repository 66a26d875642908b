"""Encoder backends: one class per backbone library, one registry per modality.

A modality encoder resolves ``backend="<name>"`` through its registry
(``ImageEncoder.backends is IMAGE_BACKENDS``) and asks the backend object for everything that
depends on the library (see :class:`~toolkit.encoders.backends.base.Backend`). To add a
backend: write its module here (a :class:`Backend` subclass) and add it to its modality's
registry below; ``tests/encoders/test_backends.py`` checks every registered backend.
"""

from __future__ import annotations

from toolkit.encoders.backends.base import Backend, Registry, TorchBackbone
from toolkit.encoders.backends.cnn import AudioCNN, ImageCNN
from toolkit.encoders.backends.descriptors import Descriptors
from toolkit.encoders.backends.hf_transformers import AudioTransformers, TextTransformers
from toolkit.encoders.backends.mfcc import Mfcc
from toolkit.encoders.backends.monai_backbone import Monai
from toolkit.encoders.backends.scan_statistics import ScanStatistics
from toolkit.encoders.backends.sentence_transformers_model import SentenceTransformers
from toolkit.encoders.backends.tfidf import HashingTfidf, Tfidf
from toolkit.encoders.backends.torchaudio_backbone import Torchaudio
from toolkit.encoders.backends.torchvision_backbone import Torchvision

TEXT_BACKENDS = Registry("text", [Tfidf, HashingTfidf, TextTransformers, SentenceTransformers])
IMAGE_BACKENDS = Registry("image", [Descriptors, Torchvision, ImageCNN])
AUDIO_BACKENDS = Registry("audio", [Mfcc, AudioTransformers, Torchaudio, AudioCNN])
SCAN_BACKENDS = Registry("scan", [ScanStatistics, Monai])

#: Every modality's registry, by modality (``BaseEncoder.modality``).
REGISTRIES = {r.modality: r for r in (TEXT_BACKENDS, IMAGE_BACKENDS, AUDIO_BACKENDS, SCAN_BACKENDS)}

__all__ = [
    "Backend",
    "Registry",
    "TorchBackbone",
    "TEXT_BACKENDS",
    "IMAGE_BACKENDS",
    "AUDIO_BACKENDS",
    "SCAN_BACKENDS",
    "REGISTRIES",
]
