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
    np.testing.assert_allclose(features.values.sum(axis=1), modalities.values[:, 0], atol=1e-9)
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
