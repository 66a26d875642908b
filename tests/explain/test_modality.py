"""ModalityExplainer: efficiency, agreement with shap's Exact explainer, recovery, dummy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolkit import (
    GatedFusion,
    ImageEncoder,
    ModalityExplainer,
    MultimodalClassifier,
    MultimodalRegressor,
    TabularEncoder,
    TextEncoder,
)
from toolkit.datasets import make_sentiment_clips
from toolkit.explain import (
    global_importance,
    modality_shares,
    plot_contributions,
    shapley_weights,
    value_function,
)

STRATEGIES = ["early", "late", GatedFusion(max_epochs=60)]
IDS = ["early", "late", "gated"]


def _frame(n=150, seed=0, n_classes=2):
    """Text, image and table; the label depends on the text and the table."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    words = np.array(["excellent", "awful", "average"])
    text = [f"felt {words[(c + (rng.random() < 0.3)) % n_classes]} today" for c in y]
    images = [np.clip(rng.random((8, 8)) * 0.5 + 0.1 * c, 0, 1) for c in y]
    df = pd.DataFrame({"note": text, "image": images, "lab": y + rng.normal(0, 0.8, n)})
    mods = [
        ("text", TextEncoder(n_components=4), "note"),
        ("image", ImageEncoder(pixel_size=4), "image"),
        ("lab", TabularEncoder(), ["lab"]),
    ]
    return df, y, mods


@pytest.mark.parametrize("fusion", STRATEGIES, ids=IDS)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_efficiency_for_classifiers(fusion, n_classes):
    df, y, mods = _frame(n_classes=n_classes)
    clf = MultimodalClassifier(mods, fusion=fusion, random_state=0).fit(df, y)
    proba = clf.predict_proba(df)
    for output in ("probability", "log_odds"):
        exp = clf.explain(df, output=output)
        if n_classes == 2:
            assert exp.values.shape == (150, 3)
            target = proba[:, 1] if output == "probability" else np.log(proba[:, 1] / proba[:, 0])
        else:
            assert exp.values.shape == (150, 3, 3) and exp.output_names == ["0", "1", "2"]
            target = proba if output == "probability" else np.log(proba)
        np.testing.assert_allclose(exp.values.sum(axis=1) + exp.base_values, target, atol=1e-6)
        assert list(exp.feature_names) == ["text", "image", "lab"]
    # The base value is the prior: training class frequencies.
    prior = np.bincount(y) / len(y)
    exp = clf.explain(df)
    expected_base = prior[1] if n_classes == 2 else prior
    np.testing.assert_allclose(exp.base_values[0], expected_base)


@pytest.mark.parametrize("fusion", STRATEGIES, ids=IDS)
def test_efficiency_for_regressors(fusion):
    df, y, mods = _frame()
    target = y * 2.0 + df["lab"].to_numpy()
    reg = MultimodalRegressor(mods, fusion=fusion, random_state=0).fit(df, target)
    exp = reg.explain(df)
    assert exp.values.shape == (150, 3)
    np.testing.assert_allclose(exp.values.sum(axis=1) + exp.base_values, reg.predict(df), atol=1e-6)
    np.testing.assert_allclose(exp.base_values, target.mean())


def test_background_removal_efficiency():
    df, y, mods = _frame()
    clf = MultimodalClassifier(mods, fusion="early", random_state=0).fit(df, y)
    exp = clf.explain(df.iloc[:20], removal="background", background=df.iloc[100:130])
    np.testing.assert_allclose(
        exp.values.sum(axis=1) + exp.base_values, clf.predict_proba(df.iloc[:20])[:, 1], atol=1e-6
    )
    np.testing.assert_allclose(
        exp.base_values, clf.predict_proba(df.iloc[100:130])[:, 1].mean(), atol=1e-6
    )


@pytest.mark.parametrize("removal", ["missing", "background"])
def test_agrees_with_shap_exact_explainer(removal):
    import shap

    df, y, mods = _frame()
    clf = MultimodalClassifier(mods, fusion="late", random_state=0).fit(df, y)
    rows = df.iloc[:5]
    background = df.iloc[100:110]
    ours = ModalityExplainer(clf, removal=removal, background=background)(rows)
    emb = clf.embed(rows)
    for i in range(len(rows)):
        v = value_function(clf, emb[[i]], removal=removal, background=background)

        def value(masks, v=v):
            return np.array([v(bits)[0] for bits in np.asarray(masks, dtype=bool)])

        exact = shap.explainers.Exact(value, shap.maskers.Independent(np.zeros((1, 3))))
        reference = exact(np.ones((1, 3)))
        np.testing.assert_allclose(ours.values[i], reference.values[0], atol=1e-10)
        np.testing.assert_allclose(ours.base_values[i], reference.base_values[0], atol=1e-10)


@pytest.fixture(scope="module")
def face_only():
    """Clips where only the face carries the label (text and audio are pure distractors)."""
    data = make_sentiment_clips(400, informative=("face",), face_strength=3, random_state=0)
    return data


@pytest.mark.parametrize(
    "fusion",
    [
        "early",
        "late",
        "gated",
        "attention",
        "tensor",
        "lowrank",
    ],
)
def test_informative_modality_gets_most_of_the_credit(fusion, face_only):
    df, y = face_only.frame, face_only.target
    clf = MultimodalClassifier(face_only.modalities, fusion=fusion, random_state=0).fit(
        df[:300], y[:300]
    )
    assert clf.score(df[300:], y[300:]) > 0.85
    shares = global_importance(clf.explain(df[300:]))
    total = sum(shares.values())
    assert shares["face"] / total >= 0.8, shares


def test_absent_modality_gets_exactly_zero():
    df, y, mods = _frame()
    clf = MultimodalClassifier(mods, fusion="late", random_state=0).fit(df, y)
    frame = df.iloc[:10].copy()
    frame.loc[frame.index[:4], "note"] = None
    exp = clf.explain(frame)
    assert (exp.values[:4, 0] == 0.0).all()
    assert (exp.values[4:, 0] != 0.0).all()
    assert exp.data[:4, 0].tolist() == [0.0] * 4


class CountingTextEncoder(TextEncoder):
    calls = 0

    def _encode_batch(self, texts):
        type(self).calls += len(texts)
        return super()._encode_batch(texts)


def test_explaining_encodes_each_row_once():
    df, y, mods = _frame()
    mods = [("text", CountingTextEncoder(n_components=4), "note")] + mods[1:]
    clf = MultimodalClassifier(mods, fusion="gated", random_state=0).fit(df, y)
    CountingTextEncoder.calls = 0
    clf.explain(df.iloc[:40])
    assert CountingTextEncoder.calls == 40


def test_permutation_sampling_for_many_modalities():
    rng = np.random.default_rng(0)
    n, M = 80, 5
    df = pd.DataFrame({f"x{m}": rng.normal(size=n) for m in range(M)})
    y = (df["x0"] + 0.5 * df["x1"] > 0).astype(int)
    mods = [(f"m{m}", TabularEncoder(), [f"x{m}"]) for m in range(M)]
    clf = MultimodalClassifier(mods, fusion="late", random_state=0).fit(df, y)
    exact = ModalityExplainer(clf)(df)
    sampled = ModalityExplainer(clf, max_exact_modalities=3, n_permutations=200, random_state=0)(df)
    np.testing.assert_allclose(
        sampled.values.sum(axis=1) + sampled.base_values, clf.predict_proba(df)[:, 1], atol=1e-9
    )
    assert np.abs(sampled.values - exact.values).mean() < 0.01
    again = ModalityExplainer(clf, max_exact_modalities=3, n_permutations=200, random_state=0)(df)
    np.testing.assert_array_equal(sampled.values, again.values)


def test_shapley_weights_on_a_known_game():
    # v(S) = 1 if players 0 and 1 are both in S: they split the value, player 2 gets 0.
    v = np.array([1.0 if (s & 3) == 3 else 0.0 for s in range(8)])
    np.testing.assert_allclose(shapley_weights(3) @ v, [0.5, 0.5, 0.0])


def test_summaries_and_shap_plots(tmp_path):
    import shap

    df, y, mods = _frame(n_classes=3)
    clf = MultimodalClassifier(mods, fusion="early", random_state=0).fit(df, y)
    exp = clf.explain(df.iloc[:30])
    shares = modality_shares(exp)
    assert set(shares) == {"text", "image", "lab"}
    assert sum(shares.values()) == pytest.approx(1.0)
    per_sample = modality_shares(exp, per_sample=True)
    assert per_sample.shape == (30, 3)
    for kind in ("bar", "beeswarm", "heatmap", "waterfall"):
        path = plot_contributions(exp, tmp_path / f"{kind}.png", kind=kind, class_index=1)
        assert path.stat().st_size > 1000
    binary = (
        MultimodalClassifier(mods, fusion="late", random_state=0)
        .fit(df, (y > 0).astype(int))
        .explain(df.iloc[:30])
    )
    shap.plots.bar(binary, show=False)
    shap.plots.waterfall(binary[0], show=False)
    path = plot_contributions(binary, tmp_path / "bar.png")
    assert path.stat().st_size > 1000


def test_explainer_argument_errors():
    df, y, mods = _frame()
    clf = MultimodalClassifier(mods, fusion="late", random_state=0).fit(df, y)
    with pytest.raises(ValueError, match="removal='background' needs background rows"):
        clf.explain(df, removal="background")
    with pytest.raises(ValueError, match="output must be one of"):
        clf.explain(df, output="raw")
    with pytest.raises(ValueError, match="removal must be"):
        clf.explain(df, removal="zeros")
