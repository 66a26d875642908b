"""Confidence intervals of modality contributions: bootstrap over rows or groups, and
across refits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shap

from toolkit.explain import contribution_intervals, plot_intervals, refit_intervals


def _explanation(n=200, seed=0, scale=(1.0, 0.2, 0.0)):
    rng = np.random.default_rng(seed)
    return shap.Explanation(rng.normal(size=(n, 3)) * scale, feature_names=["a", "b", "c"])


def test_bootstrap_over_rows_covers_the_estimate_and_matches_the_summaries():
    exp = _explanation()
    table = contribution_intervals(exp, n_resamples=500, random_state=0)
    assert list(table.columns) == [
        "modality", "statistic", "estimate", "low", "high", "confidence_level", "over", "n"
    ]  # fmt: skip
    assert table["statistic"].tolist() == ["mean_abs"] * 3 + ["share"] * 3 + ["mean"] * 3
    assert set(table["over"]) == {"rows"} and set(table["n"]) == {200}
    est = table.set_index(["statistic", "modality"])
    values = exp.values
    np.testing.assert_allclose(est.loc["mean_abs", "estimate"], np.abs(values).mean(axis=0))
    np.testing.assert_allclose(est.loc["mean", "estimate"], values.mean(axis=0))
    assert (table["low"] <= table["estimate"]).all() and (table["estimate"] <= table["high"]).all()
    # the width follows the standard error of a mean of |phi| (sd / sqrt(n))
    width = est.loc[("mean_abs", "a"), "high"] - est.loc[("mean_abs", "a"), "low"]
    se = np.abs(values[:, 0]).std() / np.sqrt(200)
    assert width == pytest.approx(2 * 1.96 * se, rel=0.2)
    # a modality that is always 0 has a zero-width interval at 0
    assert est.loc[("share", "c"), ["low", "high"]].tolist() == [0.0, 0.0]
    assert est.loc[("share", "a"), "low"] > 0.7


def test_the_percentile_interval_covers_the_truth_at_about_its_level():
    covered = 0
    for seed in range(40):
        exp = _explanation(n=60, seed=seed)
        t = contribution_intervals(exp, n_resamples=300, random_state=seed)
        row = t[(t.statistic == "mean") & (t.modality == "a")].iloc[0]
        covered += row.low <= 0.0 <= row.high  # the true mean is 0
    assert 33 <= covered <= 40  # 95% nominal: 38 of 40 expected


def test_cluster_bootstrap_resamples_whole_groups():
    # 20 patients x 10 rows with a strong patient effect: rows are not independent.
    rng = np.random.default_rng(0)
    patient = np.repeat(np.arange(20), 10)
    level = rng.normal(size=20)[patient] * 2 + rng.normal(size=200) * 0.1
    exp = shap.Explanation(np.column_stack([level, np.zeros(200)]), feature_names=["a", "b"])
    rows = contribution_intervals(exp, n_resamples=500, random_state=0)
    groups = contribution_intervals(exp, groups=patient, n_resamples=500, random_state=0)
    assert set(groups["over"]) == {"groups"} and set(groups["n"]) == {20}
    pick = (rows.statistic == "mean") & (rows.modality == "a")
    width_rows = float((rows.high - rows.low)[pick].iloc[0])
    width_groups = float((groups.high - groups.low)[pick].iloc[0])
    assert width_groups > 2 * width_rows  # ~sqrt(10) wider: 20 independent units, not 200
    np.testing.assert_allclose(groups.estimate, rows.estimate)
    # labels work as group ids (same sorted order as the integers: the same resamples)
    labels = np.array([f"patient-{p:02d}" for p in patient])
    named = contribution_intervals(exp, groups=labels, n_resamples=500, random_state=0)
    np.testing.assert_allclose(named[["low", "high"]], groups[["low", "high"]])


def test_multiclass_values_have_magnitudes_and_shares_only():
    rng = np.random.default_rng(0)
    exp = shap.Explanation(rng.normal(size=(50, 2, 3)), feature_names=["a", "b"])
    table = contribution_intervals(exp, n_resamples=200, random_state=0)
    assert sorted(set(table.statistic)) == ["mean_abs", "share"]
    np.testing.assert_allclose(
        table[table.statistic == "mean_abs"].estimate, np.abs(exp.values).sum(axis=2).mean(axis=0)
    )


def test_refit_intervals_use_the_t_interval_across_fits():
    folds = [_explanation(n=50, seed=s, scale=(1.0, 0.2, 0.1)) for s in range(5)]
    table = refit_intervals(folds)
    assert set(table.over) == {"refits"} and set(table.n) == {5}
    row = table[(table.statistic == "mean_abs") & (table.modality == "a")].iloc[0]
    per_fit = [np.abs(f.values[:, 0]).mean() for f in folds]
    assert [row[f"fit_{k}"] for k in range(5)] == pytest.approx(per_fit)
    half = 2.7764451051977987 * np.std(per_fit, ddof=1) / np.sqrt(5)  # t(0.975, 4)
    assert row.estimate == pytest.approx(np.mean(per_fit))
    assert (row.low, row.high) == pytest.approx((np.mean(per_fit) - half, np.mean(per_fit) + half))
    shares = table[table.statistic == "share"]
    assert (shares.low >= 0).all() and (shares.high <= 1).all()


def test_interval_errors(tmp_path):
    exp = _explanation(n=20)
    with pytest.raises(ValueError, match=r"groups must hold one id per explained row \(20\)"):
        contribution_intervals(exp, groups=[0, 1])
    with pytest.raises(ValueError, match=r"groups\[3\] is missing"):
        contribution_intervals(exp, groups=[0, 1, 0, None] + [1] * 16)
    with pytest.raises(ValueError, match="at least 2 groups to resample, got 1"):
        contribution_intervals(exp, groups=np.zeros(20))
    with pytest.raises(ValueError, match=r"confidence_level must be in \(0, 1\)"):
        contribution_intervals(exp, confidence_level=95)
    with pytest.raises(ValueError, match="at least 2 fitted models, got 1"):
        refit_intervals([exp])
    other = shap.Explanation(np.zeros((5, 2)), feature_names=["a", "z"])
    with pytest.raises(ValueError, match=r"explanation 1 has modalities \['a', 'z'\]"):
        refit_intervals([exp, other])
    with pytest.raises(ValueError, match="NaN or infinite"):
        contribution_intervals(shap.Explanation(np.full((4, 2), np.nan), feature_names=["a", "b"]))
    # error bars: rows and refits in one figure
    both = pd.concat(
        [contribution_intervals(exp, n_resamples=100, random_state=0), refit_intervals([exp, exp])]
    )
    path = plot_intervals(both, tmp_path / "ci.png")
    assert path.stat().st_size > 5000
    with pytest.raises(ValueError, match="no rows for statistic 'median'"):
        plot_intervals(both, statistic="median")
