"""Small helpers that every layer may use (seeding, package versions, progress bars, a fast
two-class AUROC).

They live in ``toolkit._utils`` with the toolkit's internal helpers; this module is their
public face, so the study engine and other upper layers import nothing private.
"""

from __future__ import annotations

from toolkit._progress import progress
from toolkit._utils import (
    binary_roc_auc,
    check_random_state_seed,
    package_versions,
    seed_if_unset,
)

__all__ = [
    "binary_roc_auc",
    "check_random_state_seed",
    "package_versions",
    "progress",
    "seed_if_unset",
]
