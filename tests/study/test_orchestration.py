"""One fold of a study (toolkit/study/orchestration.py), on tiny tabular data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolkit import MultimodalClassifier, TabularEncoder
from toolkit.fusion import EarlyFusion, LateFusion
from toolkit.study.orchestration import FoldPlan, run_fold

N = 60
Y = np.tile([0, 1, 2], N // 3)
TRAIN, TEST = np.arange(0, 45), np.arange(45, 60)


def _frame():
    rng = np.random.RandomState(0)
    frame = pd.DataFrame({"x": Y + rng.normal(0, 0.5, N), "z": Y + rng.normal(0, 0.5, N)})
    frame.loc[Y == 2, "z"] = np.nan  # modality "b" is missing on every row of class 2
    return frame


def _mods():
    return [("a", TabularEncoder(), ["x"]), ("b", TabularEncoder(), ["z"])]


def _plan(**options):
    fusions = {"late": LateFusion(random_state=0), "early": EarlyFusion(random_state=0)}
    return FoldPlan(
        frame=_frame(), y=Y, modalities=_mods(), fusions=fusions, seed=0, n_classes=3, **options
    )


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return run_fold(_plan(), 0, TRAIN, TEST, tmp_path_factory.mktemp("cache"))


def test_strategies_match_the_estimator_fitted_on_the_raw_fold(result):
    frame = _frame()
    for label, fusion in (("late", LateFusion), ("early", EarlyFusion)):
        clf = MultimodalClassifier(_mods(), fusion=fusion(random_state=0), random_state=0)
        expected = clf.fit(frame.iloc[TRAIN], Y[TRAIN]).predict_proba(frame.iloc[TEST])
        np.testing.assert_allclose(result.oof[label], expected, rtol=0, atol=1e-12)
    assert result.fold == 0 and result.test_index.tolist() == TEST.tolist()


def test_a_baseline_whose_rows_lack_a_class_still_gives_every_class(result):
    single = result.baselines["b only"]
    assert single.shape == (15, 3)
    np.testing.assert_array_equal(single[:, 2], 0.0)  # class 2 never has modality b
    no_b = Y[TEST] == 2
    # Rows without b get the prior of the rows b was fitted on (classes 0 and 1, half each).
    np.testing.assert_allclose(single[no_b], np.tile([0.5, 0.5, 0.0], (no_b.sum(), 1)))
    np.testing.assert_allclose(single.sum(axis=1), 1.0)


def test_robustness_rows_left_without_a_modality_get_the_training_prior(result):
    without_a = result.robust[("late", "a")]
    only_a = Y[TEST] == 2
    np.testing.assert_allclose(without_a[only_a], 1 / 3)  # training classes are balanced
    assert not np.allclose(without_a[~only_a], 1 / 3)
    np.testing.assert_allclose(result.robust[("late", "b")][only_a], result.oof["late"][only_a])


def test_contributions_add_up_to_the_output_minus_the_prior(result):
    for label in ("late", "early"):
        values = result.contributions[label]
        assert values.shape == (15, 2, 3)
        np.testing.assert_allclose(values.sum(axis=1) + 1 / 3, result.oof[label], atol=1e-9)
        np.testing.assert_array_equal(values[Y[TEST] == 2, 1], 0.0)  # b absent: exactly 0


def test_parts_switched_off_are_not_computed(tmp_path):
    plan = _plan(robustness=False, baselines=False, explain=False)
    out = run_fold(plan, 1, TRAIN, TEST, tmp_path)
    assert set(out.oof) == {"late", "early"}
    assert out.robust == {} and out.baselines == {} and out.contributions == {}
