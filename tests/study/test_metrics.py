"""Study metrics with known answers (toolkit/study/metrics.py), and the contract of the
metric registry: every registered metric computes its own known answer, has a direction
and is accepted (or, for an ideal-value metric, refused with the reason) as a config's
primary metric, without this file listing the metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toolkit.study.config import ConfigError, StudyConfig
from toolkit.study.metrics import (
    METRICS,
    Metric,
    bootstrap_interval,
    bootstrap_resamples,
    calibration_slope_intercept,
    calibration_table,
    classification_metric_names,
    classification_metrics,
    default_primary,
    format_p,
    metric_names,
    mosi_target_problem,
    paired_difference,
    regression_metrics,
)

Y = np.array([0, 0, 1, 1])
P1 = np.array([0.1, 0.6, 0.4, 0.9])
PROBA = np.column_stack([1 - P1, P1])


def test_binary_metrics_by_hand():
    got = classification_metrics(Y, PROBA, classes=[0, 1], threshold=0.5)
    assert list(got) == metric_names("classification")
    # argmax predicts [0, 1, 0, 1]: one right of each class.
    assert got["accuracy"] == 0.5
    assert got["f1_macro"] == pytest.approx(0.5)
    # Positive scores 0.4, 0.9 against negative 0.1, 0.6: 3 of 4 pairs ordered.
    assert got["auroc"] == pytest.approx(0.75)
    # Ranked 0.9 (+), 0.6 (-), 0.4 (+): precision 1 at recall 1/2, 2/3 at recall 1.
    assert got["auprc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert got["brier"] == pytest.approx((0.01 + 0.36 + 0.36 + 0.01) / 4)
    assert got["sensitivity"] == 0.5 and got["specificity"] == 0.5


def test_threshold_moves_sensitivity_and_specificity():
    got = classification_metrics(Y, PROBA, classes=[0, 1], threshold=0.3)
    assert got["sensitivity"] == 1.0 and got["specificity"] == 0.5
    assert got["accuracy"] == 0.5  # accuracy uses the most probable class, not the threshold


def test_multiclass_reports_only_accuracy_and_macro_f1():
    assert classification_metric_names(2) == metric_names("classification")
    assert classification_metric_names(3) == ["accuracy", "f1_macro"]
    assert not any(METRICS[m].binary_only for m in classification_metric_names(4))
    y = np.array([0, 1, 2, 2])
    proba = np.eye(3)[[0, 1, 2, 0]] * 0.8 + 0.2 / 3
    got = classification_metrics(y, proba, classes=["a", "b", "c"])
    assert set(got) == {"accuracy", "f1_macro"}
    assert got["accuracy"] == 0.75
    # F1 per class: a (tp 1, fp 1) 2/3, b 1, c (tp 1, fn 1) 2/3.
    assert got["f1_macro"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_binary_metrics_need_both_classes():
    y = np.array([1, 1, 1])
    proba = np.column_stack([[0.2, 0.3, 0.4], [0.8, 0.7, 0.6]])
    got = classification_metrics(y, proba, classes=[0, 1])
    for name in ("auroc", "auprc", "calibration_slope", "calibration_intercept"):
        assert math.isnan(got[name]), name
    assert got["sensitivity"] == 1.0 and got["specificity"] == 0.0


@pytest.mark.parametrize(
    ("predicted", "observed", "slope"),
    [
        (0.2, 0.2, 1.0),  # calibrated
        (0.1, 0.2, math.log(4) / math.log(9)),  # overconfident: slope < 1
        (0.2, 0.5, 0.0),  # predictions carry no information
    ],
)
def test_calibration_slope_and_intercept_recover_known_values(predicted, observed, slope):
    # Two predicted values, p and 1 - p, with observed positive rates q and 1 - q: the
    # recalibration fits them exactly, slope logit(q) / logit(p), intercept 0.
    n = 100
    positives = int(round(observed * n))
    p = np.r_[np.full(n, predicted), np.full(n, 1 - predicted)]
    y = np.r_[np.arange(n) < positives, np.arange(n) >= positives].astype(int)
    got_slope, got_intercept = calibration_slope_intercept(y, p)
    assert got_slope == pytest.approx(slope, abs=1e-3)
    assert got_intercept == pytest.approx(0.0, abs=1e-3)


def test_regression_metrics_by_hand():
    y = np.array([1.0, -2.0, 0.0, 3.0])
    pred = np.array([1.4, -1.0, 1.0, -1.0])
    got = regression_metrics(y, pred)
    assert list(got) == ["mae", "rmse", "r2", "pearson_r"]  # MOSI's only when asked
    assert got["mae"] == pytest.approx((0.4 + 1 + 1 + 4) / 4)
    assert got["rmse"] == pytest.approx(np.sqrt((0.16 + 1 + 1 + 16) / 4))
    # R² = 1 - SSE / SST with SSE 18.16 and SST sum((y - 0.5)^2) = 0.25 + 6.25 + 0.25 + 6.25
    assert got["r2"] == pytest.approx(1 - 18.16 / 13.0)
    assert got["pearson_r"] == pytest.approx(np.corrcoef(y, pred)[0, 1])
    mosi = regression_metrics(y, pred, mosi=True)
    assert list(mosi) == ["mae", "rmse", "r2", "pearson_r", "acc2", "f1", "acc7"]
    # Signs on the non-zero targets (rows 0, 1, 3): true +,-,+ ; predicted +,-,-.
    assert mosi["acc2"] == pytest.approx(2 / 3)
    assert mosi["f1"] == pytest.approx(2 / 3)  # both sign classes have F1 2/3
    assert mosi["acc7"] == 0.25  # only round(1.4) == 1


def test_regression_metric_edge_cases():
    assert regression_metrics([1, 2, 3], [2, 4, 6])["pearson_r"] == pytest.approx(1.0)
    assert regression_metrics([1, 2, 3], [3, 2, 1])["pearson_r"] == pytest.approx(-1.0)
    assert math.isnan(regression_metrics([1, 1, 1], [1, 2, 3])["pearson_r"])
    assert math.isnan(regression_metrics([1, 1, 1], [1, 2, 3])["r2"])  # no variance to explain
    zero = regression_metrics([0.0, 0.0], [1.0, -1.0], mosi=True)
    assert math.isnan(zero["acc2"]) and math.isnan(zero["f1"])
    assert regression_metrics([5.0, -4.0], [3.2, -3.0], mosi=True)["acc7"] == 1.0  # clipped


@pytest.mark.parametrize(
    ("y", "problem"),
    [
        ([-3.0, 0.4, 2.6], None),
        ([-1.0, 0.2, 1.0], "within [-1, 1] (a CH-SIMS-style score)"),
        ([-3.0, 0.0, 5.0], "the target spans [-3, 5], outside MOSI's [-3, 3]"),
    ],
)
def test_mosi_metrics_need_a_minus_three_to_three_target(y, problem):
    got = mosi_target_problem(y)
    assert got is None if problem is None else problem in got


def test_bootstrap_interval_resamples_rows_with_the_given_generator():
    values = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    low, high = bootstrap_interval(np.mean, 200, np.random.RandomState(0), values)
    rng = np.random.RandomState(0)
    means = [values[rng.randint(0, 5, 5)].mean() for _ in range(200)]
    assert (low, high) == (np.quantile(means, 0.025), np.quantile(means, 0.975))
    assert low < values.mean() < high


def test_bootstrap_interval_edge_cases():
    rng = np.random.RandomState(0)
    assert bootstrap_interval(np.mean, 50, rng, np.full(6, 2.0)) == (2.0, 2.0)
    low, high = bootstrap_interval(np.mean, 0, rng, np.arange(5.0))
    assert math.isnan(low) and math.isnan(high)
    low, high = bootstrap_interval(lambda a: float("nan"), 20, rng, np.arange(5.0))
    assert math.isnan(low) and math.isnan(high)


def _accuracy(y, proba):
    return METRICS["accuracy"](y, proba)


def test_paired_difference_of_identical_models_is_zero_with_p_one():
    rng = np.random.RandomState(0)
    got = paired_difference(_accuracy, Y, PROBA, PROBA.copy(), n_boot=100, rng=rng)
    assert got == {"difference": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0,
                   "p_value_upper_bound": False, "n_boot": 100}  # fmt: skip


def test_paired_difference_of_a_model_always_better():
    perfect = np.eye(2)[Y] * 0.9 + 0.05
    wrong = perfect[:, ::-1]
    got = paired_difference(_accuracy, Y, perfect, wrong, n_boot=100, rng=np.random.RandomState(0))
    # no resample crossed 0: metrics.json stores the bound the report prints, flagged
    assert got == {"difference": 1.0, "low": 1.0, "high": 1.0, "p_value": 0.01,
                   "p_value_upper_bound": True, "n_boot": 100}  # fmt: skip
    assert format_p(got["p_value"], got["n_boot"], got["p_value_upper_bound"]) == "< 0.01"
    assert format_p(0.01, 100) == "0.010"  # the same number from a real estimate
    none = paired_difference(_accuracy, Y, perfect, wrong, n_boot=0, rng=np.random.RandomState(0))
    assert none["difference"] == 1.0
    assert all(math.isnan(none[k]) for k in ("low", "high", "p_value"))
    assert format_p(none["p_value"], 0) == "—"


def test_ties_count_half_so_a_positive_difference_is_not_p_one():
    # 20 rows; model a is right on rows 0-2 where b is wrong, equal elsewhere. A resample
    # without rows 0-2 has a difference of exactly 0 (a tie). Counting ties on both sides
    # gave p = 1; counting them half gives p = share of ties (no resample is negative).
    y = np.zeros(20, dtype=int)
    right = np.tile([0.9, 0.1], (20, 1))
    a, b = right.copy(), right.copy()
    b[:3] = [0.1, 0.9]
    resamples = list(bootstrap_resamples(20, 300, seed=0))
    got = paired_difference(_accuracy, y, a, b, n_boot=0, resamples=iter(resamples))
    ties = np.mean([not np.isin(idx, [0, 1, 2]).any() for idx in resamples])
    assert 0 < ties < 0.2
    assert got["p_value"] == pytest.approx(ties)
    assert got["difference"] == pytest.approx(0.15) and got["low"] >= 0


def test_resamples_are_reproducible_and_cluster_by_group():
    groups = np.repeat(["p1", "p2", "p3", "p4"], [1, 2, 3, 4])
    first = list(bootstrap_resamples(10, 50, seed=3, groups=groups))
    again = list(bootstrap_resamples(10, 50, seed=3, groups=groups))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    for idx in first:  # every drawn group comes with all of its rows
        drawn, counts = np.unique(groups[idx], return_counts=True)
        sizes = {"p1": 1, "p2": 2, "p3": 3, "p4": 4}
        assert all(c % sizes[g] == 0 for g, c in zip(drawn, counts, strict=True))
    assert {len(idx) for idx in first} != {10}  # resample size follows the groups drawn


def test_cluster_bootstrap_is_wider_than_the_row_bootstrap_on_grouped_data():
    # 60 patients x 5 visits; a patient's visits share their outcome (strong clustering),
    # so the 300 visits carry about as much information as 60 independent rows.
    rng = np.random.RandomState(0)
    patient = np.repeat(np.arange(60), 5)
    y = np.repeat(rng.randint(0, 2, 60), 5)
    p = np.clip(np.repeat(rng.uniform(0, 1, 60), 5) * 0.5 + y * 0.3, 0, 1)
    proba = np.column_stack([1 - p, p])
    auroc = METRICS["auroc"]
    rows = bootstrap_interval(auroc, 0, None, y, proba, resamples=bootstrap_resamples(300, 400, 0))
    clusters = bootstrap_interval(
        auroc, 0, None, y, proba, resamples=bootstrap_resamples(300, 400, 0, groups=patient)
    )
    row_width, cluster_width = rows[1] - rows[0], clusters[1] - clusters[0]
    assert cluster_width > 1.6 * row_width  # about sqrt(5) wider with 5 identical visits


def test_calibration_table_counts_rows_per_bin():
    p = np.r_[np.full(30, 0.1), np.full(10, 0.8)]
    y = np.r_[np.arange(30) < 3, np.arange(10) < 8].astype(int)
    table = calibration_table(y, p, n_bins=4)
    assert [(b["n"], b["mean_predicted"], b["observed"]) for b in table] == [
        (30, pytest.approx(0.1), pytest.approx(0.1)),
        (10, pytest.approx(0.8), pytest.approx(0.8)),
    ]
    assert sum(b["n"] for b in calibration_table(y, np.linspace(0, 1, 40), n_bins=8)) == 40


def test_auto_rule_headline_compares_auto_itself_with_the_best_single_modality():
    """With ``model_rule: auto`` the headline's numbers are auto's own out-of-fold results,
    not those of the strategy auto happened to choose when refitted."""
    from toolkit.study.metrics import bootstrap_resamples
    from toolkit.study.summary import OutOfFold, _headline, _Scorer, choose_model

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    good = np.where(y[:, None] == 1, [0.2, 0.8], [0.8, 0.2])
    poor = np.full((200, 2), 0.5)
    results = OutOfFold(
        y=y, classes=np.array([0, 1]), names=["a", "b"],
        oof={"late": good, "auto": poor}, baselines={"a only": poor}, robust={},
        contributions={}, fold_of=np.zeros(200, int),
    )  # fmt: skip
    entries = {
        name: {"accuracy": {"value": float(np.mean(out.argmax(1) == y))}}
        for name, out in results.models.items()
    }
    config = StudyConfig.from_dict(
        {"data": {"source": "make_sentiment_clips"}, "output": {"model_rule": "auto"}}
    )
    chosen = choose_model(config, entries, results, "accuracy")
    assert {k: chosen[k] for k in ("rule", "model", "kind")} == {
        "rule": "auto", "model": "auto", "kind": "auto"
    }  # fmt: skip
    scorer = _Scorer(results, 0.5)
    head = _headline(
        results, scorer, chosen, entries, primary="accuracy",
        resamples=lambda: bootstrap_resamples(200, 50, 0),
    )  # fmt: skip
    assert head["fusion"] == "auto" and head["model"] == "auto"
    assert head["difference"] == 0.0 and head["verdict"] == "does not help"


def test_cell_missingness_counts_missing_values_inside_multi_column_modalities():
    import pandas as pd

    from toolkit.study.summary import cell_missingness

    frame = pd.DataFrame(
        {"crp": [1.0, np.nan, 3.0, np.nan], "age": [50, 60, 70, 80], "note": ["a", None, "b", "c"]}
    )
    mods = [("labs", None, ["crp", "age"]), ("text", None, "note")]
    assert cell_missingness(frame, mods) == {"labs": {"crp": 0.5}}


# -- the registry's contract: every entry, without listing them -----------------------------


@pytest.mark.parametrize("name", METRICS.names())
def test_every_registered_metric_computes_its_known_answer(name):
    metric = METRICS[name]
    assert isinstance(metric, Metric) and metric.name == name
    assert metric.task in ("classification", "regression")
    y, prediction, expected = metric.example
    assert metric(y, prediction) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("name", METRICS.names())
def test_every_registered_metric_has_a_direction_and_a_display_name(name):
    metric = METRICS[name]
    assert metric.direction in ("higher", "lower", "ideal") and metric.display
    assert format(0.5, metric.format)
    if metric.direction == "ideal":
        assert metric.ideal is not None and metric.sign == 0 and not metric.ranks
    else:
        assert metric.sign in (1, -1) and metric.ranks
    level = metric.chance_level(metric.example[0])
    assert level is None or np.isfinite(level)


@pytest.mark.parametrize("name", METRICS.names())
def test_every_registered_metric_validates_as_a_primary_metric_or_says_why_not(name):
    metric = METRICS[name]
    raw = {
        "task": metric.task,
        "data": {"source": "make_sentiment_clips"},
        "evaluation": {"primary_metric": name, "mosi_metrics": metric.mosi},
    }
    if metric.ranks:
        config = StudyConfig.from_dict(raw)
        assert config.evaluation.primary_metric == name
        assert name in metric_names(metric.task, mosi=True, ranking=True)
        return
    with pytest.raises(ConfigError) as exc:
        StudyConfig.from_dict(raw)
    assert str(exc.value).startswith(
        f"evaluation.primary_metric: '{name}' has an ideal value ({metric.ideal:g}), not a "
        "better direction, so it cannot rank models; use one of ['accuracy'"
    )


def test_a_metric_of_the_other_task_is_refused_naming_the_task():
    raw = {"task": "regression", "data": {"source": "make_sentiment_clips"},
           "evaluation": {"primary_metric": "auroc"}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"expected a regression metric, one of \['mae'"):
        StudyConfig.from_dict(raw)


def test_defaults_and_chance_levels_come_from_the_registry():
    assert default_primary("classification", 2) == "auroc"
    assert default_primary("classification", 3) == "accuracy"
    assert default_primary("regression", None) == "mae"
    y = np.array([0, 0, 0, 1])
    assert METRICS["accuracy"].chance_level(y) == 0.75  # the majority class share
    assert METRICS["auprc"].chance_level(y) == 0.25  # the prevalence
    assert METRICS["brier"].chance_level(y) == pytest.approx(0.25 * 0.75)
    assert METRICS["auroc"].chance_level(y) == 0.5
    assert METRICS["f1_macro"].chance_level(y) is None
    assert METRICS["mae"].chance_level(np.array([1.0, 2, 6])) == pytest.approx(5 / 3)


def test_a_metric_added_to_the_registry_is_reported_and_valid_in_a_config(monkeypatch):
    """Adding a metric is one registry entry: the summary computes it and config
    validation accepts it as the primary metric."""
    median_ae = Metric(
        "median_ae", "regression", lambda y, p: float(np.median(np.abs(y - p))), "lower",
        "Median absolute error", example=(np.array([1.0, 2, 9]), np.array([1.0, 3, 3]), 1.0),
    )  # fmt: skip
    monkeypatch.setitem(METRICS, "median_ae", median_ae)
    got = regression_metrics(np.array([1.0, 2, 9]), np.array([1.0, 3, 3]))
    assert got["median_ae"] == 1.0
    raw = {"task": "regression", "data": {"source": "make_sentiment_clips"},
           "evaluation": {"primary_metric": "median_ae"}}  # fmt: skip
    assert StudyConfig.from_dict(raw).evaluation.primary_metric == "median_ae"
