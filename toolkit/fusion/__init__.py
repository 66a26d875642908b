"""Fusion strategies: Embeddings -> predictions. They never see raw data.

:data:`FUSIONS` is the one list of strategies: config validation (``fusion:`` in a study
config), :func:`make_fusion` and the estimators' ``fusion="..."`` read it. Adding a
strategy is one new file (``toolkit/fusion/<name>.py``, a :class:`BaseFusion` subclass)
plus its entry in :data:`FUSIONS` below.
"""

from __future__ import annotations

from toolkit.fusion.attention import AttentionFusion
from toolkit.fusion.auto import AutoFusion
from toolkit.fusion.base import BaseFusion
from toolkit.fusion.early import EarlyFusion
from toolkit.fusion.gated import GatedFusion
from toolkit.fusion.late import LateFusion
from toolkit.fusion.lowrank import LowRankFusion
from toolkit.fusion.neural import NeuralFusion
from toolkit.fusion.tensor import TensorFusion
from toolkit.registry import EstimatorRegistry

__all__ = [
    "FUSIONS",
    "AttentionFusion",
    "AutoFusion",
    "BaseFusion",
    "EarlyFusion",
    "GatedFusion",
    "LateFusion",
    "LowRankFusion",
    "NeuralFusion",
    "TensorFusion",
    "make_fusion",
]

#: Strategy name -> fusion class (a BaseFusion subclass built with no arguments).
FUSIONS = EstimatorRegistry(
    "fusion",
    {
        "early": EarlyFusion,
        "late": LateFusion,
        "gated": GatedFusion,
        "auto": AutoFusion,
        "attention": AttentionFusion,
        "tensor": TensorFusion,
        "lowrank": LowRankFusion,
    },
)


def _choices() -> str:
    return ", ".join(repr(name) for name in FUSIONS)


def make_fusion(fusion):
    """The fusion object for a name registered in :data:`FUSIONS` or a fusion instance.

    Examples
    --------
    >>> from toolkit.fusion import make_fusion
    >>> make_fusion("late")
    LateFusion()
    """
    if isinstance(fusion, str):
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion '{fusion}'; use {_choices()} or a fusion object")
        return FUSIONS[fusion]()
    if isinstance(fusion, type):
        raise TypeError(
            f"fusion must be an instance, got the class {fusion.__name__}; write "
            f"{fusion.__name__}()"
        )
    if not isinstance(fusion, BaseFusion):
        raise TypeError(
            f"fusion must be {_choices()} or a BaseFusion instance, got {type(fusion).__name__}"
        )
    return fusion
