"""Fusion strategies: Embeddings -> predictions. They never see raw data."""

from __future__ import annotations

from toolkit.fusion.base import BaseFusion
from toolkit.fusion.early import EarlyFusion
from toolkit.fusion.gated import GatedFusion
from toolkit.fusion.late import LateFusion

__all__ = ["BaseFusion", "EarlyFusion", "GatedFusion", "LateFusion", "make_fusion"]


def make_fusion(fusion):
    """The fusion object for ``"early"``, ``"late"``, ``"gated"`` or a fusion instance."""
    if isinstance(fusion, str):
        try:
            return {"early": EarlyFusion, "late": LateFusion, "gated": GatedFusion}[fusion]()
        except KeyError:
            raise ValueError(
                f"unknown fusion '{fusion}'; use 'early', 'late', 'gated' or a fusion object"
            ) from None
    if isinstance(fusion, type):
        raise TypeError(
            f"fusion must be an instance, got the class {fusion.__name__}; write "
            f"{fusion.__name__}()"
        )
    if not isinstance(fusion, BaseFusion):
        raise TypeError(
            f"fusion must be 'early', 'late', 'gated' or a BaseFusion instance, got {type(fusion).__name__}"
        )
    return fusion
