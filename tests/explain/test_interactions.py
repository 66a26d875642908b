"""Pairwise modality interactions: agreement with shapiq's exact Shapley interaction index,
rows adding up to the Shapley values, exact zeros for absent modalities, and an XOR label
whose credit lies on the pair."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolkit import (
    EarlyFusion,
    GatedFusion,
    MultimodalClassifier,
    MultimodalRegressor,
    TabularEncoder,
)
from toolkit.explain import (
    exact_interactions,
    interaction_summary,
    interaction_values,
    plot_interactions,
    value_function,
)


def _frame(n=120, seed=0, n_classes=2):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({c: rng.normal(size=n) for c in ("x", "z", "w", "u")})
    score = df["x"] + df["z"] * df["w"]
    y = np.digitize(score, np.quantile(score, np.linspace(0, 1, n_classes + 1)[1:-1]))
    mods = [(name, TabularEncoder(), [c]) for name, c in zip("abcd", "xzwu", strict=True)]
    return df, y, mods


@pytest.mark.parametrize(
    "fusion", ["early", "late", GatedFusion(max_epochs=30)], ids=["early", "late", "gated"]
)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_rows_add_up_to_the_shapley_values(fusion, n_classes):
    df, y, mods = _frame(n_classes=n_classes)
    clf = MultimodalClassifier(mods, fusion=fusion, random_state=0).fit(df, y)
    inter = clf.explain(df.iloc[:30], interactions=True)
    phi = clf.explain(df.iloc[:30])
    shape = (30, 4, 4) if n_classes == 2 else (30, 4, 4, 3)
    assert inter.values.shape == shape and list(inter.feature_names) == ["a", "b", "c", "d"]
    np.testing.assert_allclose(inter.values.sum(axis=2), phi.values, atol=1e-12)
    np.testing.assert_allclose(inter.base_values, phi.base_values)
    # symmetric, and the whole matrix adds up to output - base
    np.testing.assert_array_equal(inter.values, np.swapaxes(inter.values, 1, 2))
    total = inter.values.sum(axis=(1, 2)) + inter.base_values
    proba = clf.predict_proba(df.iloc[:30])
    np.testing.assert_allclose(total, proba[:, 1] if n_classes == 2 else proba, atol=1e-9)
    if n_classes == 3:
        assert inter.output_names == ["0", "1", "2"]


def test_agrees_with_shapiq_exact_index_on_the_same_value_function():
    shapiq = pytest.importorskip("shapiq")
    df, y, mods = _frame()
    reg = MultimodalRegressor(mods, fusion="late", random_state=0).fit(
        df, df["x"] + df["z"] * df["w"]
    )
    rows = df.iloc[:4]
    ours = interaction_values(reg, rows)
    v = value_function(reg, rows)
    for i in range(len(rows)):

        def game(coalitions, i=i):
            return np.array([v(c.astype(bool))[i] for c in np.atleast_2d(coalitions)])

        computer = shapiq.ExactComputer(game, n_players=4)
        sii = computer("SII", order=2).dict_values
        sv = computer("SV", order=1).dict_values
        for a in range(4):
            assert ours.values[i, a].sum() == pytest.approx(sv[(a,)], abs=1e-10)
            for b in range(a + 1, 4):
                assert 2 * ours.values[i, a, b] == pytest.approx(sii[(a, b)], abs=1e-10)


def test_known_game_and_single_player():
    # v = 1 only when players 0 and 1 are both in: all credit on the pair, none on player 2.
    V = np.array([1.0 if (s & 3) == 3 else 0.0 for s in range(8)])
    np.testing.assert_allclose(
        exact_interactions(V, 3), [[0, 0.5, 0], [0.5, 0, 0], [0, 0, 0]], atol=1e-15
    )
    np.testing.assert_allclose(exact_interactions(np.array([0.2, 0.7]), 1), [[0.5]], atol=1e-15)


def test_absent_modality_gets_exactly_zero_row_and_column():
    df, y, mods = _frame()
    clf = MultimodalClassifier(mods, fusion="late", random_state=0).fit(df, y)
    rows = df.iloc[:10].copy()
    rows.loc[rows.index[:3], "z"] = np.nan
    inter = interaction_values(clf, rows)
    assert (inter.values[:3, 1, :] == 0.0).all() and (inter.values[:3, :, 1] == 0.0).all()
    assert (inter.values[3:, 1, 1] != 0.0).all()


def test_xor_label_puts_its_credit_on_the_pair():
    """y = sign(a) XOR sign(b); c is noise. Removal by balanced background rows makes
    v({a}) = v({b}) = v({}) = 1/2, so the pair's interaction is the whole story."""
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    n = 240
    sa, sb = np.tile([1, 1, -1, -1], n // 4), np.tile([1, -1, 1, -1], n // 4)
    df = pd.DataFrame(
        {
            "x": sa * (1 + 0.3 * rng.random(n)),
            "z": sb * (1 + 0.3 * rng.random(n)),
            "u": rng.normal(size=n),
        }
    )
    y = (sa * sb < 0).astype(int)
    mods = [
        ("a", TabularEncoder(), ["x"]),
        ("b", TabularEncoder(), ["z"]),
        ("c", TabularEncoder(), ["u"]),
    ]
    head = MLPClassifier((16,), max_iter=3000, random_state=0)
    clf = MultimodalClassifier(mods, fusion=EarlyFusion(estimator=head), random_state=0)
    clf.fit(df[:200], y[:200])
    assert clf.score(df[200:], y[200:]) == 1.0
    inter = interaction_values(clf, df[200:], removal="background", background=df[:40])
    table = interaction_summary(inter)
    pair = table.loc["a", "b"] + table.loc["b", "a"]
    assert pair / table.to_numpy().sum() > 0.9, table
    assert table.loc["a", "b"] == pytest.approx(0.25, abs=0.03)  # |I_ab| / 2 = (1/2) / 2


def test_interaction_errors_summary_and_plot(tmp_path):
    df, y, mods = _frame(n_classes=3)
    clf = MultimodalClassifier(mods, fusion="early", random_state=0).fit(df, y)
    inter = interaction_values(clf, df.iloc[:20])
    summed = interaction_summary(inter)
    one = interaction_summary(inter, class_index="2")
    np.testing.assert_allclose(one.to_numpy(), np.abs(inter.values[..., 2]).mean(axis=0))
    np.testing.assert_allclose(summed.to_numpy(), np.abs(inter.values).sum(axis=3).mean(axis=0))
    path = plot_interactions(inter, tmp_path / "inter.png")
    assert path.stat().st_size > 5000
    with pytest.raises(
        KeyError, match=r"unknown class 'bad'; the explanation's classes are \['0', '1', '2'\]"
    ):
        interaction_summary(inter, class_index="bad")
    with pytest.raises(ValueError, match=r"expected interaction values of shape"):
        interaction_summary(clf.explain(df.iloc[:5]))
    with pytest.raises(ValueError, match="above max_exact_modalities=3"):
        interaction_values(clf, df.iloc[:5], max_exact_modalities=3)
