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

#: The public names, by the module that defines them: the one list from which ``toolkit.X``
#: (imported on first use) and ``__all__`` are derived. tests/test_init.py checks that it
#: holds every registered fusion strategy and encoder, so a new one cannot go missing here.
_PUBLIC = {
    "toolkit.embeddings": ("Embeddings",),
    "toolkit.encoders": (
        "AudioEncoder",
        "FeatureEncoder",
        "ImageEncoder",
        "ScanEncoder",
        "TabularEncoder",
        "TextEncoder",
    ),
    "toolkit.fusion": (
        "AttentionFusion",
        "AutoFusion",
        "EarlyFusion",
        "GatedFusion",
        "LateFusion",
        "LowRankFusion",
        "TensorFusion",
    ),
    "toolkit.estimators": ("MultimodalClassifier", "MultimodalRegressor"),
    "toolkit.explain": ("ModalityExplainer",),
    "toolkit.conformal": ("ConformalPredictor",),
    "toolkit.persistence": ("save", "load"),
}

_LAZY = {name: module for module, names in _PUBLIC.items() for name in names}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")


def __dir__():
    return __all__
