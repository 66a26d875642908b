"""toolkit._utils: the fast two-class AUROC used in bootstrap loops."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from toolkit._utils import binary_roc_auc


def test_binary_roc_auc_known_answers():
    # every positive above every negative; the reverse; one tie between classes counts 1/2
    assert binary_roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert binary_roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert binary_roc_auc([0, 1], [0.5, 0.5]) == 0.5
    # 2 positives x 2 negatives = 4 pairs: (0.8 > 0.3), (0.8 > 0.6), (0.6 = 0.6), (0.6 > 0.3)
    assert binary_roc_auc([0, 1, 0, 1], [0.3, 0.8, 0.6, 0.6]) == pytest.approx(3.5 / 4)
    # the larger label is the positive class, whatever the labels are
    assert binary_roc_auc(["neg", "pos", "neg"], [0.2, 0.9, 0.1]) == 1.0


def test_binary_roc_auc_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    for i in range(200):
        n = int(rng.integers(2, 300))
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        score = np.round(rng.random(n), 1) if i % 2 else rng.random(n)  # many ties, or none
        assert binary_roc_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)


def test_binary_roc_auc_leaves_bad_input_to_scikit_learn_errors():
    with pytest.raises(ValueError, match="NaN"):
        binary_roc_auc([0, 1, 0, 1], [0.1, np.nan, 0.2, 0.3])
    with pytest.raises(ValueError):
        binary_roc_auc([0, 1, 2, 1], [0.1, 0.4, 0.2, 0.3])  # three classes
