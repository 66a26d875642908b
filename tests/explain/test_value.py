"""value_function: v(S) checked against the model's predictions on raw rows with the removed
modalities blanked (missing) or taken from background rows (background)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolkit import Embeddings, MultimodalClassifier, MultimodalRegressor, TabularEncoder
from toolkit.explain import coalition_weights, exact_shapley, shapley_weights, value_function

COLUMNS = {"a": ["x"], "b": ["z", "w"], "c": ["u"]}


def _frame(n=60, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({c: rng.normal(size=n) for c in ("x", "z", "w", "u")})
    y = (df["x"] + df["z"] > 0).astype(int).to_numpy()
    mods = [(name, TabularEncoder(), cols) for name, cols in COLUMNS.items()]
    return df, y, mods


def _blank(df, kept):
    """``df`` with the columns of every modality outside ``kept`` set missing."""
    out = df.copy()
    for name, cols in COLUMNS.items():
        if name not in kept:
            out[cols] = np.nan
    return out


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_missing_removal_is_the_prediction_without_those_modalities(fusion):
    df, y, mods = _frame()
    clf = MultimodalClassifier(mods, fusion=fusion, random_state=0).fit(df, y)
    rows = df.iloc[:10]
    v = value_function(clf, rows)
    assert v.names == ["a", "b", "c"] and v.n_players == 3 and v.n_samples == 10
    for kept in (["a"], ["b", "c"], ["a", "c"], ["a", "b", "c"]):
        expected = clf.predict_proba(_blank(rows, kept))[:, 1]
        np.testing.assert_array_equal(v(kept), expected)
    np.testing.assert_array_equal(v([]), np.full(10, clf.prior_[1]))  # nothing known: prior
    # The three ways of naming a coalition agree; all_coalitions is ordered by bitmask.
    np.testing.assert_array_equal(v(0b101), v(["a", "c"]))
    np.testing.assert_array_equal(v(np.array([True, False, True])), v(["c", "a"]))
    V = v.all_coalitions()
    assert V.shape == (8, 10)
    np.testing.assert_array_equal(V[0b110], v(["b", "c"]))


def test_log_odds_and_regression_scales():
    df, y, mods = _frame()
    clf = MultimodalClassifier(mods, random_state=0).fit(df, y)
    p = clf.predict_proba(df.iloc[:5])
    np.testing.assert_allclose(
        value_function(clf, df.iloc[:5], output="log_odds")(7), np.log(p[:, 1] / p[:, 0])
    )
    target = 2.0 * df["x"].to_numpy() + 1.0
    reg = MultimodalRegressor(mods, random_state=0).fit(df, target)
    v = value_function(reg, df.iloc[:5])
    np.testing.assert_array_equal(v(7), reg.predict(df.iloc[:5]))
    np.testing.assert_allclose(v([]), target.mean())


def test_background_removal_takes_the_removed_modalities_from_each_background_row():
    df, y, mods = _frame()
    clf = MultimodalClassifier(mods, fusion="early", random_state=0).fit(df, y)
    rows, background = df.iloc[:4], df.iloc[40:46]
    v = value_function(clf, rows, removal="background", background=background)
    assert v.background.n_samples == 6
    kept_cols = COLUMNS["a"]
    expected = np.zeros(len(rows))
    for _, bg_row in background.iterrows():
        hybrid = pd.DataFrame([bg_row] * len(rows), index=rows.index)
        hybrid[kept_cols] = rows[kept_cols]  # own "a", background's "b" and "c"
        expected += clf.predict_proba(hybrid)[:, 1] / len(background)
    np.testing.assert_allclose(v(["a"]), expected, atol=1e-12)
    np.testing.assert_allclose(v([]), clf.predict_proba(background)[:, 1].mean(), atol=1e-12)
    np.testing.assert_allclose(v(7), clf.predict_proba(rows)[:, 1], atol=1e-12)
    # Removal by background differs from removal by marking missing.
    assert not np.allclose(v(["a"]), value_function(clf, rows)(["a"]))


def test_background_is_subsampled_with_the_seed():
    df, y, mods = _frame()
    clf = MultimodalClassifier(mods, random_state=0).fit(df, y)
    kw = {"removal": "background", "background": df, "max_background": 7}
    a = value_function(clf, df.iloc[:3], random_state=1, **kw)
    b = value_function(clf, df.iloc[:3], random_state=1, **kw)
    assert a.background.n_samples == 7
    np.testing.assert_array_equal(a.background.blocks["a"], b.background.blocks["a"])


def test_rows_without_any_modality_are_valued_at_the_prior():
    df, y, mods = _frame()
    clf = MultimodalClassifier(mods, random_state=0).fit(df, y)
    emb = clf.encode(df.iloc[:4])
    mask = emb.mask.copy()
    mask[0] = False
    v = value_function(clf, emb.with_mask(mask))
    np.testing.assert_array_equal(v(7)[0], clf.prior_[1])
    np.testing.assert_array_equal(v(7)[1:], clf.predict_proba(df.iloc[1:4])[:, 1])


def test_value_function_errors():
    df, y, mods = _frame()
    clf = MultimodalClassifier(mods, random_state=0).fit(df, y)
    with pytest.raises(ValueError, match="removal must be 'missing' or 'background'"):
        value_function(clf, df, removal="zeros")
    with pytest.raises(ValueError, match="removal='background' needs background rows"):
        value_function(clf, df, removal="background")
    with pytest.raises(ValueError, match=r"output must be one of \('probability', 'log_odds'\)"):
        value_function(clf, df, output="raw")
    with pytest.raises(ValueError, match=r"Embeddings have modalities \['a'\]"):
        value_function(clf, Embeddings({"a": np.ones((3, 1))}))
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        value_function(MultimodalClassifier(mods), df)
    v = value_function(clf, df.iloc[:3])
    with pytest.raises(KeyError, match=r"unknown modality \['d'\]"):
        v(["a", "d"])
    with pytest.raises(ValueError, match=r"bitmask 8 is outside 0..7"):
        v(8)
    with pytest.raises(ValueError, match=r"must have shape \(3,\)"):
        v(np.array([True, False]))
    with pytest.raises(TypeError, match="a coalition is a bitmask"):
        v("a")


def test_shapley_arithmetic_agrees_across_its_forms():
    rng = np.random.default_rng(0)
    V = rng.normal(size=(16, 5))
    np.testing.assert_allclose(exact_shapley(V, 4), shapley_weights(4) @ V, atol=1e-12)
    np.testing.assert_allclose(coalition_weights(3), [1 / 3, 1 / 6, 1 / 3])
    # Efficiency: the values add up to v(full) - v(empty).
    np.testing.assert_allclose(exact_shapley(V, 4).sum(axis=0), V[15] - V[0], atol=1e-12)
