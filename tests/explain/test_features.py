"""Owen-value drill-down inside a tabular modality."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolkit import MultimodalClassifier, MultimodalRegressor, TabularEncoder, TextEncoder
from toolkit.explain import explain_features


def _data(n=160, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "crp": rng.normal(size=n),
            "age": rng.normal(size=n),
            "noise": rng.normal(size=n),
            "note": rng.choice(["cough", "no cough", "fever"], n),
        }
    )
    y = (2 * df["crp"] + 0.3 * rng.normal(size=n) > 0).astype(int)
    mods = [
        ("labs", TabularEncoder(), ["crp", "age", "noise"]),
        ("note", TextEncoder(n_components=2), "note"),
    ]
    return df, y, mods


@pytest.mark.parametrize("fusion", ["early", "late", "gated"])
def test_owen_values_add_up_to_the_modality_value(fusion):
    df, y, mods = _data()
    clf = MultimodalClassifier(mods, fusion=fusion, random_state=0).fit(df, y)
    rows = df.iloc[:25]
    features = explain_features(clf, rows, "labs")
    modalities = clf.explain(rows)
    assert features.values.shape == (25, 3) and list(features.feature_names) == [
        "crp",
        "age",
        "noise",
    ]
    # the modality's Shapley value = its presence (background values) + the columns' values
    np.testing.assert_allclose(features.modality_values, modalities.values[:, 0], atol=1e-9)
    np.testing.assert_allclose(
        features.presence_values + features.values.sum(axis=1), modalities.values[:, 0], atol=1e-9
    )
    np.testing.assert_allclose(
        features.base_values + features.values.sum(axis=1), clf.predict_proba(rows)[:, 1], atol=1e-9
    )
    # The informative column carries the modality's credit.
    share = np.abs(features.values).mean(axis=0)
    assert share[0] / share.sum() > 0.7


def test_regression_and_single_modality():
    df, y, mods = _data()
    reg = MultimodalRegressor(mods[:1], fusion="late", random_state=0).fit(df, df["crp"] * 2)
    exp = explain_features(reg, df.iloc[:10], "labs")
    np.testing.assert_allclose(
        exp.base_values + exp.values.sum(axis=1), reg.predict(df.iloc[:10]), atol=1e-9
    )


def test_drill_down_errors():
    df, y, mods = _data()
    clf = MultimodalClassifier(mods, random_state=0).fit(df, y)
    with pytest.raises(
        TypeError, match="encoded by TextEncoder; drill-down needs a TabularEncoder"
    ):
        explain_features(clf, df, "note")
    with pytest.raises(KeyError, match="unknown modality 'scan'"):
        explain_features(clf, df, "scan")
    with pytest.raises(ValueError, match="has 3 columns; raise max_features"):
        explain_features(clf, df, "labs", max_features=2)


def test_a_normal_value_counts_against_and_an_unused_column_gets_nothing():
    """Known answer: the label follows CRP (10% of it unmeasured, so the encoder adds a
    missing indicator); sex is independent of the label. A column outside a coalition takes
    other patients' values, so a low CRP pushes against the diagnosis and sex gets ~0 (set
    missing instead, every CRP value was credited one way by its indicator, and sex was
    imputed to its most frequent value, crediting only the other)."""
    rng = np.random.default_rng(1)
    n = 300
    crp = rng.normal(size=n)
    y = (crp + 0.3 * rng.normal(size=n) > 0).astype(int)
    frame = pd.DataFrame({"crp": np.where(rng.random(n) < 0.1, np.nan, crp),
                          "sex": rng.choice(["F", "M"], n, p=[0.3, 0.7]),
                          "age": rng.normal(60, 10, n)})  # fmt: skip
    clf = MultimodalClassifier([("labs", TabularEncoder(), ["crp", "sex", "age"])],
                               fusion="late", random_state=0).fit(frame, y)  # fmt: skip
    rows = frame.iloc[:120]
    exp = explain_features(clf, rows, "labs")
    share = np.abs(exp.values).mean(axis=0) / np.abs(exp.values).sum(axis=1).mean()
    assert share[0] > 0.9 and share[1] < 0.05 and share[2] < 0.05, share
    measured = rows["crp"].notna().to_numpy()
    low = measured & (rows["crp"] < -0.5).to_numpy()
    high = measured & (rows["crp"] > 0.5).to_numpy()
    assert (exp.values[low, 0] < 0).all() and (exp.values[high, 0] > 0).all()
    assert exp.n_background == 50
    np.testing.assert_allclose(exp.base_values + exp.values.sum(axis=1),
                               clf.predict_proba(rows)[:, 1], atol=1e-9)  # fmt: skip
    # an explicit background of other rows; one without the columns is refused
    other = explain_features(clf, rows.iloc[:5], "labs", background=frame.iloc[200:])
    assert other.values.shape == (5, 3) and other.n_background == 50
    with pytest.raises(ValueError, match=r"background lacks the modality's columns \['age'\]"):
        explain_features(clf, rows, "labs", background=frame[["crp", "sex"]])
