"""toolkit.diagnostics.group_transfer: the transfer check per modality, on a generator
whose one modality is person-specific and whose other carries the label in everyone."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator

from toolkit import Embeddings, MultimodalClassifier, MultimodalRegressor, TabularEncoder
from toolkit.diagnostics import group_scores, group_transfer

N_GROUPS, PER_GROUP = 10, 30
VOICE = [f"v{i}" for i in range(24)]


def person_specific(seed: int, regression: bool = False):
    """(frame, y, groups): ``voice`` identifies the person (a strong per-person signature)
    and shows the label through a template of that person's own (a within-person shortcut
    that means nothing for a new person); ``scan`` shows the label the same way in
    everyone (a weaker, transferable signal)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(N_GROUPS), PER_GROUP)
    n = len(groups)
    signature = 2.0 * rng.normal(size=(N_GROUPS, len(VOICE)))
    if regression:
        y = rng.normal(size=n)
        slope = rng.normal(size=(N_GROUPS, len(VOICE)))  # each person's own direction
        voice = signature[groups] + slope[groups] * y[:, None]
        scan = 0.8 * y[:, None] + 0.6 * rng.normal(size=(n, 2))
    else:
        y = rng.integers(0, 2, n)
        own_way = rng.normal(size=(N_GROUPS, 2, len(VOICE)))
        voice = signature[groups] + own_way[groups, y]
        scan = y[:, None] + 0.9 * rng.normal(size=(n, 2))
    voice = voice + 0.3 * rng.normal(size=voice.shape)
    frame = pd.DataFrame(voice, columns=VOICE).assign(s0=scan[:, 0], s1=scan[:, 1])
    return frame, y, groups


def _estimator(regression: bool = False):
    Estimator = MultimodalRegressor if regression else MultimodalClassifier
    return Estimator(
        [("voice", TabularEncoder(), VOICE), ("scan", TabularEncoder(), ["s0", "s1"])],
        random_state=0,
    )


def _check(seed: int, **kwargs):
    frame, y, groups = person_specific(seed)
    kwargs = {"model": False, "n_boot": 200, "group_name": "people", **kwargs}
    return group_transfer(_estimator(), frame, y, groups, cv=5, **kwargs)


@pytest.fixture(scope="module")
def seed0():
    return _check(0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flags_the_person_specific_modality_and_not_the_transferable_one(seed, seed0):
    check = seed0 if seed == 0 else _check(seed)
    table = check.modalities
    assert check.flagged == ["voice"]
    assert table.loc["voice", "within"] - table.loc["voice", "across"] > 0.2
    assert table.loc["voice", "gap_low"] > 0
    assert table.loc["voice", "identifies_groups"]
    assert not table.loc["scan", "identifies_groups"]
    assert abs(table.loc["scan", "gap"]) < 0.05
    assert table.loc["scan", "status"] == "transfers"
    sentence = table.loc["voice", "sentence"]
    assert sentence.startswith("voice: ") and "within people" in sentence
    assert "it identifies people" in sentence


def test_values_are_in_range_with_known_counts(seed0):
    table = seed0.modalities
    assert list(table.index) == ["voice", "scan"]
    assert (table["n_rows"] == N_GROUPS * PER_GROUP).all()
    for col in ("within", "across", "across_low", "across_high", "group_id"):
        assert table[col].between(0, 1).all(), col
    assert (table["across_low"] <= table["across_high"]).all()
    assert (table["gap_low"] <= table["gap_high"]).all()
    assert np.allclose(table["gap"], table["within"] - table["across"])
    # ten groups of equal size: always guessing the largest is right 1 time in 10
    assert np.allclose(table["group_id_chance"], 1 / N_GROUPS)
    assert table.loc["voice", "group_id"] > 0.9
    assert seed0.n_splits == {"within": 5, "across": 5}
    assert seed0.n_groups == N_GROUPS
    assert seed0.groups is None and seed0.model is None


def test_model_scores_over_held_out_groups():
    check = _check(3, model=True)
    groups, model = check.groups, check.model
    assert list(groups.index) == list(range(N_GROUPS))
    assert (groups["n_rows"] == PER_GROUP).all()
    assert set(groups["fold"]) == set(range(5))
    assert groups["score"].between(0, 1).all()
    assert model["worst"] == groups["score"].min()
    assert model["worst_group"] == groups["score"].idxmin()
    assert model["spread"] == pytest.approx(groups["score"].max() - groups["score"].min())
    # equal group sizes: pooled accuracy is the mean of the groups' accuracies
    assert model["pooled"] == pytest.approx(groups["score"].mean())
    assert model["std"] == pytest.approx(groups["score"].std(ddof=1))
    assert model["pooled"] > 0.7  # the transferable scan signal carries the model
    assert check.sentences()[-1].startswith("late fusion on held-out people: ")
    assert model["label"] == "late fusion"


def test_readable_and_json_ready(seed0):
    text = repr(seed0)
    assert text.startswith("Transfer across people (accuracy")
    assert "- voice: " in text and "- scan: " in text
    payload = json.loads(json.dumps(seed0.to_dict(), allow_nan=False))
    assert payload["flagged"] == ["voice"]
    assert [m["modality"] for m in payload["modalities"]] == ["voice", "scan"]
    voice = payload["modalities"][0]
    assert voice["within"] == pytest.approx(seed0.modalities.loc["voice", "within"])
    assert payload["sentences"][0] == seed0.modalities.loc["voice", "sentence"]
    assert "<li>voice: " in seed0._repr_html_()


def test_embeddings_give_the_same_check_as_raw_data(seed0):
    frame, y, groups = person_specific(0)
    emb = _estimator().fit_encode(frame, y, groups)
    check = group_transfer(
        _estimator(), emb, y, groups, cv=5, model=False, n_boot=200, group_name="people"
    )
    pd.testing.assert_frame_equal(check.modalities, seed0.modalities)


def test_absent_rows_are_left_out_of_a_modality():
    frame, y, groups = person_specific(4)
    frame.loc[:59, ["s0", "s1"]] = np.nan
    check = group_transfer(_estimator(), frame, y, groups, cv=5, model=False, n_boot=200)
    assert check.modalities.loc["scan", "n_rows"] == len(y) - 60
    assert check.modalities.loc["voice", "n_rows"] == len(y)


def test_a_fitted_estimator_is_used_as_a_specification_only():
    frame, y, groups = person_specific(5)
    clf = _estimator().fit(frame, y)
    fusion = clf.fusion_
    check = group_transfer(clf, frame, y, groups, cv=5, model=False, n_boot=200)
    assert clf.fusion_ is fusion
    assert check.flagged == ["voice"]


def test_regression_flags_the_person_specific_modality():
    frame, y, groups = person_specific(0, regression=True)
    check = group_transfer(
        _estimator(regression=True), frame, y, groups, cv=5, model=False, n_boot=200
    )
    assert check.metric == "r2"
    assert check.flagged == ["voice"]
    assert check.modalities.loc["scan", "across"] > 0.4


class GroupRate(BaseEstimator):
    """A supervised encoder that learns each group's rate of label 1 from its training
    items ('g<k>/<i>'); on an item of a group it did not train on it outputs 0.5."""

    supervised = True
    fixed = False

    def __init__(self, random_state=None):
        self.random_state = random_state

    def fit(self, items, y, groups=None):
        names = [s.split("/")[0] for s in items]
        self.rate_ = pd.Series(np.asarray(y, float)).groupby(names).mean().to_dict()
        return self

    def encode(self, items):
        return self.encode_scores(items)

    def encode_scores(self, items):
        rate = np.array([self.rate_.get(s.split("/")[0], 0.5) for s in items])
        return np.column_stack([1 - rate, rate]).astype(np.float32), np.ones(len(items), bool)


def test_an_encoder_that_learns_from_labels_is_cross_fitted_over_rows_and_over_groups():
    """Within: the encoder is cross-fitted over rows, so a row's group rate is known and
    predicts its label (rates 0.85 / 0.15); across: over groups, so it is 0.5 everywhere.
    Reading one set of blocks for both would show no drop. The rate takes two values, so
    it does not tell the 12 groups apart: the sentence says the signal does not carry over."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(12), 20)
    rate = np.where(np.arange(12) % 2, 0.85, 0.15)
    y = (rng.random(len(groups)) < rate[groups]).astype(int)
    frame = pd.DataFrame(
        {"item": [f"g{g}/{i}" for i, g in enumerate(groups)], "x": y + rng.normal(size=len(y))}
    )
    est = MultimodalClassifier(
        [("rate", GroupRate(), "item"), ("x", TabularEncoder(), ["x"])],
        random_state=0,
        encoder_cv=4,
    )
    check = group_transfer(est, frame, y, groups, cv=4, model=False, n_boot=200)
    rate = check.modalities.loc["rate"]
    assert rate["within"] > 0.75
    assert rate["across"] == pytest.approx(0.5, abs=0.1)
    assert check.flagged == ["rate"]
    assert not rate["identifies_groups"]
    assert "its signal does not carry over to new groups" in rate["sentence"]


def test_the_flag_rule_on_known_rows():
    """Flagged: drop >= min_gap and its interval above 0; a drop >= min_gap whose interval
    holds 0 is 'uncertain'; a significant drop below min_gap 'transfers'; a modality not
    min_gap above chance even within groups has 'little signal' (it only identifies sites). A modality
    identifies the groups when its accuracy closes half the distance from chance to 1."""
    from toolkit.diagnostics.result import add_verdicts

    table = pd.DataFrame(
        {
            "within": [0.9, 0.9, 0.9, 0.9, 0.48],
            "across": [0.7, 0.7, 0.87, 0.7, 0.52],
            "gap": [0.2, 0.2, 0.03, 0.2, -0.04],
            "gap_low": [0.1, -0.05, 0.01, 0.1, -0.1],
            "gap_high": [0.3, 0.45, 0.05, 0.3, 0.02],
            "group_id": [0.55, 0.55, 0.9, 0.5, 1.0],
            "group_id_chance": [0.1, 0.1, 0.1, 0.1, 0.1],
            "chance": [0.5, 0.5, 0.5, 0.5, 0.5],
            "signal": [0.4, 0.4, 0.4, 0.4, -0.02],
        },
        index=["a", "b", "c", "d", "e"],
    )
    out = add_verdicts(table, 0.05, "sites")
    assert out["flagged"].tolist() == [True, False, False, True, False]
    assert out["status"].tolist() == [
        "specific to the groups", "uncertain", "transfers", "specific to the groups",
        "little signal",
    ]  # fmt: skip
    assert out["identifies_groups"].tolist() == [True, True, True, False, True]
    assert out.loc["e", "sentence"] == (
        "e: 0.48 within sites, 0.52 across sites — it carries little signal about the label "
        "even within sites (chance 0.50), so whether it transfers cannot be told."
    )
    assert out.loc["a", "sentence"] == (
        "a: 0.90 within sites, 0.70 across sites — it identifies sites (tells them apart with "
        "accuracy 0.55, chance 0.10): its signal is specific to the sites rather than the "
        "label (drop +0.20, 95% interval [+0.10, +0.30])."
    )
    assert "too few or too varied to confirm" in out.loc["b", "sentence"]
    assert out.loc["c", "sentence"].endswith(
        "it transfers (drop +0.03, 95% interval [+0.01, +0.05])."
    )
    assert "does not carry over to new sites" in out.loc["d", "sentence"]


def test_group_scores_known_answer():
    y = np.array([0, 1, 0, 1, 1, 1])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9], [0.4, 0.6]])
    table, summary = group_scores(y, proba, ["a", "a", "b", "b", "c", "c"])
    assert table["score"].tolist() == [1.0, 0.0, 1.0]
    assert summary["worst_group"] == "b" and summary["worst"] == 0.0
    assert summary["pooled"] == pytest.approx(4 / 6)
    assert summary["spread"] == 1.0 and summary["n_groups"] == 3


def test_brier_per_group_is_defined_on_one_row_of_one_class():
    """Brier (binary: halved, as scikit-learn's) scores groups that AUROC cannot, and the
    model sentence names it, since it is not the check's score."""
    y = np.array([0, 1, 1, 0])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    table, summary = group_scores(y, proba, ["a", "b", "c", "c"], scoring="brier")
    assert table["score"].tolist() == pytest.approx([0.01, 0.04, (0.36 + 0.25) / 2])
    assert summary["worst_group"] == "c" and summary["best_group"] == "a"
    assert summary["greater_is_better"] is False
    assert summary["pooled"] == pytest.approx((0.01 + 0.04 + 0.36 + 0.25) / 4)
    assert summary["spread"] == pytest.approx(0.305 - 0.01)
    auroc, _ = group_scores(y, proba, ["a", "b", "c", "c"], scoring="roc_auc")
    assert auroc["score"].isna().tolist() == [True, True, False]
    three = np.array([[0.5, 0.25, 0.25]])  # three classes: the unhalved sum
    assert group_scores([0], three, ["a"], scoring="brier")[1]["pooled"] == pytest.approx(0.375)
    check = _check(0, model=False)
    check = dataclasses.replace(check, groups=table, model={**summary, "label": "late"})
    assert check.sentences()[-1] == (
        "late on held-out people (brier per group, lower is better): 0.16 overall; per group "
        "from 0.30 (worst: c) to 0.01 (a), mean 0.12, s.d. 0.16, spread 0.29 over 3 people."
    )


def test_groups_of_few_rows_fit_without_the_many_classes_warning():
    """Telling 60 people of 2 rows apart is a classification with many classes by design:
    scikit-learn's "number of unique classes" warning is not raised for it."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), 2)
    y = np.repeat(rng.integers(0, 2, 60), 2)
    frame = pd.DataFrame({"v0": y + rng.normal(size=120), "s0": rng.normal(size=120)})
    estimator = MultimodalClassifier(
        [("voice", TabularEncoder(), ["v0"]), ("scan", TabularEncoder(), ["s0"])], random_state=0
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "The number of unique classes")
        check = group_transfer(estimator, frame, y, groups, cv=3, model=False, n_boot=100)
    assert check.modalities.loc["voice", "group_id_chance"] == pytest.approx(1 / 60)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda y, g: (y, g[:-1]), r"groups has 299 labels but X has 300 rows"),
        (lambda y, g: (y, np.zeros_like(g)), r"groups holds one group only \(0\)"),
        (lambda y, g: (y, np.arange(len(g))), r"every row is its own group \(300 groups"),
        # the estimator's own groups check (which group_transfer's encoding runs) answers first
        (lambda y, g: (y, y.copy()), r"groups are the labels under other names.*not the labels"),
        (lambda y, g: (y, None), r"groups is None"),
        (lambda y, g: (y, np.where(g == 3, np.nan, g)), r"groups holds missing labels"),
        (
            lambda y, g: (np.where(g == 0, 2, y), g),
            r"all 30 rows of class 2 are in one group \(0\)",
        ),
    ],
)
def test_bad_groups_are_refused_with_what_to_fix(change, message):
    frame, y, groups = person_specific(0)
    y, groups = change(y, groups)
    with pytest.raises(ValueError, match=message):
        group_transfer(_estimator(), frame, y, groups, model=False)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"cv": 1},
            ValueError,
            r"'cv' parameter of group_transfer must be an int in the range \[2, inf\)",
        ),
        ({"scoring": "r2"}, ValueError, r"scoring='r2' is not one of .* \(a score for the other"),
        (
            {"scoring": "f2"},
            ValueError,
            r"'scoring' parameter of group_transfer must be a str among",
        ),
        ({"min_gap": -0.1}, ValueError, r"'min_gap' parameter of group_transfer must be a float"),
        ({"min_gap": float("nan")}, ValueError, r"'min_gap' parameter"),
        ({"n_boot": 10}, ValueError, r"'n_boot' parameter of group_transfer must be an int in"),
        ({"group_name": ""}, ValueError, r"group_name is empty; name what a group is"),
        ({"group_name": 3}, TypeError, r"'group_name' parameter of group_transfer must be an"),
    ],
)
def test_bad_options_are_refused(kwargs, error, message):
    frame, y, groups = person_specific(0)
    with pytest.raises(error, match=message):
        group_transfer(_estimator(), frame, y, groups, **kwargs)


def test_not_a_multimodal_estimator_is_refused():
    from sklearn.linear_model import LogisticRegression

    frame, y, groups = person_specific(0)
    with pytest.raises(TypeError, match="MultimodalClassifier or MultimodalRegressor"):
        group_transfer(LogisticRegression(), frame, y, groups)
    with pytest.raises(TypeError, match=r"got the class MultimodalClassifier"):
        group_transfer(MultimodalClassifier, frame, y, groups)


def test_a_head_of_your_own():
    from sklearn.linear_model import LogisticRegression, RidgeClassifier

    frame, y, groups = person_specific(0)
    check = group_transfer(
        _estimator(), frame, y, groups, head=LogisticRegression(C=0.1), model=False, n_boot=200
    )
    assert check.flagged == ["voice"]
    with pytest.raises(TypeError, match=r"head RidgeClassifier has no predict_proba"):
        group_transfer(_estimator(), frame, y, groups, head=RidgeClassifier())


def test_embeddings_with_missing_labels_are_refused():
    frame, y, groups = person_specific(0)
    emb = Embeddings({"a": frame[VOICE].to_numpy()})
    labels = y.astype(float)
    labels[7] = np.nan
    est = MultimodalClassifier([("a", TabularEncoder(), VOICE)])
    with pytest.raises(ValueError, match=r"y holds missing values at rows \[7\]"):
        group_transfer(est, emb, labels, groups, model=False)


@pytest.fixture(scope="module")
def av_digits_checks(real_data, tmp_path_factory):
    """The check on 400 training-speaker rows of AV-Digits (image noise 4) for three image
    pairings; the audio encoder is fixed, so its embeddings are cached across pairings."""
    from toolkit.datasets import load_av_digits

    cache = tmp_path_factory.mktemp("transfer_cache")
    rows = np.sort(np.random.default_rng(0).choice(2000, 400, replace=False))
    checks = {}
    for pairing in (0, 1, 2):
        data = load_av_digits(real_data, image_noise=4.0, random_state=pairing)
        df = data.frame[data.frame["split"] == "train"].iloc[rows]
        clf = MultimodalClassifier(data.modalities, memory=cache, random_state=0)
        checks[pairing] = group_transfer(
            clf, df, df["label"], df["speaker"], cv=4, model=False, group_name="speakers"
        )
    return checks


def test_av_digits_audio_is_speaker_specific_and_image_is_not(av_digits_checks):
    """The default audio block scores about 0.95 across rows of seen speakers and about 0.7
    on held-out speakers, and tells the speakers apart; the image block loses nothing."""
    for pairing, check in av_digits_checks.items():
        table = check.modalities
        assert check.flagged == ["audio"], pairing
        assert table.loc["audio", "identifies_groups"], pairing
        assert table.loc["audio", "gap"] > 0.15, pairing
        assert abs(table.loc["image", "gap"]) < 0.05, pairing
        assert table.loc["image", "across"] > 0.8, pairing
        assert table.loc["audio", "sentence"].startswith("audio: "), pairing
