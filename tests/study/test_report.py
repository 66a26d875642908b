"""The study report (toolkit/study/report.py): the Methods text follows the config; the
headline, data, limitations, robustness, calibration, conformal and TRIPOD+AI sections
state the numbers of the summary."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from toolkit.study.config import StudyConfig
from toolkit.study.disclosure import headline_text, limitations
from toolkit.study.report import methods_text, write_report

ENTRY = {"value": 0.8, "low": 0.7, "high": 0.9}
POINT = {"value": 0.8, "low": float("nan"), "high": float("nan")}

CLASSIFICATION = StudyConfig.from_dict({
    "name": "diag",
    "seed": 7,
    "task": "classification",
    "data": {"source": "make_clinical_cohort", "params": {}, "target": "y", "groups": "pid"},
    "evaluation": {"cv": 3, "bootstrap": 300, "threshold": 0.4, "primary_metric": "auroc",
                   "robustness": True, "baselines": True,
                   "conformal": {"enabled": True, "confidence": 0.9, "calibration": 0.25}},
    "explanation": {"enabled": True, "removal": "missing"},
    "output": {"report": True, "save_model": False, "include_text": False,
               "model_rule": "best_mean_primary"},
})  # fmt: skip
CLASSIFICATION_SUMMARY = {
    "n_samples": 120,
    "folds": 3,
    "primary_metric": "auroc",
    "best_strategy": "late",
    "best_single_modality": "scan only",
    "bootstrap": {"n_boot": 300, "unit": "group", "seed": 7, "method": "percentile"},
    "chosen": {"rule": "best_mean_primary", "model": "late", "kind": "fusion"},
    "headline": {"chosen": "late", "fusion": "late", "against": "scan only", "metric": "auroc",
                 "difference": 0.1, "low": 0.0, "high": 0.2, "p_value": 0.04, "n_boot": 300,
                 "verdict": "does not help"},
    "explained_model": "late",
    "strategies": {s: {"accuracy": ENTRY, "auroc": ENTRY, "sensitivity": ENTRY}
                   for s in ("early", "late")},
    "baselines": {"scan only": {"accuracy": ENTRY, "auroc": ENTRY, "sensitivity": ENTRY}},
    "comparisons": {"late": {"against": "scan only", "metric": "auroc", "difference": 0.1,
                             "low": 0.0, "high": 0.2, "p_value": 0.04, "n_boot": 300},
                    "early": {"against": "scan only", "metric": "auroc", "difference": 0.15,
                              "low": 0.05, "high": 0.25, "p_value": 0.0, "n_boot": 300}},
    "robustness_intervals": {"late": {"scan": {"metric": "auroc", "value": 0.61, "low": 0.5,
                                               "high": 0.7, "drop": 0.19, "drop_low": 0.1,
                                               "drop_high": 0.3}}},
    "calibration": {"late": [{"low": 0.0, "high": 0.4, "n": 70, "mean_predicted": 0.2,
                              "observed": 0.18},
                             {"low": 0.4, "high": 1.0, "n": 50, "mean_predicted": 0.7,
                              "observed": 0.74}]},
    "conformal": {"confidence": 0.9, "strategies": {"late": {
        "note+scan": {"n": 90, "coverage": 0.911, "mean_size": 1.2},
        "scan": {"n": 30, "coverage": 0.8, "mean_size": 1.5},
        "all": {"n": 120, "coverage": 0.883, "mean_size": 1.275}}}},
    "folds_detail": [{"fold": k, "n": 40, "groups": 20, "class_counts": {"0": 30, "1": 10},
                      "prevalence": 0.25} for k in range(3)],
    "missingness": {"missing_share": {"scan": 0.0, "note": 0.25},
                    "patterns": {"note+scan": 90, "scan": 30}},
    "mean_abs_contribution": {"late": {"scan": 0.3, "note": 0.1}},
    "contribution_ranking": ["scan", "note"],
}  # fmt: skip

REGRESSION = StudyConfig.from_dict({
    "name": "mosi",
    "seed": 0,
    "task": "regression",
    "data": {"source": "load_mmsa_features", "params": {}, "target": None, "groups": None},
    "evaluation": {"cv": 5, "bootstrap": 0, "threshold": 0.5, "robustness": False,
                   "baselines": False,
                   "conformal": {"enabled": False, "confidence": 0.9, "calibration": 0.25}},
    "explanation": {"enabled": False, "removal": "missing"},
    "output": {"report": True, "save_model": False, "include_text": False,
               "model_rule": "fixed:early"},
})  # fmt: skip
REGRESSION_SUMMARY = {
    "n_samples": 200,
    "folds": 5,
    "primary_metric": "mae",
    "best_strategy": "early",
    "best_single_modality": None,
    "chosen": {"rule": "fixed:early", "model": "early", "kind": "fusion"},
    "headline": {"chosen": "early", "against": None, "verdict": "no comparison"},
    "explained_model": "early",
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
        "(300 resamples of groups: each resample draws as many groups as there are, with "
        "replacement, and takes all rows of each drawn group (cluster bootstrap)",
        "Model rule (output.model_rule: best_mean_primary): the reported and saved model is the "
        "model (fusion strategy or single modality) with the best out-of-fold auroc; here late.",
        "Conformal: split-conformal prediction sets at 90% confidence (crepes)",
        "Mondrian by modality-availability pattern",
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
        "Model rule (output.model_rule: fixed:early): the reported and saved model is the "
        "strategy named by the rule (early); here early.",
        "the lowest mae",
        "Missing-modality robustness was not evaluated (evaluation.robustness: false).",
        "Modality contributions were not computed (explanation.enabled: false).",
        "(real data); licence:",
    ):
        assert claim in text, claim
    for absent in ("bootstrap 95%", "stratified group", "grouped by", "compared with",
                   "Shapley", "threshold", "Robustness:", "Conformal"):  # fmt: skip
        assert absent not in text, absent


def test_methods_name_background_removal_and_regression_groups():
    config = copy.deepcopy(CLASSIFICATION)
    config.explanation.removal = "background"
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
         ["95% bootstrap intervals", "<h2>Each strategy against", "<h2>Modality contributions",
          "<h2>Missing-modality robustness", "<h2>Calibration", "<h2>Conformal coverage",
          "<h2>Limitations</h2>", "<h2>TRIPOD+AI checklist</h2>", "SYNTHETIC DATA."], []),
        (REGRESSION, REGRESSION_SUMMARY,
         ["<h2>Metrics (out-of-fold)</h2>", "<h2>Limitations</h2>", "<h2>TRIPOD+AI checklist</h2>"],
         ["95% bootstrap intervals", "<h2>Each strategy against", "<h2>Modality contributions",
          "<h2>Missing-modality robustness", "<h2>Calibration", "<h2>Conformal coverage",
          "SYNTHETIC DATA."]),
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
    config.evaluation.bootstrap = 0
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


def _page(tmp_path, config=CLASSIFICATION, summary=CLASSIFICATION_SUMMARY):
    return write_report(
        tmp_path, config, summary, figures={}, grouped_by="pid", n_groups=60
    ).read_text()


def test_report_states_its_numbers(tmp_path):
    page = _page(tmp_path)
    # comparisons: p at its resolution
    assert (
        "<td>early</td><td>scan only</td><td>+0.150</td><td>[+0.050, +0.250]</td><td>&lt; 0.0033</td>"
        in page
    )
    assert "<td>0.040</td>" in page
    # robustness with intervals and the paired drop
    assert ("<td>late</td><td>scan</td><td>0.800 <small>[0.700, 0.900]</small></td>"
            "<td>0.610 <small>[0.500, 0.700]</small></td>"
            "<td>0.190 <small>[0.100, 0.300]</small></td>") in page  # fmt: skip
    # calibration bins with their counts
    assert "<td>0.000–0.400</td><td>70</td><td>0.200</td><td>0.180</td>" in page
    # conformal coverage per pattern, the one far off flagged
    assert "<td>late</td><td>note+scan</td><td>90</td><td>0.911</td><td>1.200</td>" in page
    assert "<td>late</td><td>scan</td><td>30</td><td>0.800 ⚠</td>" in page
    # prevalence per fold and missingness
    assert "<tr><td>1</td><td>40</td><td>20</td><td>30</td><td>10</td><td>25.0%</td></tr>" in page
    assert "<td>note</td><td>25.0%</td><td>30</td>" in page
    # data card front matter
    assert "<td>synthetic</td><td>yes</td>" in page and "<td>licence</td><td>Apache-2.0" in page
    # the contribution table puts each share beside the modality on its own
    assert "<td>note</td><td>0.1000</td><td>25.0%</td><td>—</td>" in page


@pytest.mark.parametrize(
    ("verdict", "low", "high", "expected"),
    [
        ("helps", 0.02, 0.2, "Fusion helps: the interval lies on the higher-is-better side of 0."),
        ("does not help", -0.05, 0.2, "Fusion does not help here: the interval includes 0, so "
                                      "late is not shown to beat scan only."),
        ("worse", -0.2, -0.05, "Fusion does not help: it is worse than the best single modality"),
    ],
)  # fmt: skip
def test_headline_says_whether_fusion_helps(tmp_path, verdict, low, high, expected):
    summary = copy.deepcopy(CLASSIFICATION_SUMMARY)
    summary["headline"].update(verdict=verdict, low=low, high=high)
    text = headline_text(summary)
    assert text.startswith("Chosen model (rule best_mean_primary): late (fusion). late vs scan "
                           f"only: auroc difference +0.100 [95% CI {low:+.3f}, {high:+.3f}].")  # fmt: skip
    assert expected in text
    css = "good" if verdict == "helps" else "warn"
    assert f'<p class="{css}">{text}' in _page(tmp_path, summary=summary).replace("&#x27;", "'")


def test_headline_when_a_single_modality_is_chosen():
    summary = copy.deepcopy(CLASSIFICATION_SUMMARY)
    summary["chosen"] = {
        "rule": "best_mean_primary",
        "model": "scan only",
        "kind": "single modality",
    }
    text = headline_text(summary)
    assert "Chosen model (rule best_mean_primary): scan only (single modality)." in text
    assert "The best single modality scored at least as well as every fusion strategy." in text


def test_limitations_follow_config_and_data():
    items = limitations(CLASSIFICATION, CLASSIFICATION_SUMMARY, n_groups=60)
    text = " ".join(items)
    assert items[0].startswith("The data are SYNTHETIC")
    assert "Small sample (120 rows, 60 groups, smallest class 30 rows)" in text
    assert "Validation is internal only" in text
    assert "Robustness removes a modality from the test rows only" in text
    assert "marked missing (removal: missing)" in text and "not its usefulness" in text
    assert "Fusion was not shown to beat the best single modality" in text
    assert "From the data card: SYNTHETIC." in text
    assert "treated as independent" not in text  # grouped
    ungrouped = " ".join(limitations(REGRESSION, REGRESSION_SUMMARY, n_groups=None))
    assert "Rows were treated as independent (no data.groups)" in ungrouped
    assert "SYNTHETIC" not in ungrouped and "Shapley" not in ungrouped


def test_a_large_share_of_a_useless_modality_is_called_out():
    summary = copy.deepcopy(CLASSIFICATION_SUMMARY)
    summary["mean_abs_contribution"] = {"late": {"labs": 0.49, "admission": 0.51}}
    summary["baselines"] = {
        "labs only": {"auroc": {"value": 0.493, "low": 0.43, "high": 0.55}},
        "admission only": {"auroc": {"value": 0.628, "low": 0.57, "high": 0.69}},
    }
    text = " ".join(limitations(CLASSIFICATION, summary, n_groups=60))
    assert ("labs takes 49% of the Shapley share while labs-only auroc is 0.493 [0.430, 0.550]: "
            "a share measures how much the output moves with a modality, not whether that "
            "helps predict.") in text  # fmt: skip
    assert "admission takes" not in text
    # a small share is called out too (two noise modalities at 7.5% each went unflagged),
    # and an interval wholly below chance is named as such
    summary["mean_abs_contribution"] = {"late": {"labs": 0.075, "admission": 0.925}}
    summary["baselines"]["labs only"]["auroc"] = {"value": 0.34, "low": 0.13, "high": 0.48}
    text = " ".join(limitations(CLASSIFICATION, summary, n_groups=60))
    assert ("labs-only auroc is 0.340 [0.130, 0.480], below chance with its interval: on its "
            "own the labs model predicts the held-out rows the wrong way round") in text
    assert "yet it takes 8% of the Shapley share." in text  # fmt: skip


def test_a_saved_single_modality_is_named_beside_the_explanations_of_a_fusion():
    # A reviewer found every explanation section describing early fusion while the study
    # saved "scan only", with no sentence saying so.
    from toolkit.study.report import explained_note

    note = explained_note({"chosen": {"model": "scan only"}, "explained_model": "early"})
    assert note.startswith("<p><b>Not the saved model:</b> this study saves scan only")
    assert "are of early fusion, the best strategy" in note
    assert explained_note({"chosen": {"model": "late"}, "explained_model": "late"}) == ""


def test_pairs_are_split_into_synergy_and_redundancy_by_sign():
    from toolkit.study.summary import _synergy

    # rows x 2 modalities x 2: diagonal = main effects, off-diagonal = half the interaction
    values = np.zeros((4, 2, 2))
    values[:, 0, 0], values[:, 1, 1] = [0.2, 0.2, -0.1, 0.3], [0.1, 0.1, -0.2, 0.1]
    half = np.array([-0.05, -0.02, 0.03, 0.04])  # against, against, against, with
    values[:, 0, 1] = values[:, 1, 0] = half
    assert _synergy(values, 0, 1) == 0.25  # one row of four pushes further: mostly redundancy
    assert _synergy(np.zeros((4, 2, 2, 3)), 0, 1) is None  # multi-class: no single direction
