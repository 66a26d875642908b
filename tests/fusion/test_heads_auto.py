"""Inner-CV heads, calibrated stacking, groups in every inner split, and fusion="auto"."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_validate

from toolkit import Embeddings, MultimodalClassifier, MultimodalRegressor, load, save
from toolkit.fusion import AutoFusion, EarlyFusion, LateFusion, _heads
from toolkit.fusion._heads import _one_se, calibrate, fit_calibrators, fit_head, shared_heads
from toolkit.model_selection import inner_folds, validation_split


def three_views(seed, n, agree=0.8):
    """Three tabular views, each carrying a copy of y that agrees with it w.p. ``agree``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    blocks = {}
    for m, width in enumerate((4, 16, 64)):
        view = np.where(rng.random(n) < agree, y, 1 - y)
        block = rng.normal(size=(n, width))
        block[:, :2] += 1.5 * (2 * view[:, None] - 1)
        blocks[f"v{m}"] = block
    return Embeddings(blocks), y


def leaky_groups(seed, n_groups=30, per_group=20):
    """Modality 'who' identifies the group, whose rows mostly share one label (useless on
    new groups); modality 'cue' carries a weak real cue of the label (75%)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group)
    group_label = rng.integers(0, 2, n_groups)
    y = np.where(rng.random(len(groups)) < 0.9, group_label[groups], 1 - group_label[groups])
    who = rng.normal(size=(n_groups, 8))[groups] + 0.05 * rng.normal(size=(len(groups), 8))
    cue_bit = np.where(rng.random(len(groups)) < 0.75, y, 1 - y)
    cue = rng.normal(size=(len(groups), 2))
    cue[:, 0] += 2.0 * (2 * cue_bit - 1)
    return Embeddings({"who": who, "cue": cue}), y, groups


# -- inner splits -------------------------------------------------------------------------


def test_inner_folds_keep_each_group_in_one_test_fold():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    groups = np.repeat(np.arange(12), 10)
    folds = inner_folds(y, groups, 5, True, seed=0)
    assert len(folds) == 5
    seen = np.zeros(len(y), int)
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        seen[test] += 1
    assert (seen == 1).all()


def test_inner_folds_shrink_to_the_rarest_class_and_the_groups():
    y = np.array([0] * 20 + [1] * 3)
    assert len(inner_folds(y, None, 5, True, 0)) == 3
    assert len(inner_folds(np.arange(10.0), np.repeat([0, 1], 5), 5, False, 0)) == 2
    assert inner_folds(np.array([0] * 9 + [1]), None, 5, True, 0) is None
    assert inner_folds(np.zeros(8), np.zeros(8), 5, False, 0) is None


def test_validation_split_holds_out_whole_groups():
    groups = np.repeat(np.arange(10), 6)
    train, val = validation_split(60, groups, 0.2, seed=3)
    assert not set(groups[train]) & set(groups[val])
    assert len(val) == 12  # two whole groups of 6 reach 20%
    assert sorted(np.concatenate([train, val])) == list(range(60))
    train, val = validation_split(10, None, 0.2, seed=0)  # below 20 rows: no validation
    assert len(val) == 0 and len(train) == 10


def test_groups_of_the_wrong_length_or_with_missing_labels_are_refused():
    emb, y = three_views(0, 60)
    clf = MultimodalClassifier(random_state=0)
    with pytest.raises(ValueError, match=r"one label per training row \(60\)"):
        clf.fit(emb, y, groups=np.zeros(59))
    groups = np.array(["p1"] * 30 + [None] * 30, dtype=object)
    with pytest.raises(ValueError, match=r"missing labels at rows \[30, 31"):
        clf.fit(emb, y, groups=groups)


# -- heads ----------------------------------------------------------------------------------


def test_one_standard_error_rule_picks_the_most_regularized_point_within_one_se():
    # grid ordered most regularized first; the best mean is index 3 (0.50), its SE is
    # std([0.4, 0.6], ddof=1) / sqrt(2) = 0.1, so index 1 (mean 0.58) is within, 0 is not
    losses = np.array([[0.7, 0.7], [0.58, 0.58], [0.55, 0.55], [0.4, 0.6], [0.6, 0.6]])
    assert _one_se(losses, np.array([10.0, 10.0]), order_regularized_first=True) == 1


def test_head_capacity_follows_the_training_rows():
    """A clean, strong signal on many rows gets a weakly regularized head; pure noise gets
    the most regularized one (its weights stay near 0: little Shapley credit)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 5))
    y = (X[:, 0] + 0.05 * rng.normal(size=600) > 0).astype(int)
    strong = fit_head(X, y, n_classes=2, seed=0)
    noise = fit_head(rng.normal(size=(600, 5)), y, n_classes=2, seed=0)
    assert strong.param >= 10.0
    assert noise.param == pytest.approx(1e-3)
    assert np.abs(noise.head.coef_).max() < 0.05
    assert strong.oof.shape == (600, 2)
    # out-of-fold, so the strong head's held-out accuracy is honest and high
    assert np.mean(strong.oof.argmax(1) == y) > 0.95


def test_fast_path_chooses_as_the_full_float64_grid_and_refits_to_the_same_head():
    """The path (float32 folds, stopped past the minimum, final head warm-started) chooses
    the C that the full float64 grid chooses, and its final head is the cold fit's."""
    import warnings

    rng = np.random.default_rng(3)
    X = rng.normal(size=(150, 40))  # few rows, many columns: large C overfits
    y = (X[:, :3].sum(1) + 2.0 * rng.normal(size=150) > 0).astype(int)
    fitted = fit_head(X, y, n_classes=2, seed=0)
    folds = inner_folds(y, None, 5, True, 0)
    losses = np.zeros((len(_heads.C_GRID), len(folds)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, C in enumerate(_heads.C_GRID):
            for f, (tr, te) in enumerate(folds):
                m = LogisticRegression(C=C, max_iter=2000).fit(X[tr], y[tr])
                losses[i, f] = _heads._log_loss(m.predict_proba(X[te]), y[te])
    sizes = np.array([len(te) for _, te in folds], dtype=float)
    expected = _heads.C_GRID[_one_se(losses, sizes, order_regularized_first=True)]
    assert fitted.param == expected
    assert len(fitted.grid) < len(_heads.C_GRID)  # stopped past the minimum
    assert fitted.scores.shape == (len(fitted.grid), len(folds))
    cold = LogisticRegression(C=expected, max_iter=2000).fit(X, y)
    np.testing.assert_allclose(fitted.head.coef_, cold.coef_, atol=2e-3)
    assert fitted.head.get_params()["warm_start"] is False


def test_identical_heads_are_fitted_once_only_inside_shared_heads(monkeypatch):
    calls = []
    original = _heads._fit_logistic
    monkeypatch.setattr(_heads, "_fit_logistic", lambda *a: calls.append(1) or original(*a))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] > 0).astype(int)
    first = fit_head(X, y, n_classes=2)
    fit_head(X, y, n_classes=2)
    assert len(calls) == 2  # outside the block nothing is kept
    with shared_heads():
        a = fit_head(X, y, n_classes=2)
        b = fit_head(X, y, n_classes=2)
        c = fit_head(X, 1 - y, n_classes=2)  # another target: another head
        assert len(calls) == 4  # b came from the memo
    assert b.head is not a.head and b.oof is not a.oof
    np.testing.assert_array_equal(b.head.coef_, a.head.coef_)
    np.testing.assert_array_equal(b.oof, a.oof)
    np.testing.assert_array_equal(first.head.coef_, a.head.coef_)
    assert c.head.coef_[0, 0] < 0 < a.head.coef_[0, 0]
    fit_head(X, y, n_classes=2)
    assert len(calls) == 5  # the block's memo is gone


def test_regression_head_chooses_alpha_by_inner_cv():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4))
    y = 3 * X[:, 0] + 0.1 * rng.normal(size=300)
    fitted = fit_head(X, y, n_classes=None, seed=0)
    assert fitted.param <= 1.0
    assert fitted.head.coef_[0] == pytest.approx(3.0, abs=0.05)


def test_calibration_saturates_at_a_heads_real_reliability():
    """A head right 80% of the time, however sure it looks, is mapped to about 0.8."""
    rng = np.random.default_rng(2)
    n = 4000
    y = rng.integers(0, 2, n)
    view = np.where(rng.random(n) < 0.8, y, 1 - y)
    score = 1 / (1 + np.exp(-6 * (2 * view - 1 + 0.3 * rng.normal(size=n))))
    proba = np.column_stack([1 - score, score])
    cal = calibrate(fit_calibrators(proba, y), proba)
    confident = score > 0.99
    assert confident.sum() > 500
    assert cal[confident, 1].mean() == pytest.approx(0.8, abs=0.03)
    assert np.allclose(cal.sum(1), 1.0)


def test_calibrated_stacking_reaches_a_majority_vote_of_three_noisy_views():
    emb, y = three_views(7, 2300)
    train, test = np.arange(300), np.arange(300, 2300)
    late = MultimodalClassifier(random_state=0).fit(emb[train], y[train])
    acc = late.score(emb[test], y[test])
    votes = np.zeros((len(test), 2))
    singles = []
    for name in emb.names:
        single = MultimodalClassifier(random_state=0).fit(emb[train].select([name]), y[train])
        pred = single.predict(emb[test].select([name]))
        votes[np.arange(len(test)), pred] += 1
        singles.append(np.mean(pred == y[test]))
    vote = np.mean(votes.argmax(1) == y[test])
    assert acc >= vote - 0.015, (acc, vote)
    assert acc >= max(singles) + 0.04, (acc, singles)
    # uncalibrated stacking follows the most overconfident head and stays below the vote
    raw = MultimodalClassifier(fusion=LateFusion(calibration=None), random_state=0)
    assert raw.fit(emb[train], y[train]).score(emb[test], y[test]) < acc


def test_given_heads_are_used_as_they_are():
    emb, y = three_views(0, 200)
    head = LogisticRegression(C=0.5, max_iter=500)
    early = EarlyFusion(estimator=head).fit(emb, y, n_classes=2)
    assert early.head_param_ is None and early.estimator_.C == 0.5
    late = LateFusion(estimator=head).fit(emb, y, n_classes=2)
    assert all(p is None for p in late.head_params_.values())
    assert all(h.C == 0.5 for h in late.estimators_.values())


# -- groups ---------------------------------------------------------------------------------


def _stacked_share(model, emb) -> float:
    """The share of the first modality in the stacked logit of a binary late fusion: mean
    |stacker weight x calibrated evidence| over ``emb``'s rows, relative to all modalities'."""
    fusion = model.fusion_
    blocks = fusion.scaler_.transform(emb)
    coef = fusion.meta_estimator_.coef_[0]
    parts = [
        np.mean(np.abs(coef[m] * fusion._evidence(fusion._head_output(name, blocks[name]))))
        for m, name in enumerate(emb.names)
    ]
    return parts[0] / sum(parts)


def test_groups_stop_stacking_from_trusting_a_modality_that_memorizes_groups():
    emb, y, groups = leaky_groups(0)
    new_emb, new_y, _ = leaky_groups(1)  # other groups entirely
    row_level = LateFusion(pseudo_groups=False)
    blind = MultimodalClassifier(fusion=row_level, random_state=0).fit(emb, y)
    grouped = MultimodalClassifier(random_state=0).fit(emb, y, groups=groups)
    assert blind.fusion_.stacker_ is None  # row-level folds: the learned LogisticRegression
    coef_blind = blind.fusion_.meta_estimator_.coef_[0]
    # with groups the stacker rule runs on their folds: the learned stackers gain less than
    # one standard error there, so each head's calibrated evidence is counted once
    fusion = grouped.fusion_
    assert fusion.stacker_ == "equal"
    np.testing.assert_allclose(fusion.meta_estimator_.coef_[0], [1.0, 1.0])
    scores = fusion.stacker_scores_
    assert set(scores) == {"equal", "weighted", "full"}
    assert min(scores["weighted"], scores["full"]) > scores["equal"] - 0.01, scores
    # the 'who' modality (first) looks reliable only when its groups leak across folds:
    # with groups its calibrated evidence, and so its share of the stacked logit, collapses
    # (0.42 of it on new groups without groups, under 0.01 with them)
    assert _stacked_share(blind, new_emb) > _stacked_share(grouped, new_emb) + 0.3
    assert grouped.score(new_emb, new_y) > blind.score(new_emb, new_y) + 0.05
    # without groups the default infers them (clusters of 'who'), and distrusts 'who' too
    inferred = MultimodalClassifier(random_state=0).fit(emb, y)
    assert inferred.fusion_.n_pseudo_groups_ == 5
    assert inferred.fusion_.meta_estimator_.coef_[0][0] < coef_blind[0] - 0.5
    assert inferred.score(new_emb, new_y) > blind.score(new_emb, new_y) + 0.05
    cue_only = MultimodalClassifier(random_state=0).fit(emb.select(["cue"]), y)
    assert grouped.score(new_emb, new_y) >= cue_only.score(new_emb.select(["cue"]), new_y) - 0.08


class _RecordingFusion(LateFusion):
    seen_groups = []

    def fit(self, emb, y, n_classes=None, groups=None):
        type(self).seen_groups.append(None if groups is None else np.asarray(groups).copy())
        return super().fit(emb, y, n_classes=n_classes, groups=groups)


def test_groups_reach_the_fusion_through_metadata_routing():
    import pandas as pd

    from toolkit import TabularEncoder

    emb, y, groups = leaky_groups(0, n_groups=12, per_group=10)
    df = pd.DataFrame(np.hstack([emb.blocks["who"], emb.blocks["cue"]]))
    df.columns = [f"w{j}" for j in range(8)] + ["c0", "c1"]
    mods = [
        ("who", TabularEncoder(), list(df.columns[:8])),
        ("cue", TabularEncoder(), ["c0", "c1"]),
    ]
    _RecordingFusion.seen_groups = []
    with sklearn.config_context(enable_metadata_routing=True):
        clf = MultimodalClassifier(mods, fusion=_RecordingFusion(), random_state=0)
        clf.set_fit_request(groups=True)
        cross_validate(clf, df, y, cv=GroupKFold(3), params={"groups": groups})
    assert len(_RecordingFusion.seen_groups) == 3
    for got in _RecordingFusion.seen_groups:
        assert got is not None and len(np.unique(got)) == 8  # two thirds of 12 groups


def test_a_fusion_without_groups_says_so():
    class NoGroups(LateFusion):
        def fit(self, emb, y, n_classes=None):
            return super().fit(emb, y, n_classes=n_classes)

    emb, y = three_views(0, 60)
    with pytest.raises(TypeError, match="NoGroups.fit takes no groups argument"):
        MultimodalClassifier(fusion=NoGroups()).fit(emb, y, groups=np.arange(60) // 6)
    assert MultimodalClassifier(fusion=NoGroups()).fit(emb, y).predict(emb).shape == (60,)


# -- auto -----------------------------------------------------------------------------------


def test_auto_says_when_a_single_modality_wins_and_explains_it_exactly():
    rng = np.random.default_rng(3)
    n = 240
    a = rng.normal(size=(n, 2))
    y = (a[:, 0] > 0).astype(int)
    emb = Embeddings({"a": a, "noise": rng.normal(size=(n, 150))})
    overfit = EarlyFusion(estimator=LogisticRegression(C=1e4, max_iter=3000), balance=False)
    auto = AutoFusion(candidates=[overfit], random_state=0)
    clf = MultimodalClassifier(fusion=auto, random_state=0).fit(emb, y)
    res = clf.fusion_.cv_results_
    assert res["candidate"] == ["EarlyFusion", "only a", "only noise"]
    assert clf.fusion_.chosen_ == "only a" and clf.fusion_.single_modality_ == "a"
    assert res["rank_test_score"][1] == 1
    assert res["mean_test_accuracy"][1] > res["mean_test_accuracy"][0]
    values = clf.explain(emb).values
    assert np.all(values[:, 1] == 0.0)
    # a row without the chosen modality gets the training prior
    hidden = emb.with_mask(np.column_stack([np.zeros(n, bool), np.ones(n, bool)]))
    assert np.allclose(clf.output(hidden), clf.prior_)


def test_auto_picks_a_fusion_when_fusion_helps_and_reports_its_table():
    emb, y = three_views(1, 400)
    auto = AutoFusion(candidates=["early", "late"], random_state=0)
    clf = MultimodalClassifier(fusion=auto, random_state=0).fit(emb, y)
    res = clf.fusion_.cv_results_
    assert clf.fusion_.chosen_ in {"early", "late"}
    best = int(np.argmax(res["mean_test_score"]))
    assert res["candidate"][best] == clf.fusion_.chosen_
    assert sorted(res["rank_test_score"]) == list(range(1, 6))
    # two inner folds by default (each candidate costs about one fit on all the rows)
    assert {"split0_test_score", "split1_test_score", "std_test_score", "mean_fit_time"} <= set(res)
    assert "split2_test_score" not in res


def test_auto_regression_and_huge_targets():
    rng = np.random.default_rng(4)
    emb = Embeddings({"a": rng.normal(size=(150, 2)), "b": rng.normal(size=(150, 2))})
    y = (emb.blocks["a"][:, 0] + emb.blocks["b"][:, 0]).astype(np.float64) * 1e100
    reg = MultimodalRegressor(fusion=AutoFusion(candidates=["early", "late"]), random_state=0).fit(
        emb, y
    )
    assert reg.fusion_.chosen_ in {"early", "late"}
    assert reg.score(emb, y) > 0.99
    assert "mean_test_r2" in reg.fusion_.cv_results_


def test_auto_refuses_itself_as_a_candidate():
    emb, y = three_views(0, 60)
    with pytest.raises(ValueError, match="candidates list 'late' twice; list each strategy once"):
        AutoFusion(candidates=["late", "early", "late"]).fit(emb, y, n_classes=2)
    with pytest.raises(ValueError, match="'auto' cannot be one of AutoFusion's candidates"):
        AutoFusion(candidates=["auto"]).fit(emb, y, n_classes=2)
    with pytest.raises(ValueError, match="nothing to choose from"):
        AutoFusion(candidates=[], singles=False).fit(emb, y, n_classes=2)


def test_auto_with_a_neural_winner_round_trips_through_save_and_load(tmp_path):
    from toolkit.fusion import GatedFusion

    emb, y = three_views(2, 120)
    gated = GatedFusion(max_epochs=5, hidden_size=4, random_state=0)
    clf = MultimodalClassifier(
        fusion=AutoFusion(candidates=[gated], singles=False), random_state=0
    ).fit(emb, y)
    assert clf.fusion_.chosen_ == "GatedFusion"
    save(clf, tmp_path / "m")
    again = load(tmp_path / "m")
    assert np.array_equal(again.predict_proba(emb), clf.predict_proba(emb))
    assert hasattr(clf.fusion_.fusion_, "module_")  # saving left the live model intact
