"""Studies with encoders that learn from the labels: each fold trains them on its training
rows with their labels and groups, gives the fusion their cross-fitted (out-of-fold)
outputs and encodes the test rows with the encoder trained on every training row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from toolkit import TabularEncoder
from toolkit.fusion import LateFusion
from toolkit.study import load_config, run_study
from toolkit.study.orchestration import FoldPlan, encode_fold, run_fold

ROOT = Path(__file__).resolve().parents[2]


class Memorizer(BaseEstimator):
    """A supervised encoder that remembers its training items: one-hot label in-sample,
    [0.5, 0.5] on an item it did not train on (as in tests/test_crossfit.py)."""

    supervised = True
    fixed = False
    fits: list = []

    def __init__(self, random_state=None):
        self.random_state = random_state

    def fit(self, items, y, groups=None):
        type(self).fits.append((set(items), None if groups is None else set(groups)))
        self.memory_ = dict(zip(items, np.asarray(y), strict=True))
        self.n_out_ = 2
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
    """Late fusion that keeps the memo block it was trained on."""

    seen: list = []

    def fit(self, emb, y, n_classes=None, groups=None):
        type(self).seen.append(emb.blocks["memo"].copy())
        return super().fit(emb, y, n_classes=n_classes, groups=groups)


N = 60
Y = np.tile([0, 1], N // 2)
GROUPS = np.arange(N) // 2  # two rows per patient
TRAIN, TEST = np.arange(0, 40), np.arange(40, 60)


def _plan():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"item": [f"item{i}" for i in range(N)], "x": rng.normal(size=N) + Y})
    mods = [("memo", Memorizer(), "item"), ("tab", TabularEncoder(), ["x"])]
    return FoldPlan(frame=frame, y=Y, modalities=mods, fusions={"late": Recorder(random_state=0)},
                    seed=0, n_classes=2, groups=GROUPS, robustness=False)  # fmt: skip


def test_a_fold_gives_the_fusion_out_of_fold_outputs_of_a_supervised_encoder(tmp_path):
    Memorizer.fits = []
    data = encode_fold(_plan(), 0, TRAIN, TEST, tmp_path)
    items = {f"item{i}" for i in TRAIN}
    # trained on the fold's training rows (with their groups), then once per inner fold
    assert Memorizer.fits[0] == (items, set(GROUPS[TRAIN]))
    assert len(Memorizer.fits) == 1 + 5
    for trained, groups in Memorizer.fits[1:]:
        assert trained < items and len(trained) == 32
        held_out = items - trained
        assert not groups & {int(i.removeprefix("item")) // 2 for i in held_out}
    # the training rows' block is out-of-fold: never the memorized one-hot
    np.testing.assert_array_equal(data.train.blocks["memo"], 0.5)
    # the test rows are encoded by the encoder trained on every training row (unseen: 0.5)
    np.testing.assert_array_equal(data.test.blocks["memo"], 0.5)
    np.testing.assert_array_equal(data.y_train, Y[TRAIN])


def test_the_fold_fusion_is_trained_on_the_out_of_fold_block(tmp_path):
    Memorizer.fits, Recorder.seen = [], []
    result = run_fold(_plan(), 0, TRAIN, TEST, tmp_path)
    (seen,) = Recorder.seen
    assert seen.shape == (40, 2)
    np.testing.assert_array_equal(seen, 0.5)
    assert result.oof["late"].shape == (20, 2)


def test_a_study_with_a_small_cnn_image_encoder_runs(tmp_path):
    modalities = (
        "modalities=[{name: text, encoder: TextEncoder, columns: transcript, "
        "params: {n_components: 8}}, {name: face, encoder: ImageEncoder, columns: face, "
        "params: {backend: cnn, widths: [4, 8], max_epochs: 3, device: cpu, progress: false}}]"
    )
    config = load_config(
        ROOT / "pipelines" / "sentiment.yaml",
        [modalities, "data.params.n_samples=60", "evaluation.bootstrap=20", "fusion=[late]",
         "evaluation.conformal.enabled=false", "output.save_model=false",
         "output.drilldown_rows=1"],
    )  # fmt: skip
    run = run_study(config, tmp_path, progress=False)
    summary = json.loads((run / "metrics.json").read_text())
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    assert set(summary["mean_abs_contribution"]["late"]) == {"text", "face"}
    assert 0.0 <= summary["strategies"]["late"]["accuracy"]["value"] <= 1.0
    # the CNN's head outputs feed the fusion: the drill-down leaves it out and says why
    assert "learns from the labels" in summary["drilldown"]["skipped"]["face"]
    assert {r["modality"] for r in summary["drilldown"]["records"]} == {"text"}


def test_fit_encode_then_fit_is_the_model_fit_gives():
    """The estimators' fit_encode (what a study fold calls) gives the fusion the same
    embeddings as fit: fitting on them is the same model."""
    import pytest

    from toolkit import MultimodalClassifier

    plan = _plan()
    frame, labels = plan.frame, np.where(Y == 1, "yes", "no")
    mods = [("memo", Memorizer(), "item"), ("tab", TabularEncoder(), ["x"])]
    direct = MultimodalClassifier(mods, random_state=0).fit(frame, labels, groups=GROUPS)
    staged = MultimodalClassifier(mods, random_state=0)
    emb = staged.fit_encode(frame, labels, groups=GROUPS)
    np.testing.assert_array_equal(emb.blocks["memo"], 0.5)
    assert list(staged.classes_) == ["no", "yes"]
    staged.fit(emb, labels, groups=GROUPS)
    np.testing.assert_allclose(staged.predict_proba(frame), direct.predict_proba(frame), atol=1e-12)
    with pytest.raises(TypeError, match="fit_encode needs raw data"):
        staged.fit_encode(emb, labels)
    with pytest.raises(ValueError, match="X has 60 rows but y has 3 values"):
        staged.fit_encode(frame, labels[:3])
