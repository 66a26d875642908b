"""scikit-learn's estimator checks on the estimators and each fusion strategy."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from toolkit import GatedFusion, MultimodalClassifier, MultimodalRegressor

# Gated fusion is trained with a small epoch budget here to keep the suite fast; its
# defaults are exercised by the accuracy tests.
FAST_GATED = GatedFusion(max_epochs=60, patience=10)

ESTIMATORS = [
    MultimodalClassifier(random_state=0),
    MultimodalClassifier(fusion="early", random_state=0),
    MultimodalClassifier(fusion="late", random_state=0),
    MultimodalClassifier(fusion=FAST_GATED, random_state=0),
    MultimodalRegressor(random_state=0),
    MultimodalRegressor(fusion="early", random_state=0),
    MultimodalRegressor(fusion=FAST_GATED, random_state=0),
]

EXPECTED_FAILED = {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_compatible(estimator, check):
    check(estimator)
