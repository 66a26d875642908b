"""Multi-class explanations in shap's bar / beeswarm / waterfall plots (by slicing, by class
name, or class_index), and the drill-down / interaction figures."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import shap

from toolkit import MultimodalClassifier, TabularEncoder
from toolkit.explain import plot_contributions, select_class


@pytest.fixture(scope="module")
def three_class():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({c: rng.normal(size=150) for c in ("x", "z", "w")})
    y = np.array(["neg", "neu", "pos"])[np.digitize(df["x"] + 0.5 * df["z"], [-0.5, 0.5])]
    mods = [
        (n, TabularEncoder(), [c]) for n, c in zip(("text", "audio", "face"), "xzw", strict=True)
    ]
    clf = MultimodalClassifier(mods, fusion="late", random_state=0).fit(df, y)
    return clf, clf.explain(df.iloc[:40]), df.iloc[:40]


def _labels(ax):
    return {t.get_text() for t in ax.get_yticklabels()}


@pytest.mark.parametrize("how", ["position", "name", "select_class"])
def test_shap_plots_draw_one_class_of_a_multiclass_explanation(three_class, how, tmp_path):
    clf, exp, rows = three_class
    assert exp.values.shape == (40, 3, 3) and exp.output_names == ["neg", "neu", "pos"]
    one = {
        "position": lambda: exp[:, :, 2],
        "name": lambda: exp[:, :, "pos"],
        "select_class": lambda: select_class(exp, "pos"),
    }[how]()
    np.testing.assert_array_equal(one.values, exp.values[:, :, 2])
    np.testing.assert_array_equal(one.base_values, exp.base_values[:, 2])
    # efficiency still holds for the selected class: the waterfall ends at P(pos)
    np.testing.assert_allclose(
        one.values.sum(axis=1) + one.base_values, clf.predict_proba(rows)[:, 2], atol=1e-9
    )
    for name, draw in (
        ("bar", lambda: shap.plots.bar(one, show=False)),
        ("beeswarm", lambda: shap.plots.beeswarm(one, show=False)),
        ("waterfall", lambda: shap.plots.waterfall(one[0], show=False)),
    ):
        plt.figure()
        draw()
        fig = plt.gcf()
        shown = {label.split(" = ")[-1] for ax in fig.axes for label in _labels(ax)}
        assert {"text", "audio", "face"} <= shown, (name, shown)
        fig.savefig(tmp_path / f"{name}.png")
        plt.close("all")
        assert (tmp_path / f"{name}.png").stat().st_size > 5000


def test_plot_contributions_takes_a_class_name(three_class, tmp_path):
    _, exp, _ = three_class
    for kind in ("bar", "beeswarm", "waterfall", "heatmap"):
        path = plot_contributions(exp, tmp_path / f"{kind}.png", kind=kind, class_index="neu")
        assert path.stat().st_size > 5000
    with pytest.raises(KeyError, match=r"unknown class 'maybe'; the explanation's classes are"):
        plot_contributions(exp, tmp_path / "x.png", kind="beeswarm", class_index="maybe")
    with pytest.raises(IndexError, match="class_index 3 is out of range for the 3 classes"):
        select_class(exp, 3)
    with pytest.raises(ValueError, match="one output, nothing to select"):
        select_class(exp[:, :, 0], 0)
    with pytest.raises(ValueError, match="kind must be"):
        plot_contributions(exp, tmp_path / "x.png", kind="pie")
