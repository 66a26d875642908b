"""Cross-fitting of encoders that learn from the labels: the fusion never sees an encoder's
in-sample outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator

from toolkit import MultimodalClassifier, MultimodalRegressor, TabularEncoder
from toolkit.fusion import LateFusion


class Memorizer(BaseEstimator):
    """A supervised encoder that remembers its training items: in-sample it outputs the
    one-hot label (perfect), on an item it did not train on it outputs [0.5, 0.5]."""

    supervised = True
    fixed = False
    trained_on: list = []

    def __init__(self, random_state=None):
        self.random_state = random_state

    def fit(self, items, y, groups=None):
        type(self).trained_on.append(set(items))
        self.memory_ = dict(zip(items, np.asarray(y), strict=True))
        self.n_out_ = int(np.max(y)) + 1 if len(y) else 1
        return self

    def encode(self, items):
        return self.encode_scores(items)

    def encode_scores(self, items):
        out = np.full((len(items), self.n_out_), 0.5, dtype=np.float32)
        for i, item in enumerate(items):
            if item in self.memory_:
                out[i] = 0.0
                out[i, int(self.memory_[item])] = 1.0
        return out, np.ones(len(items), dtype=bool)


class Recorder(LateFusion):
    seen: list = []

    def fit(self, emb, y, n_classes=None, groups=None):
        type(self).seen.append(emb.blocks["memo"].copy())
        return super().fit(emb, y, n_classes=n_classes, groups=groups)


def frame(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    df = pd.DataFrame({"item": [f"item{i}" for i in range(n)], "x": rng.normal(size=n) + y})
    return df, y


def test_fusion_learns_only_from_out_of_fold_encoder_outputs():
    df, y = frame()
    Memorizer.trained_on, Recorder.seen = [], []
    clf = MultimodalClassifier(
        [("memo", Memorizer(), "item"), ("tab", TabularEncoder(), ["x"])],
        fusion=Recorder(),
        random_state=0,
        encoder_cv=4,
    ).fit(df, y)
    # one network on every row (to predict) + one per inner fold
    assert len(Memorizer.trained_on) == 5
    assert Memorizer.trained_on[0] == set(df["item"])
    for trained in Memorizer.trained_on[1:]:
        assert len(trained) == 45
    # the fusion saw 0.5 for every training row: never the memorized (in-sample) one-hot
    (seen,) = Recorder.seen
    assert np.all(seen == 0.5)
    # at predict time the final encoder is used: the training rows are memorized
    block = clf.encode(df).blocks["memo"]
    assert np.array_equal(block.argmax(1), y)


def test_crossfit_folds_keep_groups_together():
    df, y = frame(80)
    groups = np.repeat(np.arange(16), 5)
    Memorizer.trained_on = []
    MultimodalClassifier(
        [("memo", Memorizer(), "item"), ("tab", TabularEncoder(), ["x"])], random_state=0
    ).fit(df, y, groups=groups)
    item_group = dict(zip(df["item"], groups, strict=True))
    for trained in Memorizer.trained_on[1:]:
        held_out = set(df["item"]) - trained
        assert not {item_group[i] for i in trained} & {item_group[i] for i in held_out}


def test_supervised_encoder_without_labels_says_so():
    df, y = frame()
    clf = MultimodalClassifier([("memo", Memorizer(), "item")], random_state=0)
    with pytest.raises(ValueError, match="modality 'memo': Memorizer learns from the labels"):
        clf.fit_encoders(df)
    assert clf.fit_encoders(df, y).encoders_["memo"].memory_["item3"] == y[3]


def test_too_few_rows_to_crossfit_is_a_clear_error():
    df = pd.DataFrame({"item": ["a", "b", "c"], "x": [0.0, 1.0, 2.0]})
    clf = MultimodalClassifier([("memo", Memorizer(), "item")], random_state=0)
    with pytest.raises(ValueError, match="cannot cross-fit Memorizer"):
        clf.fit(df, [0, 1, 1])


def test_regressor_crossfits_too():
    df, y = frame(40)
    Memorizer.trained_on = []
    reg = MultimodalRegressor(
        [("memo", Memorizer(), "item"), ("tab", TabularEncoder(), ["x"])], random_state=0
    ).fit(df, y.astype(float))
    assert len(Memorizer.trained_on) == 6  # all rows + 5 inner folds (KFold for regression)
    assert reg.predict(df).shape == (40,)
