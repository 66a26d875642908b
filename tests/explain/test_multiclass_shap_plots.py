"""A multi-class explanation (values (n, M, K)) in shap's plots, as the README says: one class
selected by position (``exp[..., k]``, ``exp[:, :, k]``), by name (``exp[:, :, "name"]``,
``select_class``), or |values| summed over classes; the whole explanation is not drawn."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import shap
from sklearn.linear_model import LogisticRegression

from toolkit import LateFusion, MultimodalClassifier, TabularEncoder
from toolkit.explain import select_class


@pytest.fixture(scope="module")
def three_class():
    rng = np.random.default_rng(0)
    y = np.array(["neg", "neu", "pos"])[np.arange(90) % 3]
    code = (y == "pos").astype(float) - (y == "neg")
    df = pd.DataFrame({"a": code + rng.normal(0, 0.3, 90), "b": rng.normal(size=90)})
    mods = [("a", TabularEncoder(), ["a"]), ("b", TabularEncoder(), ["b"])]
    clf = MultimodalClassifier(mods, fusion=LateFusion(estimator=LogisticRegression()),
                               random_state=0).fit(df, y)  # fmt: skip
    return clf.explain(df.iloc[:12])


def _bar_lengths(exp) -> list[float]:
    ax = shap.plots.bar(exp, show=False)
    lengths = sorted(round(p.get_width(), 6) for p in ax.patches)
    plt.close("all")
    return lengths


def test_one_class_at_a_time(three_class):
    exp = three_class
    assert exp.values.shape == (12, 2, 3) and list(exp.output_names) == ["neg", "neu", "pos"]
    expected = sorted(np.round(np.abs(exp.values[:, :, 2]).mean(axis=0), 6))
    for chosen in (exp[..., 2], exp[:, :, 2], exp[:, :, "pos"], select_class(exp, "pos")):
        assert chosen.values.shape == (12, 2) and np.shape(chosen.base_values) == (12,)
        np.testing.assert_array_equal(chosen.values, exp.values[:, :, 2])
        assert _bar_lengths(chosen) == expected
    ax = shap.plots.waterfall(exp[0, :, "neg"], show=False)
    assert ax is not None
    plt.close("all")
    summed = exp.abs.sum(axis=2)  # |contribution| over all classes
    assert _bar_lengths(summed) == sorted(np.round(np.abs(exp.values).sum(2).mean(0), 6))


def test_what_the_readme_says_fails_does_fail(three_class):
    """The README tells users to select a class: shap draws no (n, M, K) explanation, and its
    name lookup after an Ellipsis fails (name the axes instead)."""
    with pytest.raises(IndexError):
        shap.plots.bar(three_class, show=False)
    plt.close("all")
    with pytest.raises(IndexError):
        three_class[..., "pos"]
    with pytest.raises(KeyError, match=r"unknown class 'maybe'; the explanation's classes are"):
        select_class(three_class, "maybe")
