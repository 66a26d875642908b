"""Defaults that hold on unseen groups when ``fit`` gets no ``groups`` (pseudo-groups), and
``fusion="auto"``'s cost as a count of head fits and encoder calls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from toolkit import Embeddings, MultimodalClassifier, TabularEncoder
from toolkit.fusion import AutoFusion, EarlyFusion, LateFusion, _heads
from toolkit.fusion.base import pseudo_groups

N_CLASSES = 3


def people(seed, n_groups, per_group=30):
    """Known answer: 'voice' identifies the person, and each person says mostly one label
    (85% of their rows): on the training people 'voice' predicts the label, a shortcut
    that is at chance on new people; 'look' carries the label the same way for everyone."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group)
    usual = rng.integers(0, N_CLASSES, n_groups)
    other = (usual[groups] + rng.integers(1, N_CLASSES, len(groups))) % N_CLASSES
    y = np.where(rng.random(len(groups)) < 0.85, usual[groups], other)
    person = 3.0 * rng.normal(size=(n_groups, 8))
    voice = person[groups] + 0.3 * rng.normal(size=(len(groups), 8))
    look = 1.5 * np.eye(N_CLASSES, 10)[y] + rng.normal(size=(len(groups), 10))
    return Embeddings({"voice": voice, "look": look}), y, groups


@pytest.fixture(scope="module")
def task():
    emb, y, groups = people(0, n_groups=10)
    new_emb, new_y, _ = people(1, n_groups=30)  # other people entirely
    return emb, y, groups, new_emb, new_y


def _accuracy(fusion, emb, y, new_emb, new_y, groups=None):
    model = MultimodalClassifier(fusion=fusion, random_state=0)
    model.fit(emb, y, **({} if groups is None else {"groups": groups}))
    return model.score(new_emb, new_y), model


@pytest.fixture(scope="module")
def baselines(task):
    emb, y, _, new_emb, new_y = task
    X = np.hstack([emb.blocks["voice"], emb.blocks["look"]])
    new_X = np.hstack([new_emb.blocks["voice"], new_emb.blocks["look"]])
    concat = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    look, _ = _accuracy("late", emb.select(["look"]), y, new_emb.select(["look"]), new_y)
    voice, _ = _accuracy("late", emb.select(["voice"]), y, new_emb.select(["voice"]), new_y)
    return {"concat": concat.score(new_X, new_y), "look": look, "voice": voice}


def test_the_generator_has_its_known_answer(task, baselines):
    emb, y, groups, _, _ = task
    # row-level CV finds the shortcut: 'voice' looks near-perfect on the training people
    from sklearn.model_selection import cross_val_score

    row_level = cross_val_score(LogisticRegression(), emb.blocks["voice"], y, cv=5).mean()
    assert row_level > 0.5
    assert baselines["voice"] < 0.42  # chance is 1/3 on new people
    assert 0.65 < baselines["look"] < 0.85


def test_pseudo_groups_find_the_people_and_not_the_label(task):
    emb, y, groups, _, _ = task
    found = pseudo_groups(emb, y, N_CLASSES, random_state=0)
    assert len(np.unique(found)) == 5
    # each inferred group holds whole people (a person's rows are not split)...
    table = pd.crosstab(groups, found).to_numpy()
    assert np.mean(table.max(axis=1) / table.sum(axis=1)) > 0.95
    # a block without clustered rows gets no pseudo-groups: row-level splits as before
    look = emb.select(["look"])
    assert len(np.unique(pseudo_groups(look, y, N_CLASSES, random_state=0))) == len(y)


def _auto():
    return AutoFusion(candidates=["early", "late"], random_state=0)


@pytest.mark.parametrize("name", ["early", "late", "auto"])
def test_defaults_without_groups_hold_on_new_people(task, baselines, name):
    emb, y, _, new_emb, new_y = task
    fusion = _auto() if name == "auto" else name  # gated is left out to keep this fast
    acc, model = _accuracy(fusion, emb, y, new_emb, new_y)
    assert model.fusion_.n_pseudo_groups_ == 5
    assert acc >= baselines["concat"], (acc, baselines)
    # within sampling error (900 rows: 2 standard errors ~ 0.03) of the best single modality
    assert acc >= max(baselines["look"], baselines["voice"]) - 0.04, (acc, baselines)


def test_row_level_inner_cv_is_what_loses(task, baselines):
    """The same fusions with row-level inner splits trust the shortcut and lose on new
    people: the rule, not luck of the data, makes the defaults hold."""
    emb, y, _, new_emb, new_y = task
    for fusion in (EarlyFusion(pseudo_groups=False), LateFusion(pseudo_groups=False)):
        acc, model = _accuracy(fusion, emb, y, new_emb, new_y)
        assert model.fusion_.n_pseudo_groups_ is None
        assert acc < baselines["look"] - 0.05, (fusion, acc, baselines)


@pytest.mark.parametrize("name", ["early", "late"])
def test_defaults_with_groups_hold_on_new_people(task, baselines, name):
    emb, y, groups, new_emb, new_y = task
    acc, model = _accuracy(name, emb, y, new_emb, new_y, groups=groups)
    assert model.fusion_.n_pseudo_groups_ is None  # given groups are used as they are
    assert acc >= baselines["concat"], (acc, baselines)
    assert acc >= baselines["look"] - 0.04, (acc, baselines)


# -- auto's cost ---------------------------------------------------------------------------


def test_auto_fits_each_modality_head_once_per_inner_fold(task, monkeypatch):
    """Head regularization paths: auto (cv=2, candidates early and late, and each modality
    alone) fits each per-modality head once per inner fold, shared by late fusion, early
    fusion's block scales and the single-modality candidates, plus early's joint head per
    fold, then refits the winner: at most (cv + 1) times one early fusion's fits."""
    emb, y, groups, _, _ = task
    calls = []
    original = _heads._fit_logistic
    monkeypatch.setattr(
        _heads, "_fit_logistic", lambda X, *a: calls.append(X.shape) or original(X, *a)
    )
    EarlyFusion(random_state=0).fit(emb, y, n_classes=N_CLASSES, groups=groups)
    one_early = len(calls)
    assert one_early == 3  # two blocks' scales and the joint head
    calls.clear()
    auto = AutoFusion(candidates=["early", "late"], random_state=0)
    auto.fit(emb, y, n_classes=N_CLASSES, groups=groups)
    per_fold = [shape for shape in calls if shape[0] < len(y)]
    widths = sorted(shape[1] for shape in per_fold)
    # each fold: one head per block (8 and 10 columns) and early's joint head (18 + 2)
    assert widths == [8, 8, 10, 10, 20, 20]
    assert len(calls) <= (auto.cv + 1) * one_early


def test_auto_makes_each_inner_split_once_and_predicts_as_without_sharing(task, monkeypatch):
    """Inside auto every candidate splits the same rows alike: each distinct split is made
    once (``shared_folds``), and the fitted model is the one made without sharing."""
    import contextlib

    from toolkit import model_selection

    emb, y, groups, new_emb, _ = task
    made, original = [], model_selection._inner_folds
    monkeypatch.setattr(
        model_selection, "_inner_folds", lambda *a: made.append(a[2:]) or original(*a)
    )
    asked = []
    public = model_selection.inner_folds
    for module in (_heads, model_selection):
        monkeypatch.setattr(module, "inner_folds", lambda *a: asked.append(1) or public(*a))
    auto = AutoFusion(candidates=["early", "late"], random_state=0)
    shared = auto.fit(emb, y, n_classes=N_CLASSES, groups=groups).predict_output(new_emb)
    assert 0 < len(made) < len(asked)  # splits asked for again were handed back
    with model_selection.shared_folds():
        a = model_selection.inner_folds(y, groups, 3, True, 0)
        b = model_selection.inner_folds(y, groups, 3, True, 0)
        assert a[0][0] is b[0][0] and not a[0][0].flags.writeable
        assert model_selection.inner_folds(y, groups, 3, True, 1)[0][0] is not a[0][0]
    assert model_selection.inner_folds(y, groups, 3, True, 0)[0][0] is not a[0][0]
    monkeypatch.setattr(model_selection, "shared_folds", contextlib.nullcontext)
    alone = AutoFusion(candidates=["early", "late"], random_state=0)
    alone = alone.fit(emb, y, n_classes=N_CLASSES, groups=groups).predict_output(new_emb)
    np.testing.assert_array_equal(shared, alone)


def test_auto_never_calls_the_encoders(monkeypatch):
    emb, y, _ = people(2, n_groups=6, per_group=20)
    df = pd.DataFrame(np.hstack([emb.blocks["voice"], emb.blocks["look"]]))
    df.columns = [f"v{j}" for j in range(8)] + [f"l{j}" for j in range(10)]
    mods = [
        ("voice", TabularEncoder(), list(df.columns[:8])),
        ("look", TabularEncoder(), list(df.columns[8:])),
    ]
    calls = []
    original = TabularEncoder.encode
    monkeypatch.setattr(
        TabularEncoder, "encode", lambda self, X: calls.append(1) or original(self, X)
    )
    counts = {}
    for fusion in ("late", AutoFusion(candidates=["early", "late"])):
        calls.clear()
        MultimodalClassifier(mods, fusion=fusion, random_state=0).fit(df, y)
        counts[str(fusion)] = len(calls)
    assert counts["late"] == 2  # each modality's columns encoded once
    assert len(set(counts.values())) == 1, counts


def test_small_pseudo_groups_join_the_nearest_cluster():
    """k-means bounds no cluster's size; a cluster under min_rows joins the one whose centre
    is nearest, whole (a cluster of 2 rows made the leave-cluster-out scores so uneven that
    the one-SE rule chose a constant head: test AUROC 0.18 where a logistic regression
    scored 0.81)."""
    from toolkit.fusion.base import _merge_small_clusters

    X = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2], [9.0], [0.3], [30.0]])
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 0, 3])  # clusters 2 and 3 hold one row each
    merged = _merge_small_clusters(X, labels, min_rows=3)
    # row 6 (at 9.0) joins the cluster at ~10.1; row 8 (at 30) joins the nearest, also ~10.1
    np.testing.assert_array_equal(merged, [0, 0, 0, 1, 1, 1, 1, 0, 1])
    np.testing.assert_array_equal(_merge_small_clusters(X, labels, min_rows=1), labels)


def test_one_informative_table_without_groups_is_not_a_constant():
    from sklearn.metrics import roc_auc_score

    from toolkit.datasets import make_clinical_cohort

    cols = ["age", "heart_rate", "temperature", "sbp", "crp", "wbc", "lactate"]
    cohort = make_clinical_cohort(300, informative=("clinical",), scan_size=8, random_state=11)
    df = cohort.frame[cols].copy()
    df = df.fillna(df.median())  # median-filled labs: a tight cluster of identical rows
    y, train, test = cohort.target, np.arange(200), np.arange(200, 300)
    clf = MultimodalClassifier([("clinical", TabularEncoder(), cols)], fusion="late")
    p = clf.set_params(random_state=0).fit(df.iloc[train], y[train]).predict_proba(df.iloc[test])
    plain = make_pipeline(StandardScaler(), LogisticRegression()).fit(df.iloc[train], y[train])
    reference = roc_auc_score(y[test], plain.predict_proba(df.iloc[test])[:, 1])
    assert roc_auc_score(y[test], p[:, 1]) > reference - 0.05  # 0.18 before
    assert p[:, 1].std() > 0.05  # not a constant (0.002 before)


# -- the no-groups rule: tuned choices against an untuned prior (issue 24) ------------------


def test_the_prior_is_kept_unless_a_candidate_is_clearly_better():
    from toolkit.fusion._heads import prior_unless_clearly_better

    sizes = np.ones(4)
    steady = {"prior": np.array([1.0, 1.0, 1.0, 1.0]), "other": np.array([0.9, 0.9, 0.9, 0.9])}
    assert prior_unless_clearly_better(steady, "prior", sizes) == "other"  # 0.1, SE 0
    # 0.075 better on average, but the folds disagree: SE of the differences 0.17
    noisy = {"prior": np.array([1.0, 1.2, 0.8, 1.0]), "other": np.array([0.95, 0.7, 1.1, 0.95])}
    assert prior_unless_clearly_better(noisy, "prior", sizes) == "prior"
    assert prior_unless_clearly_better(noisy, "prior", sizes, n_se=0.0) == "other"
    worse = {"prior": np.array([0.5, 0.5]), "other": np.array([0.6, 0.7])}
    assert prior_unless_clearly_better(worse, "prior", np.ones(2), n_se=0.0) == "prior"


def speakers(seed, n_people, per_class=15):
    """Known answer: each person says each class their own way ('voice': a class template
    shared by everyone plus one of their own, and a timbre of their own), so row-level CV
    rates 'voice' far above what it scores on new people; 'look' shows the class the same
    way for everyone."""
    rng = np.random.default_rng(seed)
    person = np.repeat(np.arange(n_people), 4 * per_class)
    y = np.tile(np.repeat(np.arange(4), per_class), n_people)
    shared, own = rng.normal(size=(4, 12)), rng.normal(size=(n_people, 4, 12))
    timbre = 2.0 * rng.normal(size=(n_people, 12))
    noise = 0.5 * rng.normal(size=(len(y), 12))
    voice = shared[y] + own[person, y] + timbre[person] + noise
    look = 1.5 * np.eye(4, 20)[y] + 1.5 * rng.normal(size=(len(y), 20))
    return Embeddings({"voice": voice, "look": look}), y, person


def test_stacking_without_groups_keeps_equal_weights_that_hold_on_new_people():
    """Pseudo-groups recover the people only in part: a stacker that learns weights from
    their out-of-fold evidence still over-trusts 'voice'. The rule keeps equal weights
    (each calibrated head counted once), which score higher on new people."""
    from sklearn.model_selection import cross_val_score

    emb, y, people_ = speakers(0, n_people=8)
    new_emb, new_y, _ = speakers(100, n_people=20)
    row_level = cross_val_score(LogisticRegression(max_iter=1000), emb.blocks["voice"], y, cv=5)
    assert row_level.mean() > 0.55
    voice, _ = _accuracy("late", emb.select(["voice"]), y, new_emb.select(["voice"]), new_y)
    assert voice < 0.25  # chance is 0.25 on new people
    acc, model = _accuracy("late", emb, y, new_emb, new_y)
    assert model.fusion_.prior_rule_ and model.fusion_.stacker_ == "equal"
    np.testing.assert_allclose(model.fusion_.meta_estimator_.coef_[:, :4], np.eye(4))
    learned = LateFusion(meta_estimator=LogisticRegression(C=1.0, max_iter=2000))
    old, _ = _accuracy(learned, emb, y, new_emb, new_y)  # the stacker before the rule
    assert acc > old + 0.05, (acc, old)
    # with the people as groups the same rule runs on their folds (8 people are too few to
    # learn stacking weights from: equal weights win there too); row-level folds: no rule
    grouped_acc, grouped = _accuracy("late", emb, y, new_emb, new_y, groups=people_)
    assert not grouped.fusion_.prior_rule_ and grouped.fusion_.stacker_ == "equal"
    scores = grouped.fusion_.stacker_scores_
    assert scores["equal"] < min(scores["weighted"], scores["full"]), scores
    old_grouped, _ = _accuracy(learned, emb, y, new_emb, new_y, groups=people_)
    assert grouped_acc > old_grouped + 0.05, (grouped_acc, old_grouped)  # 0.396 vs 0.324
    _, row_level = _accuracy(LateFusion(pseudo_groups=False), emb, y, new_emb, new_y)
    assert row_level.fusion_.stacker_ is None


def test_early_prior_is_the_untuned_concatenation(monkeypatch):
    """Where the rule keeps the prior, early fusion is exactly StandardScaler +
    LogisticRegression() on the blocks side by side (the indicators, constant here, are
    centred to zero columns)."""
    import toolkit.fusion.early as early

    emb, y, _ = speakers(0, n_people=8)
    new_emb, _, _ = speakers(100, n_people=20)
    monkeypatch.setattr(early, "EARLY_N_SE", 1e9)  # the tuned design never wins
    fusion = EarlyFusion(random_state=0).fit(emb, y, n_classes=4)
    assert fusion.choice_ == "prior" and fusion.head_param_ == 1.0
    X = np.hstack([emb.blocks["voice"], emb.blocks["look"]]).astype(np.float64)
    new_X = np.hstack([new_emb.blocks["voice"], new_emb.blocks["look"]]).astype(np.float64)
    concat = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    proba = fusion.predict_output(new_emb)
    np.testing.assert_allclose(proba, concat.predict_proba(new_X), atol=1e-5)
    np.testing.assert_array_equal(proba.argmax(1), concat.predict(new_X))


def test_early_keeps_its_tuned_design_where_the_prior_loses_clearly(task, baselines):
    """On the 'people' task the untuned concatenation follows 'voice' (0.53 on new people):
    the pseudo-group folds rate it clearly worse, and the tuned design is kept."""
    emb, y, groups, new_emb, new_y = task
    acc, model = _accuracy("early", emb, y, new_emb, new_y)
    scores = model.fusion_.choice_scores_
    assert model.fusion_.choice_ == "tuned" and scores["prior"] > scores["tuned"] + 0.2
    assert acc > baselines["concat"] + 0.1, (acc, baselines)
    # with the people as groups the same comparison runs on their folds; row-level: none
    _, grouped = _accuracy("early", emb, y, new_emb, new_y, groups=groups)
    assert grouped.fusion_.choice_ == "tuned"
    _, row_level = _accuracy(EarlyFusion(pseudo_groups=False), emb, y, new_emb, new_y)
    assert row_level.fusion_.choice_ is None


def test_the_stacker_never_turns_a_modality_s_evidence_against_its_class():
    """Out-of-fold evidence anti-correlated with the labels (what a near-constant head gives
    when a held-out group's class balance differs from its training rows: on a synthetic
    cohort's scans, late fusion's full stacker learned -1.47 and scored AUROC 0.16 on new
    rows): the full stacker would fit it best, but a stacker that counts evidence for a
    class against it is not kept."""
    from toolkit.fusion._stacking import fit_stacker

    rng = np.random.default_rng(0)
    y = (rng.random(240) < 0.3).astype(int)
    feats = (-(y - 0.3) + 0.2 * rng.normal(size=240))[:, None]  # log-odds evidence
    folds = [(np.setdiff1d(np.arange(240), t), t) for t in np.array_split(np.arange(240), 4)]
    model, chosen, losses = fit_stacker(feats, y, 2, 1, folds, seed=0)
    assert min(losses, key=losses.get) == "full"  # the inverting stacker fits the folds best
    assert chosen != "full" and (model.coef_ >= 0).all()
    # multi-class: the same check on each class's own evidence column
    y3 = rng.integers(0, 3, 300)
    ev = -np.eye(3)[y3] + 0.2 * rng.normal(size=(300, 3))
    folds = [(np.setdiff1d(np.arange(300), t), t) for t in np.array_split(np.arange(300), 3)]
    model, chosen, _ = fit_stacker(ev, y3, 3, 1, folds, seed=0)
    assert chosen != "full"
