"""Multimodal sentiment and clinical analysis toolkit.

scikit-learn estimators that encode text, image, audio, 3-D scan and tabular columns,
fuse them (early, late or gated fusion) and explain each modality's contribution with
exact Shapley values.

Heavy dependencies (torch, torchaudio, transformers, monai, shap) are imported lazily,
the first time an object that needs them is used, so ``import toolkit`` stays light.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Embeddings": "toolkit.embeddings",
    "TextEncoder": "toolkit.encoders.text",
    "ImageEncoder": "toolkit.encoders.image",
    "AudioEncoder": "toolkit.encoders.audio",
    "ScanEncoder": "toolkit.encoders.scan",
    "TabularEncoder": "toolkit.encoders.tabular",
    "FeatureEncoder": "toolkit.encoders.features",
    "EarlyFusion": "toolkit.fusion.early",
    "LateFusion": "toolkit.fusion.late",
    "GatedFusion": "toolkit.fusion.gated",
    "AttentionFusion": "toolkit.fusion.attention",
    "TensorFusion": "toolkit.fusion.tensor",
    "LowRankFusion": "toolkit.fusion.lowrank",
    "MultimodalClassifier": "toolkit.estimators",
    "MultimodalRegressor": "toolkit.estimators",
    "ModalityExplainer": "toolkit.explain.modality",
    "ConformalPredictor": "toolkit.conformal",
    "save": "toolkit.persistence",
    "load": "toolkit.persistence",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")


def __dir__():
    return __all__
