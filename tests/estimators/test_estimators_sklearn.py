"""scikit-learn's estimator checks on the estimators and each fusion strategy."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from toolkit import (
    AttentionFusion,
    GatedFusion,
    LowRankFusion,
    MultimodalClassifier,
    MultimodalRegressor,
    TensorFusion,
)

# The torch fusions are trained with a small epoch budget here to keep the suite fast; their
# defaults are exercised by the accuracy tests (tests/fusion/test_neural.py). The three newer
# families share GatedFusion's training and regression code (NeuralFusion, checked through
# the gated regressor below), so they are checked as classifiers only.
FAST_GATED = GatedFusion(max_epochs=60, patience=10)
FAST_NEW = [
    AttentionFusion(max_epochs=20, patience=5),
    TensorFusion(max_epochs=20, patience=5),
    LowRankFusion(max_epochs=20, patience=5),
]

# The default fusion is checked through the default estimator; "early" and "late" each once
# (an explicit entry equal to the default ran every check twice under the same id).
_DEFAULT = MultimodalClassifier().fusion
ESTIMATORS = [
    MultimodalClassifier(random_state=0),
    *(MultimodalClassifier(fusion=f, random_state=0) for f in ("early", "late") if f != _DEFAULT),
    MultimodalClassifier(fusion=FAST_GATED, random_state=0),
    MultimodalRegressor(random_state=0),
    MultimodalRegressor(fusion="early", random_state=0),
    MultimodalRegressor(fusion=FAST_GATED, random_state=0),
    *(MultimodalClassifier(fusion=f, random_state=0) for f in FAST_NEW),
]

EXPECTED_FAILED = {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_compatible(estimator, check):
    check(estimator)
