"""MultimodalClassifier / MultimodalRegressor: accuracy, missing modalities, caching, API."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from joblib import Memory
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from toolkit import (
    EarlyFusion,
    GatedFusion,
    ImageEncoder,
    LateFusion,
    MultimodalClassifier,
    MultimodalRegressor,
    TabularEncoder,
    TextEncoder,
)
from toolkit.datasets import make_sentiment_clips
from toolkit.exceptions import MissingModalityError

STRATEGIES = ["early", "late", "gated"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """800 clips whose label is split across text, audio and face (fixed seed)."""
    data = make_sentiment_clips(
        800, text_strength=3, audio_strength=3, face_strength=3, random_state=0
    )
    rng = np.random.RandomState(0)
    order = rng.permutation(800)
    train, test = order[:400], order[400:]
    memory = Memory(tmp_path_factory.mktemp("cache"), verbose=0)
    return data, train, test, memory


def _fit_score(modalities, fusion, clips, test_frame=None):
    data, train, test, memory = clips
    df, y = data.frame, data.target
    clf = MultimodalClassifier(modalities, fusion=fusion, memory=memory, random_state=0)
    clf.fit(df.iloc[train], y[train])
    frame = df.iloc[test] if test_frame is None else test_frame
    return clf, clf.score(frame, y[test])


@pytest.fixture(scope="module")
def single_scores(clips):
    data = clips[0]
    return {
        name: _fit_score([(name, enc, col)], "early", clips)[1]
        for name, enc, col in data.modalities
    }


@pytest.fixture(scope="module")
def full_models(clips):
    """The all-modality model of each strategy and its held-out score, fitted once for the
    tests of this module that share it (fusion="late" and "gated" serve two tests)."""
    fitted = {}

    def get(fusion):
        if fusion not in fitted:
            fitted[fusion] = _fit_score(clips[0].modalities, fusion, clips)
        return fitted[fusion]

    return get


@pytest.mark.parametrize("fusion", STRATEGIES)
def test_fusion_beats_best_single_modality(fusion, clips, single_scores, full_models):
    _, score = full_models(fusion)
    best = max(single_scores.values())
    # Each modality carries a third of the signal: alone it is capped near 0.70.
    assert best < 0.75
    assert score >= best + 0.05, (fusion, score, single_scores)


@pytest.mark.parametrize("fusion", ["late", "gated"])
def test_removing_a_modality_at_predict_time(fusion, clips, single_scores, full_models):
    data, _, test, _ = clips
    clf, full = full_models(fusion)
    best_name = max(single_scores, key=single_scores.get)
    column = dict((n, c) for n, _, c in data.modalities)[best_name]
    frame = data.frame.iloc[test].copy()
    frame[column] = None
    reduced = clf.score(frame, data.target[test])
    best_remaining = max(s for n, s in single_scores.items() if n != best_name)
    assert reduced >= best_remaining - 0.04, (reduced, single_scores)
    assert reduced < full


class CountingImageEncoder(ImageEncoder):
    """ImageEncoder that counts how many items it has encoded."""

    calls = 0

    def _encode_batch(self, images):
        type(self).calls += len(images)
        return super()._encode_batch(images)


def _digits_frame(n=90, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    images = [np.clip(0.3 + 0.4 * label + rng.normal(0, 0.1, (8, 8)), 0, 1) for label in y]
    df = pd.DataFrame({"image": images, "noise": rng.normal(size=n)})
    return df, y


@pytest.mark.parametrize("memory", [True, False])
def test_grid_search_over_fusion_encodes_each_item_once(tmp_path, memory):
    df, y = _digits_frame()
    clf = MultimodalClassifier(
        [("image", CountingImageEncoder(), "image"), ("table", TabularEncoder(), ["noise"])],
        memory=Memory(tmp_path, verbose=0) if memory else None,
        random_state=0,
    )
    CountingImageEncoder.calls = 0
    search = GridSearchCV(clf, {"fusion": ["early", "late", "gated"]}, cv=3).fit(df, y)
    n = len(df)
    if memory:
        # The per-item cache encodes each raw item once, whatever the folds and candidates.
        assert CountingImageEncoder.calls == n
    else:
        # Without it: per split every row is encoded once per candidate (train rows at
        # fit, test rows at scoring), plus the final refit on all rows.
        assert CountingImageEncoder.calls == 3 * 3 * n + n
    assert search.best_score_ > 0.9
    assert set(search.cv_results_["param_fusion"]) == {"early", "late", "gated"}


@pytest.mark.parametrize("fusion", STRATEGIES)
def test_same_seed_same_predictions(fusion):
    df, y = _digits_frame(60)
    mods = [("image", ImageEncoder(), "image"), ("table", TabularEncoder(), ["noise"])]
    a = MultimodalClassifier(mods, fusion=fusion, random_state=3).fit(df, y).predict_proba(df)
    b = MultimodalClassifier(mods, fusion=fusion, random_state=3).fit(df, y).predict_proba(df)
    np.testing.assert_array_equal(a, b)


def _text_table(n=120, seed=0, n_classes=2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    words = np.array(["excellent", "awful", "average"])[:n_classes]
    df = pd.DataFrame(
        {
            "note": [f"patient felt {w} today" for w in words[y]],
            "age": rng.normal(50, 10, n),
            "site": rng.choice(["a", "b"], n),
        }
    )
    return df, y


def _mods(k=4):
    return [
        ("text", TextEncoder(n_components=k), "note"),
        ("clinical", TabularEncoder(), ["age", "site"]),
    ]


def test_nested_parameters_route_to_encoders_and_fusion():
    clf = MultimodalClassifier(_mods(), fusion=GatedFusion(hidden_size=8))
    params = clf.get_params()
    assert params["text__n_components"] == 4 and params["fusion__hidden_size"] == 8
    clf.set_params(text__n_components=3, fusion__hidden_size=5, clinical__scale=False)
    assert clf.modalities[0][1].n_components == 3
    assert clf.fusion.hidden_size == 5 and clf.modalities[1][1].scale is False
    copy = clone(clf)
    assert (
        copy.get_params()["text__n_components"] == 3
        and copy.modalities[0][1] is not clf.modalities[0][1]
    )
    df, y = _text_table()
    fitted = clf.set_params(fusion__max_epochs=5).fit(df, y)
    assert fitted.encoders_["text"].n_features_out_ == 3


def test_grid_search_over_fusion_and_encoder_params():
    df, y = _text_table()
    search = GridSearchCV(
        MultimodalClassifier(_mods(), random_state=0),
        {"fusion": ["early", "late"], "text__n_components": [2, 4]},
        cv=3,
    ).fit(df, y)
    assert len(search.cv_results_["params"]) == 4
    assert search.best_score_ == 1.0


def test_string_labels_multiclass_and_probabilities():
    df, y = _text_table(150, n_classes=3)
    labels = np.array(["neg", "pos", "neutral"])[y]
    for fusion in STRATEGIES:
        clf = MultimodalClassifier(_mods(), fusion=fusion, random_state=0).fit(df, labels)
        assert list(clf.classes_) == ["neg", "neutral", "pos"]
        proba = clf.predict_proba(df)
        assert proba.shape == (150, 3)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        assert (clf.predict(df) == labels).mean() > 0.95


def test_decision_function_only_where_the_strategy_has_one():
    df, y = _text_table()
    early = MultimodalClassifier(_mods(), fusion="early", random_state=0).fit(df, y)
    assert early.decision_function(df).shape == (len(df),)
    late = MultimodalClassifier(_mods(), fusion="late", random_state=0).fit(df, y)
    assert not hasattr(late, "decision_function")


def test_gate_values_are_per_sample_and_respect_missing():
    df, y = _text_table()
    clf = MultimodalClassifier(_mods(), fusion=GatedFusion(max_epochs=30), random_state=0).fit(
        df, y
    )
    frame = df.copy()
    frame.loc[:9, "note"] = None
    gates = clf.gate_values(frame)
    assert list(gates.columns) == ["text", "clinical"]
    assert ((gates >= 0) & (gates <= 1)).all().all()
    assert (gates.loc[:9, "text"] == 0).all() and (gates.loc[:9, "clinical"] > 0).all()
    assert (gates.loc[10:, "text"] > 0).all()


def test_pipeline_cross_validate_and_dict_input():
    df, y = _text_table()
    pipe = make_pipeline(
        FunctionTransformer(lambda d: d), MultimodalClassifier(_mods(), random_state=0)
    )
    result = cross_validate(pipe, df, y, cv=3)
    assert result["test_score"].min() == 1.0
    clf = MultimodalClassifier(_mods(), random_state=0).fit({c: list(df[c]) for c in df}, y)
    assert clf.score(df, y) == 1.0


def test_regressor_on_a_sentiment_score():
    data = make_sentiment_clips(300, text_strength=3, informative=("text",), random_state=1)
    mods = [("text", TextEncoder(n_components=32), "transcript")]
    reg = MultimodalRegressor(mods, fusion="late", random_state=0).fit(
        data.frame[:200], data.score[:200]
    )
    pred = reg.predict(data.frame[200:])
    assert pred.shape == (100,)
    assert np.corrcoef(pred, data.score[200:])[0, 1] > 0.5
    assert reg.prior_[0] == pytest.approx(data.score[:200].mean())


def test_plain_array_is_one_tabular_modality():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 3))
    y = (X[:, 0] > 0).astype(int)
    clf = MultimodalClassifier(random_state=0).fit(X, y)
    assert clf.modality_names_ == ["tabular"] and clf.n_features_in_ == 3
    assert clf.score(X, y) > 0.9


def test_row_with_every_modality_missing_is_refused():
    df, y = _text_table()
    frame = df.copy()
    frame.loc[5, ["note", "age", "site"]] = None
    clf = MultimodalClassifier(_mods(), random_state=0).fit(df, y)
    with pytest.raises(
        MissingModalityError, match=r"1 row\(s\) have every modality missing \(rows \[5\]\)"
    ):
        clf.predict(frame)
    with pytest.raises(MissingModalityError, match="rows \\[5\\]"):
        MultimodalClassifier(_mods()).fit(frame, y)


def test_missing_column_and_wrong_y():
    df, y = _text_table()
    with pytest.raises(ValueError, match=r"modality 'text' needs column\(s\) \['note'\]"):
        MultimodalClassifier(_mods()).fit(df.drop(columns="note"), y)
    with pytest.raises(ValueError, match="X has 120 rows but y has 119 values"):
        MultimodalClassifier(_mods()).fit(df, y[:-1])
    with pytest.raises(ValueError, match="only one class"):
        MultimodalClassifier(_mods()).fit(df, np.zeros(120))
    with pytest.raises(ValueError, match="1 missing label"):
        MultimodalClassifier(_mods()).fit(df, np.where(np.arange(120) == 3, None, y.astype(object)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        MultimodalRegressor(_mods()).fit(df, np.where(np.arange(120) == 3, np.nan, 1.0))


def test_modalities_spec_errors():
    df, y = _text_table()
    with pytest.raises(ValueError, match="'text' is used twice"):
        MultimodalClassifier(
            [("text", TextEncoder(), "note"), ("text", TabularEncoder(), ["age"])]
        ).fit(df, y)
    with pytest.raises(ValueError, match="must be a \\(name, encoder, columns\\) triple"):
        MultimodalClassifier([("text", TextEncoder())]).fit(df, y)
    with pytest.raises(ValueError, match="unknown fusion 'middle'"):
        MultimodalClassifier(_mods(), fusion="middle").fit(df, y)


@pytest.mark.parametrize(
    "fusion",
    [EarlyFusion(modality_dropout=0.3), LateFusion(combine="weighted"), LateFusion(combine="mean")],
)
def test_other_fusion_options_fit_and_handle_missing(fusion):
    df, y = _text_table()
    clf = MultimodalClassifier(_mods(), fusion=fusion, random_state=0).fit(df, y)
    frame = df.copy()
    frame["age"] = np.nan
    frame["site"] = None
    assert clf.score(frame, y) == 1.0  # the text alone carries the label


# -- the public seams: fit_encoders, encode, fit on Embeddings, classes, output -------------


@pytest.mark.parametrize("fusion", ["early", "late"])
@pytest.mark.parametrize("Estimator", [MultimodalClassifier, MultimodalRegressor])
def test_encode_once_then_fit_on_embeddings_matches_fit_on_raw_data(fusion, Estimator):
    df, y = _text_table(90)
    target = y if Estimator is MultimodalClassifier else df["age"].to_numpy() + y
    train, test = df.iloc[:60], df.iloc[60:]
    reference = Estimator(_mods(), fusion=fusion, random_state=0).fit(train, target[:60])
    model = Estimator(_mods(), fusion=fusion, random_state=0).fit_encoders(train)
    emb_train, emb_test = model.encode(train), model.encode(test)
    model.fit(emb_train, target[:60])
    np.testing.assert_array_equal(model.output(emb_test), reference.output(test))
    np.testing.assert_array_equal(model.predict(emb_test), reference.predict(test))
    np.testing.assert_array_equal(model.explain(emb_test).values, reference.explain(test).values)


def test_fit_encoders_fits_the_encoders_only():
    df, y = _text_table()
    clf = MultimodalClassifier(_mods(), random_state=0)
    assert clf.fit_encoders(df, y) is clf
    assert clf.modality_names_ == ["text", "clinical"] and clf.n_features_in_ == 3
    assert clf.encoders_["text"].n_features_out_ == 4
    assert clf.encoders_["text"] is not clf.modalities[0][1]  # clones, as fit makes
    assert not hasattr(clf, "fusion_")
    emb = clf.encode(df)
    assert emb.names == ["text", "clinical"] and emb.dims == {"text": 4, "clinical": 3}
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        clf.predict(df)
    with pytest.raises(NotFittedError):
        MultimodalClassifier(_mods()).encode(df)
    with pytest.raises(TypeError, match="fit_encoders needs raw data"):
        clf.fit_encoders(emb)
    with pytest.raises(ValueError, match=r"modality 'text' needs column\(s\) \['note'\]"):
        MultimodalClassifier(_mods()).fit_encoders(df.drop(columns="note"))
    frame = df.copy()
    frame.loc[5, ["note", "age", "site"]] = None
    with pytest.raises(MissingModalityError, match=r"1 row\(s\) .* \(rows \[5\]\)"):
        clf.encode(frame)


def test_encoding_train_and_test_through_the_cache_reads_each_item_once(tmp_path):
    df, y = _digits_frame()
    clf = MultimodalClassifier(
        [("image", CountingImageEncoder(), "image"), ("table", TabularEncoder(), ["noise"])],
        memory=tmp_path,
        random_state=0,
    )
    CountingImageEncoder.calls = 0
    clf.fit_encoders(df.iloc[:60])
    assert CountingImageEncoder.calls == 0  # a fixed encoder learns nothing from the rows
    clf.encode(df.iloc[:60]), clf.encode(df.iloc[60:]), clf.encode(df)
    assert CountingImageEncoder.calls == len(df)


def test_classes_keeps_a_column_for_a_class_the_training_rows_lack():
    df, y = _text_table(120, n_classes=3)
    seen = y != 2
    on_raw = MultimodalClassifier(_mods(), classes=[0, 1, 2], random_state=0).fit(df[seen], y[seen])
    on_emb = clone(on_raw).fit_encoders(df)
    emb = on_emb.encode(df)
    on_emb.fit(emb[seen], y[seen])
    for clf, X in ((on_raw, df), (on_emb, emb)):
        np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
        proba = clf.predict_proba(X)
        assert proba.shape == (120, 3)
        np.testing.assert_array_equal(proba[:, 2], 0.0)
        np.testing.assert_allclose(clf.prior_, [*np.bincount(y[seen]) / seen.sum(), 0.0])
        assert set(clf.predict(X)) <= {0, 1}
    assert clone(on_raw).get_params()["classes"] == [0, 1, 2]
    labels = np.array(["a", "b", "c"])
    clf = MultimodalClassifier(_mods(), classes=["c", "a", "b"], random_state=0).fit(
        df[seen], labels[y[seen]]
    )
    assert list(clf.classes_) == ["a", "b", "c"]  # sorted, as without classes


def test_classes_errors():
    df, y = _text_table()
    with pytest.raises(ValueError, match=r"y holds label\(s\) \[1\] that are not in classes"):
        MultimodalClassifier(_mods(), classes=[0, 2]).fit(df, y)
    with pytest.raises(ValueError, match="classes lists a label more than once"):
        MultimodalClassifier(_mods(), classes=[0, 1, 1]).fit(df, y)
    with pytest.raises(ValueError, match="modality name 'classes' is also a parameter"):
        MultimodalClassifier([("classes", TabularEncoder(), ["age"])]).fit(df, y)
    # The regressor has no classes parameter, so the name is free there.
    MultimodalRegressor([("classes", TabularEncoder(), ["age"])]).fit(df, df["age"])


@pytest.mark.parametrize("Estimator", [MultimodalClassifier, MultimodalRegressor])
def test_output_answers_rows_without_modality_with_the_prior(Estimator):
    df, y = _text_table()
    target = y if Estimator is MultimodalClassifier else 3.0 * y + 1.0
    model = Estimator(_mods(), fusion="early", random_state=0).fit(df, target)
    emb = model.encode(df.iloc[:6])
    full = model.output(emb)
    if Estimator is MultimodalClassifier:
        np.testing.assert_array_equal(full, model.predict_proba(df.iloc[:6]))
    else:
        np.testing.assert_array_equal(full, model.predict(df.iloc[:6]))
    mask = emb.mask.copy()
    mask[:3] = False
    out = model.output(emb.with_mask(mask))
    prior = model.prior_ if Estimator is MultimodalClassifier else model.prior_[0]
    np.testing.assert_array_equal(out[:3], np.broadcast_to(prior, out[:3].shape))
    np.testing.assert_array_equal(out[3:], full[3:])
    with pytest.raises(MissingModalityError, match=r"rows \[0, 1, 2\]"):
        model.predict(emb.with_mask(mask))


def test_fit_on_embeddings_keeps_the_encoders_and_checks_widths():
    """encode train -> fit(emb) -> predict raw test rows, as a notebook does it."""
    from toolkit.embeddings import Embeddings

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    df = pd.DataFrame({"a": y + rng.normal(0, 0.7, 80), "b": rng.normal(0, 1, 80)})
    mods = [("a", TabularEncoder(), ["a"]), ("b", TabularEncoder(), ["b"])]
    direct = MultimodalClassifier(mods, fusion="early", random_state=0).fit(df[:60], y[:60])
    clf = MultimodalClassifier(mods, fusion="early", random_state=0).fit_encoders(df[:60])
    clf.fit(clf.encode(df[:60]), y[:60])
    assert list(clf.encoders_) == ["a", "b"]
    np.testing.assert_array_equal(clf.predict_proba(df[60:]), direct.predict_proba(df[60:]))
    emb = clf.encode(df[60:])
    narrow = Embeddings({"a": emb.blocks["a"][:, : 0 + 1], "b": np.hstack([emb.blocks["b"]] * 2)})
    with pytest.raises(ValueError, match=r"'b' is 2 wide, not 1; encode the data with the"):
        clf.predict(narrow)


def test_a_class_absent_from_training_gets_probability_zero_for_every_strategy():
    rng = np.random.default_rng(4)
    y = np.array(["neg", "pos"])[rng.integers(0, 2, 80)]
    df = pd.DataFrame({"a": (y == "pos") + rng.normal(0, 0.7, 80), "b": rng.normal(0, 1, 80)})
    mods = [("a", TabularEncoder(), ["a"]), ("b", TabularEncoder(), ["b"])]
    for fusion in ("early", "late", GatedFusion(max_epochs=10)):
        clf = MultimodalClassifier(
            mods, fusion=fusion, classes=["neg", "neu", "pos"], random_state=0
        ).fit(df, y)
        proba = clf.predict_proba(df)
        assert proba[:, 1].max() == 0.0
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
