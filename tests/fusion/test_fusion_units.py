"""Unit tests of the fusion building blocks (the strategies' accuracy is tested in
tests/test_estimators.py)."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.embeddings import Embeddings
from toolkit.fusion import EarlyFusion, GatedFusion, LateFusion
from toolkit.fusion.base import BlockScaler, drop_modalities


def _emb(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = (y[:, None] + rng.normal(0, 0.5, (n, 3))).astype(np.float32)
    b = rng.normal(0, 1, (n, 2)).astype(np.float32)
    mask = np.ones((n, 2), dtype=bool)
    mask[::7, 1] = False
    b[~mask[:, 1]] = np.nan
    return Embeddings({"a": a, "b": b}, mask), y


def test_drop_modalities_rule_on_numpy_and_torch():
    import torch

    mask = np.array([[True, True], [True, False], [True, True], [False, False]])
    uniform = np.array([[0.1, 0.9], [0.1, 0.1], [0.1, 0.1], [0.0, 0.0]])
    expected = np.array([[False, True], [True, False], [True, True], [False, False]])
    out = drop_modalities(mask.copy(), uniform, 0.5)
    np.testing.assert_array_equal(out, expected)  # rows 1 and 2 would lose all: kept whole
    t = drop_modalities(torch.from_numpy(mask.copy()), torch.from_numpy(uniform), 0.5)
    np.testing.assert_array_equal(t.numpy(), expected)
    assert drop_modalities(mask.copy(), uniform, 0.0).tolist() == mask.tolist()


def test_block_scaler_balances_block_widths():
    emb, _ = _emb()
    blocks = BlockScaler().fit(emb, balance=True).transform(emb)
    # each block has unit total variance after balancing, whatever its width
    for name in ("a", "b"):
        rows = emb.mask[:, emb.names.index(name)]
        total = np.nanvar(blocks[name][rows], axis=0).sum()
        assert total == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize(
    "fusion",
    [
        EarlyFusion(random_state=0),
        LateFusion(random_state=0),
        GatedFusion(max_epochs=5, random_state=0),
    ],
    ids=["early", "late", "gated"],
)
def test_fusion_outputs_are_distributions_and_use_the_mask(fusion):
    emb, y = _emb()
    fitted = fusion.fit(emb, y, n_classes=2)
    p = fitted.predict_output(emb)
    assert p.shape == (60, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    # with no modality the output cannot depend on the row (the estimator then uses the prior)
    none = fitted.predict_output(emb.with_mask(np.zeros_like(emb.mask)))
    np.testing.assert_allclose(none, np.tile(none[0], (60, 1)), atol=1e-12)
    # hiding a modality changes the rows that had it, and only those
    only_a = emb.mask.copy()
    only_a[:, 1] = False
    q = fitted.predict_output(emb.with_mask(only_a))
    had_b = emb.mask[:, 1]
    np.testing.assert_allclose(q[~had_b], p[~had_b], atol=1e-12)
    assert np.abs(q[had_b] - p[had_b]).max() > 1e-6


def test_late_fusion_seeds_its_meta_learner():
    from sklearn.linear_model import SGDClassifier

    emb, y = _emb()
    fitted = LateFusion(meta_estimator=SGDClassifier(loss="log_loss"), random_state=3).fit(
        emb, y, n_classes=2
    )
    assert fitted.meta_estimator_.random_state == fitted.seed_
    again = LateFusion(meta_estimator=SGDClassifier(loss="log_loss"), random_state=3).fit(
        emb, y, n_classes=2
    )
    np.testing.assert_array_equal(fitted.predict_output(emb), again.predict_output(emb))
