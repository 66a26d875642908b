"""Split-conformal sets and intervals per availability pattern (toolkit/conformal.py).

A generated task with a known structure: modality "a" carries most of the signal, "b" a
little; "b" is missing on some rows and "a" on others, so three availability patterns
(a+b, a, b) differ in how hard they are. Mondrian calibration must give the asked-for
coverage (within 3 points) in *every* pattern; pooled calibration over-covers the easy
pattern and under-covers the hard one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolkit import MultimodalClassifier, MultimodalRegressor, TabularEncoder
from toolkit.conformal import ConformalPredictor, availability_patterns

N = 12_000
CONFIDENCE = 0.9


def _task(regression: bool, seed: int = 0):
    rng = np.random.RandomState(seed)
    a, b = rng.normal(size=N), rng.normal(size=N)
    score = 2.0 * a + 0.7 * b
    y = score + rng.normal(0, 0.5, N) if regression else (score + rng.logistic(size=N) > 0)
    frame = pd.DataFrame({"a": a, "b": b})
    which = rng.random_sample(N)
    frame.loc[which < 0.3, "b"] = np.nan  # pattern "a"
    frame.loc[(which >= 0.3) & (which < 0.55), "a"] = np.nan  # pattern "b"
    groups = np.arange(N) // 3  # three rows per group, kept together
    return frame, np.asarray(y, dtype=float if regression else int), groups


def _model(regression: bool):
    mods = [("a", TabularEncoder(), ["a"]), ("b", TabularEncoder(), ["b"])]
    Model = MultimodalRegressor if regression else MultimodalClassifier
    return Model(mods, fusion="early", random_state=0)


def _coverage(regression: bool, mondrian: bool):
    frame, y, groups = _task(regression)
    half = N // 2
    cp = ConformalPredictor(
        _model(regression), confidence=CONFIDENCE, calibration_size=0.5, mondrian=mondrian,
        random_state=0,
    )  # fmt: skip
    cp.fit(frame.iloc[:half], y[:half], groups=groups[:half])
    return cp, cp.coverage(frame.iloc[half:], y[half:])


@pytest.mark.parametrize("regression", [False, True], ids=["sets", "intervals"])
def test_mondrian_coverage_is_nominal_in_every_availability_pattern(regression):
    cp, table = _coverage(regression, mondrian=True)
    assert sorted(cp.calibration_counts_) == ["a", "a+b", "b"]
    assert min(cp.calibration_counts_.values()) > 600
    assert set(table.index) == {"a", "a+b", "b", "all"}
    for pattern, row in table.iterrows():
        assert abs(row["coverage"] - CONFIDENCE) <= 0.03, (pattern, row["coverage"])
    size = "mean_width" if regression else "mean_size"
    # the hard pattern (b only) needs wider intervals / larger sets than the complete rows
    assert table.loc["b", size] > table.loc["a+b", size] * 1.3


def test_pooled_calibration_misses_the_hard_pattern_for_regression():
    _, table = _coverage(regression=True, mondrian=False)
    assert table.loc["b", "coverage"] < CONFIDENCE - 0.05
    assert table.loc["a+b", "coverage"] > CONFIDENCE + 0.03


def test_unseen_pattern_gets_everything_and_a_warning():
    frame, y, _ = _task(regression=False)
    complete = frame.notna().all(axis=1).to_numpy()
    cp = ConformalPredictor(_model(False), random_state=0).fit(frame[complete], y[complete])
    assert list(cp.calibration_counts_) == ["a+b"]
    with pytest.warns(UserWarning, match=r"pattern\(s\) \['a', 'b'\] had no calibration rows"):
        sets = cp.predict_set(frame.iloc[:200])
    unseen = ~complete[:200]
    assert sets[unseen].all()
    assert not sets[~unseen].all()


def test_small_pattern_gets_infinite_intervals():
    frame, y, _ = _task(regression=True)
    model = _model(True).fit(frame.iloc[:3000], y[:3000])
    rest = np.arange(3000, N)
    only_b = frame["a"].isna().to_numpy()
    # calibrate on rows with "a" plus only 5 rows of pattern "b" (9 are needed at 90%)
    cal = np.r_[rest[~only_b[rest]], rest[only_b[rest]][:5]]
    cp = ConformalPredictor(model).calibrate(frame.iloc[cal], y[cal])
    assert cp.calibration_counts_["b"] == 5 < cp.min_calibration_rows == 9
    intervals = cp.predict_interval(frame.iloc[:100])
    assert np.isinf(intervals[only_b[:100]]).all() and np.isfinite(intervals[~only_b[:100]]).all()


def test_patterns_and_bad_parameters():
    mask = np.array([[True, False], [False, False], [True, True]])
    assert availability_patterns(mask, ["note", "scan"]).tolist() == ["note", "none", "note+scan"]
    frame, y, _ = _task(regression=False)
    with pytest.raises(ValueError, match=r"confidence must be a number in \(0, 1\), got 1.2"):
        ConformalPredictor(_model(False), confidence=1.2).fit(frame, y)
    cp = ConformalPredictor(_model(False), random_state=0).fit(frame.iloc[:600], y[:600])
    with pytest.raises(TypeError, match="predict_interval is for regressors"):
        cp.predict_interval(frame.iloc[:5])
    with pytest.raises(ValueError, match=r"calibration labels \[7\] are not classes"):
        cp.calibrate(frame.iloc[:3], np.array([0, 7, 1]))


def test_coverage_table_reports_the_share_of_uninformative_rows():
    from toolkit.conformal import coverage_table

    patterns = np.array(["a", "a", "a+b", "a+b"])
    covered = np.array([True, True, True, False])
    width = np.array([np.inf, np.inf, 1.0, 1.0])
    table = coverage_table(patterns, covered, width, "mean_width", uninformative=~np.isfinite(width))
    assert table.loc["a", "uninformative"] == 1.0
    assert table.loc["a+b", "uninformative"] == 0.0
    assert table.loc["all", "uninformative"] == 0.5
    assert table.loc["all", "coverage"] == 0.75
    assert "uninformative" not in coverage_table(patterns, covered, width).columns
