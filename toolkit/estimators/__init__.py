"""MultimodalClassifier and MultimodalRegressor: encoders + a fusion strategy, sklearn-style.

Modules: :mod:`~toolkit.estimators.checks` (modality specs, labels, targets),
:mod:`~toolkit.estimators.encoding` (fitting the encoders, cross-fitting supervised ones,
encoding), :mod:`~toolkit.estimators.base` (what both estimators share),
:mod:`~toolkit.estimators.classifier` and :mod:`~toolkit.estimators.regressor`.
"""

from __future__ import annotations

from toolkit.estimators.classifier import MultimodalClassifier
from toolkit.estimators.regressor import MultimodalRegressor

__all__ = ["MultimodalClassifier", "MultimodalRegressor"]
