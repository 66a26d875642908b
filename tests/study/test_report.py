"""The study report (toolkit/study/report.py): the Methods text follows the config."""

from __future__ import annotations

import copy

import pytest

from toolkit.study.report import methods_text, write_report

ENTRY = {"value": 0.8, "low": 0.7, "high": 0.9}
POINT = {"value": 0.8, "low": float("nan"), "high": float("nan")}

CLASSIFICATION = {
    "name": "diag",
    "seed": 7,
    "task": "classification",
    "data": {"source": "make_clinical_cohort", "params": {}, "target": "y", "groups": "pid"},
    "evaluation": {"cv": 3, "bootstrap": 300, "threshold": 0.4, "primary_metric": "auroc",
                   "robustness": True, "baselines": True},
    "explanation": {"enabled": True, "removal": "missing"},
    "output": {"report": True, "save_model": False, "include_text": False},
}  # fmt: skip
CLASSIFICATION_SUMMARY = {
    "n_samples": 120,
    "primary_metric": "auroc",
    "best_strategy": "late",
    "best_single_modality": "scan only",
    "strategies": {s: {"accuracy": ENTRY, "auroc": ENTRY, "sensitivity": ENTRY}
                   for s in ("early", "late")},
    "baselines": {"scan only": {"accuracy": ENTRY, "auroc": ENTRY, "sensitivity": ENTRY}},
    "comparisons": {"late": {"against": "scan only", "metric": "auroc", "difference": 0.1,
                             "low": 0.0, "high": 0.2, "p_value": 0.04}},
    "mean_abs_contribution": {"late": {"scan": 0.3, "note": 0.1}},
    "contribution_ranking": ["scan", "note"],
}  # fmt: skip

REGRESSION = {
    "name": "mosi",
    "seed": 0,
    "task": "regression",
    "data": {"source": "load_mmsa_features", "params": {}, "target": None, "groups": None},
    "evaluation": {"cv": 5, "bootstrap": 0, "threshold": 0.5, "robustness": False,
                   "baselines": False},
    "explanation": {"enabled": False, "removal": "missing"},
    "output": {"report": True, "save_model": False, "include_text": False},
}  # fmt: skip
REGRESSION_SUMMARY = {
    "n_samples": 200,
    "primary_metric": "mae",
    "best_strategy": "early",
    "best_single_modality": None,
    "strategies": {"early": {"mae": POINT, "pearson_r": POINT}},
    "baselines": {},
    "comparisons": {},
    "mean_abs_contribution": {},
    "contribution_ranking": [],
}


def test_methods_of_a_grouped_classification_study_with_everything_on():
    text = methods_text(CLASSIFICATION, CLASSIFICATION_SUMMARY, grouped_by="pid")
    for claim in (
        "<code>make_clinical_cohort</code> (120 rows); task: binary classification.",
        "3-fold cross-validation (stratified group K-fold, shuffled with seed 7; grouped by pid",
        "Strategies: early, late fusion, compared with one late-fusion model per single modality",
        "Metrics: accuracy, auroc, sensitivity, with percentile bootstrap 95% intervals "
        "(300 resamples",
        "sensitivity and specificity at threshold 0.4",
        "the highest auroc",
        "best single modality (scan only) by a paired bootstrap of the difference in auroc",
        "Robustness: each metric recomputed with each modality removed",
        "Explanation: exact Shapley values over modalities (removal: missing)",
        "the empty coalition's value is the training prior",
        "(SYNTHETIC data generated with known ground truth); licence:",
    ):
        assert claim in text, claim
    for absent in ("not grouped", "unstratified", "not evaluated", "not computed", "background"):
        assert absent not in text, absent


def test_methods_of_an_ungrouped_regression_study_with_everything_off():
    text = methods_text(REGRESSION, REGRESSION_SUMMARY, grouped_by=None)
    for claim in (
        "<code>load_mmsa_features</code> (200 rows); task: regression.",
        "5-fold cross-validation (K-fold (unstratified), shuffled with seed 0; not grouped)",
        "Strategies: early fusion; no single-modality baselines were fitted",
        "Metrics: mae, pearson_r, without intervals (evaluation.bootstrap: 0)",
        "the lowest mae",
        "Missing-modality robustness was not evaluated (evaluation.robustness: false).",
        "Modality contributions were not computed (explanation.enabled: false).",
        "(real data); licence:",
    ):
        assert claim in text, claim
    for absent in ("bootstrap 95%", "stratified group", "grouped by", "compared with",
                   "Shapley", "threshold", "Robustness:"):  # fmt: skip
        assert absent not in text, absent


def test_methods_name_background_removal_and_regression_groups():
    config = copy.deepcopy(CLASSIFICATION)
    config["explanation"]["removal"] = "background"
    text = methods_text(config, CLASSIFICATION_SUMMARY, grouped_by="pid")
    assert "(removal: background)" in text
    assert "takes its embeddings from up to 100 training rows of the fold" in text
    assert "training prior;" not in text
    config = copy.deepcopy(REGRESSION)
    text = methods_text(config, REGRESSION_SUMMARY, grouped_by="subject_id")
    assert "group K-fold (unstratified), not shuffled; grouped by subject_id" in text


@pytest.mark.parametrize(
    ("config", "summary", "present", "absent"),
    [
        (CLASSIFICATION, CLASSIFICATION_SUMMARY,
         ["95% bootstrap intervals", "<h2>Each strategy against", "<h2>Modality contributions"], []),
        (REGRESSION, REGRESSION_SUMMARY, ["<h2>Metrics (out-of-fold)</h2>"],
         ["95% bootstrap intervals", "<h2>Each strategy against", "<h2>Modality contributions"]),
    ],
)  # fmt: skip
def test_report_sections_follow_the_config(tmp_path, config, summary, present, absent):
    page = write_report(tmp_path, config, summary, figures={}, grouped_by="pid").read_text()
    assert f"<h2>Methods</h2><p>{methods_text(config, summary, grouped_by='pid')}</p>" in page
    for text in present:
        assert text in page, text
    for text in absent:
        assert text not in page, text


def test_without_bootstrap_the_comparison_says_so_and_prints_no_nan():
    from toolkit.study.report import _comparison_section

    config = copy.deepcopy(CLASSIFICATION)
    config["evaluation"]["bootstrap"] = 0
    text = methods_text(config, CLASSIFICATION_SUMMARY, grouped_by="pid")
    assert "by the difference in auroc (no bootstrap, so no interval or p-value)" in text
    assert "by (no bootstrap" not in text
    nan = float("nan")
    summary = {
        "comparisons": {
            "late": {"against": "scan only", "difference": 0.1, "low": nan, "high": nan,
                     "p_value": nan}
        }
    }  # fmt: skip
    html_table = _comparison_section(summary)
    assert "+0.100" in html_table and "nan" not in html_table
