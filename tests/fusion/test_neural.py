"""The torch fusions on the shared NeuralFusion base: attention, tensor and low-rank fusion
(and the contract they share with gated fusion): outputs, masks, determinism, groups,
persistence, exact explanations, and a known-answer interaction task."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.utils._param_validation import InvalidParameterError

import toolkit
from toolkit import (
    AttentionFusion,
    Embeddings,
    GatedFusion,
    LowRankFusion,
    MultimodalClassifier,
    MultimodalRegressor,
    TabularEncoder,
    TensorFusion,
)
from toolkit.fusion import FUSIONS, NeuralFusion, make_fusion
from toolkit.persistence import toolkit_types

NEW = {"attention": AttentionFusion, "tensor": TensorFusion, "lowrank": LowRankFusion}
ALL = {**NEW, "gated": GatedFusion}


def _emb(n=90, seed=0, n_classes=2):
    """Three modalities; the label is read from 'a'; 'c' is absent from every fifth row."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    a = (y[:, None] + rng.normal(0, 0.5, (n, 3))).astype(np.float32)
    b = rng.normal(size=(n, 2)).astype(np.float32)
    c = rng.normal(size=(n, 4)).astype(np.float32)
    mask = np.ones((n, 3), dtype=bool)
    mask[::5, 2] = False
    c[~mask[:, 2]] = np.nan
    return Embeddings({"a": a, "b": b, "c": c}, mask), y


def make_interaction(n, d=4, flip=0.1, random_state=0):
    """Two modalities of ``d`` standard-normal dims each; the label is
    sign(a_0) XOR sign(b_0), flipped with probability ``flip``.

    Each modality alone carries no information (P(y=1 | a) = 1/2 for every a), the pair
    determines the clean label, so the Bayes accuracy is exactly 1 - flip.
    """
    rng = np.random.default_rng(random_state)
    a = rng.normal(size=(n, d)).astype(np.float32)
    b = rng.normal(size=(n, d)).astype(np.float32)
    clean = (a[:, 0] > 0) ^ (b[:, 0] > 0)
    y = np.where(rng.random(n) < flip, ~clean, clean).astype(int)
    return Embeddings({"a": a, "b": b}), y


# -- contract -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NEW))
def test_registered_exported_and_trusted_by_persistence(name):
    cls = NEW[name]
    assert FUSIONS[name] is cls and issubclass(cls, NeuralFusion)
    assert getattr(toolkit, cls.__name__) is cls and cls.__name__ in toolkit.__all__
    assert f"toolkit.fusion.{cls.__module__.rsplit('.', 1)[1]}.{cls.__name__}" in toolkit_types()
    assert type(make_fusion(name)) is cls


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("n_classes", [2, 3])
def test_classification_outputs_are_distributions(name, n_classes):
    emb, y = _emb(n_classes=n_classes)
    fusion = ALL[name](max_epochs=4, random_state=0).fit(emb, y, n_classes=n_classes)
    p = fusion.predict_output(emb)
    assert p.shape == (90, n_classes) and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    logits = fusion.decision_function(emb)
    assert logits.shape == ((90,) if n_classes == 2 else (90, n_classes))
    # the class with the largest logit is the most probable one
    if n_classes == 2:
        np.testing.assert_array_equal(logits > 0, p[:, 1] > p[:, 0])
    else:
        np.testing.assert_array_equal(logits.argmax(1), p.argmax(1))
    assert fusion.n_epochs_ == len(fusion.history_) <= 4
    assert 0 <= fusion.best_epoch_ < fusion.n_epochs_
    assert {"epoch", "train_loss", "valid_loss"} <= set(fusion.history_[0])


@pytest.mark.parametrize("name", sorted(NEW))
def test_regression_learns_a_linear_target(name):
    emb, _ = _emb(n=200)
    target = 10.0 + 3.0 * emb.blocks["a"][:, 0].astype(float)
    fusion = NEW[name](max_epochs=60, random_state=0).fit(emb, target)
    pred = fusion.predict_output(emb)
    assert pred.shape == (200,)
    np.testing.assert_allclose(fusion.prior_, [target.mean()])
    assert np.corrcoef(pred, target)[0, 1] > 0.9
    assert np.mean((pred - target) ** 2) < 0.5 * np.var(target)  # R^2 above 0.5


# -- masks ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NEW))
def test_the_network_never_reads_an_absent_block(name):
    """Garbage in an absent modality's input (even past the scaler) changes nothing; the
    absent modality is not the same as a present one at its training mean."""
    import torch

    emb, y = _emb()
    fusion = NEW[name](max_epochs=3, random_state=0).fit(emb, y, n_classes=2)
    xs, mask = fusion._tensors(emb)
    absent = ~mask[:, 2]
    noisy = [x.clone() for x in xs]
    noisy[2][absent] = torch.randn(int(absent.sum()), 4, dtype=torch.float64) * 100
    with torch.no_grad():
        clean, dirty = fusion.module_(xs, mask), fusion.module_(noisy, mask)
        at_mean = fusion.module_(xs, torch.ones_like(mask))  # absent rows hold the mean (0)
    torch.testing.assert_close(dirty, clean, rtol=0, atol=0)
    assert (at_mean[absent] - clean[absent]).abs().max() > 1e-6


@pytest.mark.parametrize("name", sorted(NEW))
def test_rows_missing_modalities_get_predictions(name):
    emb, y = _emb()
    fusion = NEW[name](max_epochs=3, random_state=0).fit(emb, y, n_classes=2)
    p = fusion.predict_output(emb)
    only_a = emb.mask.copy()
    only_a[:, 1:] = False
    q = fusion.predict_output(emb.with_mask(only_a))
    assert np.isfinite(q).all()
    # hiding b changes every row; hiding c (absent from rows 0, 5, ...) changes only those
    assert (np.abs(q - p).max(axis=1) > 1e-9).all()
    without_c = emb.mask.copy()
    without_c[:, 2] = False
    r = fusion.predict_output(emb.with_mask(without_c))
    np.testing.assert_array_equal(r[~emb.mask[:, 2]], p[~emb.mask[:, 2]])
    # a row with no modality has one output whatever its blocks hold (no NaN for attention)
    none = fusion.predict_output(emb.with_mask(np.zeros_like(emb.mask)))
    assert np.isfinite(none).all()
    np.testing.assert_allclose(none, np.tile(none[0], (90, 1)), atol=1e-12)


# -- determinism and groups -----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NEW))
def test_same_seed_same_model(name):
    emb, y = _emb()
    first = NEW[name](max_epochs=3, random_state=7).fit(emb, y, n_classes=2).predict_output(emb)
    again = NEW[name](max_epochs=3, random_state=7).fit(emb, y, n_classes=2).predict_output(emb)
    other = NEW[name](max_epochs=3, random_state=8).fit(emb, y, n_classes=2).predict_output(emb)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-6


@pytest.mark.parametrize("name", sorted(ALL))
def test_validation_rows_are_whole_groups(name, monkeypatch):
    emb, y = _emb(n=120)
    groups = np.repeat(np.arange(12), 10)
    seen = []
    original = NeuralFusion._validation_loss

    def spy(self, xs, mask, target, val_idx, loss_fn):
        seen.append(val_idx.numpy().copy())
        return original(self, xs, mask, target, val_idx, loss_fn)

    monkeypatch.setattr(NeuralFusion, "_validation_loss", spy)
    ALL[name](max_epochs=2, random_state=0).fit(emb, y, n_classes=2, groups=groups)
    val = np.unique(seen[0])
    assert len(seen) == 2 and all(np.array_equal(s, seen[0]) for s in seen)
    held = np.unique(groups[val])
    assert 0 < len(held) < 12
    np.testing.assert_array_equal(np.sort(val), np.flatnonzero(np.isin(groups, held)))
    with pytest.raises(ValueError, match="groups must hold one label per training row"):
        ALL[name](max_epochs=1).fit(emb, y, n_classes=2, groups=groups[:-1])


# -- parameters and refusals ----------------------------------------------------------


@pytest.mark.parametrize(
    "fusion, message",
    [
        (TensorFusion(hidden_size=0), "'hidden_size' parameter of TensorFusion must be"),
        (LowRankFusion(rank=0), "'rank' parameter of LowRankFusion must be"),
        (AttentionFusion(modality_dropout=1.0), "'modality_dropout' parameter"),
        (AttentionFusion(d_model=30, n_heads=4), r"d_model \(30\) must be a multiple of n_heads"),
    ],
)
def test_bad_parameters_are_refused_when_fit_starts(fusion, message):
    emb, y = _emb()
    with pytest.raises((InvalidParameterError, ValueError), match=message):
        fusion.fit(emb, y, n_classes=2)


def test_tensor_fusion_refuses_a_product_above_the_bound():
    rng = np.random.default_rng(0)
    emb = Embeddings({f"m{j}": rng.normal(size=(30, 2)) for j in range(5)})
    y = np.arange(30) % 2
    with pytest.raises(ValueError, match=r"\(8 \+ 1\) \*\* 5 = 59,049 features.*LowRankFusion"):
        TensorFusion(hidden_size=8).fit(emb, y, n_classes=2)
    # the bound itself is accepted: four modalities of 9 units (10 ** 4 = 10,000)
    four = Embeddings({f"m{j}": emb.blocks[f"m{j}"] for j in range(4)})
    fitted = TensorFusion(hidden_size=9, max_epochs=1).fit(four, y, n_classes=2)
    assert fitted.module_.head[1].in_features == 10_000
    # LowRankFusion takes the five
    assert LowRankFusion(max_epochs=1).fit(emb, y, n_classes=2).predict_output(emb).shape == (
        30,
        2,
    )


@pytest.mark.parametrize("name", sorted(ALL))
def test_malformed_network_description_is_refused(name):
    emb, y = _emb()
    fusion = ALL[name](max_epochs=1).fit(emb, y, n_classes=2)
    fusion.module_spec_ = {**fusion.module_spec_, "dims": [-5, 2, 4]}
    with pytest.raises(ValueError, match="network's description is malformed"):
        fusion.expected_weights()
    fusion.module_spec_ = {k: v for k, v in fusion.module_spec_.items() if k != "n_out"}
    with pytest.raises(ValueError, match="network's description is malformed"):
        fusion.expected_weights()



def test_attention_scales_each_block_by_its_own_evidence():
    """Block 'a' carries the label, 'b' and 'c' are noise: their scales are small, they
    enter the attention bias and the network's description, and a description without
    them (a network saved before them) builds the plain present-token mean."""
    emb, y = _emb()
    fusion = AttentionFusion(max_epochs=3, random_state=0).fit(emb, y, n_classes=2)
    scales = fusion.block_scales_
    assert scales["a"] == 1.0 and max(scales["b"], scales["c"]) <= 0.2, scales
    assert fusion.block_params_["a"] > fusion.block_params_["b"]
    np.testing.assert_allclose(fusion.module_spec_["log_scales"], np.log(list(scales.values())))
    np.testing.assert_allclose(fusion.module_.log_scales.numpy(), np.log(list(scales.values())))
    assert "log_scales" not in fusion.module_.state_dict()  # described, not a weight
    old = {k: v for k, v in fusion.module_spec_.items() if k != "log_scales"}
    assert fusion._build_module(old).present_mean
    bad = {**fusion.module_spec_, "log_scales": [0.0, 0.5, -1.0]}
    with pytest.raises(ValueError, match="log_scales must hold one finite value <= 0"):
        fusion._build_module(bad)
    one = emb.select(["a"])
    single = AttentionFusion(max_epochs=2, random_state=0).fit(one, y, n_classes=2)
    assert single.block_scales_ is None and single.module_spec_["log_scales"] == [0.0]

# -- persistence and explanations through the estimators ------------------------------


def _frame(n=120, seed=0):
    """Three tabular modalities; y depends on 'lab' only; 'vital' missing in 1 row of 6."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    df = pd.DataFrame(
        {
            "lab": y + rng.normal(0, 0.6, n),
            "lab2": rng.normal(size=n),
            "noise": rng.normal(size=n),
            "vital": np.where(np.arange(n) % 6 == 0, np.nan, rng.normal(size=n)),
        }
    )
    return df, y


def _mods():
    return [
        ("lab", TabularEncoder(), ["lab", "lab2"]),
        ("noise", TabularEncoder(), ["noise"]),
        ("vital", TabularEncoder(), ["vital"]),
    ]


@pytest.mark.parametrize("name", sorted(NEW))
def test_save_load_round_trip_gives_identical_predictions(name, tmp_path):
    df, y = _frame()
    clf = MultimodalClassifier(_mods(), fusion=NEW[name](max_epochs=5), random_state=0).fit(df, y)
    folder = toolkit.save(clf, tmp_path / "model")
    assert (folder / "fusion.safetensors").exists()
    loaded = toolkit.load(folder)
    assert type(loaded.fusion_) is NEW[name]
    assert loaded.fusion_.module_spec_ == clf.fusion_.module_spec_
    np.testing.assert_array_equal(loaded.predict_proba(df), clf.predict_proba(df))
    reg = MultimodalRegressor(_mods(), fusion=NEW[name](max_epochs=5), random_state=0)
    reg.fit(df, df["lab"] * 3)
    loaded = toolkit.load(toolkit.save(reg, tmp_path / "reg"))
    np.testing.assert_array_equal(loaded.predict(df), reg.predict(df))


@pytest.mark.parametrize("name", sorted(NEW))
def test_explanations_are_exact_and_absent_modalities_get_zero(name):
    df, y = _frame()
    clf = MultimodalClassifier(_mods(), fusion=NEW[name](max_epochs=10), random_state=0)
    clf.fit(df, y)
    exp = clf.explain(df)
    proba = clf.predict_proba(df)
    np.testing.assert_allclose(exp.values.sum(axis=1) + exp.base_values, proba[:, 1], atol=1e-9)
    np.testing.assert_allclose(exp.base_values, np.mean(y))
    missing = df["vital"].isna().to_numpy()
    assert (exp.values[missing, 2] == 0.0).all()
    assert (exp.values[~missing, 2] != 0.0).all()


# -- known answers --------------------------------------------------------------------

BAYES = 0.9  # make_interaction(flip=0.1): every rule errs on the flipped 10%


def test_tensor_fusion_learns_a_two_modality_interaction():
    """Each modality alone is at chance; the pair gives the label up to 10% flips. (Attention
    and low-rank fusion reach it too, more slowly: their numbers are in the report of the
    commit that added them; tensor fusion is the fast one to check here.)"""
    emb, y = make_interaction(700, random_state=1)
    test, y_test = make_interaction(2000, random_state=2)
    fusion = TensorFusion(random_state=0).fit(emb, y, n_classes=2)
    accuracy = np.mean(fusion.predict_output(test).argmax(1) == y_test)
    assert accuracy >= 0.9 * BAYES, (accuracy, fusion.best_epoch_)
    # neither modality alone helps: hiding one leaves the prediction near chance
    only_a = np.column_stack([test.mask[:, 0], np.zeros(len(y_test), bool)])
    alone = np.mean(fusion.predict_output(test.with_mask(only_a)).argmax(1) == y_test)
    assert abs(alone - 0.5) < 0.06


@pytest.mark.parametrize(
    "name",
    ["attention", "lowrank", "tensor"],
)
def test_one_informative_modality_gets_most_of_the_credit(name):
    """Only 'lab' carries the label (Bayes accuracy about 0.80); 'noise' and 'vital' are
    distractors. Early fusion on the same rows: 0.71 accuracy, 0.86 of the credit."""
    df, y = _frame(n=400, seed=1)
    clf = MultimodalClassifier(_mods(), fusion=name, random_state=0).fit(df[:300], y[:300])
    assert clf.score(df[300:], y[300:]) > 0.65
    exp = clf.explain(df[300:])
    credit = np.abs(exp.values).mean(axis=0)
    assert credit[0] / credit.sum() >= 0.8, credit
