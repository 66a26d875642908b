"""The model rule a clinician would choose (output.model_rule: prefer_simpler, the default):
the best single modality is saved unless a fusion's paired gain over it has a 95% interval
above 0; the headline describes the saved model; Limitations disclose the selection among
k out-of-fold estimates. Known answers on out-of-fold outputs built by hand."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.study.config import StudyConfig
from toolkit.study.disclosure import headline_text, limitations
from toolkit.study.summary import OutOfFold

N = 300


def _proba(score):
    p = 1 / (1 + np.exp(-score))
    return np.column_stack([1 - p, p])


def _results(fusion_signal: float) -> OutOfFold:
    """Only the clinical table is informative; the fusions see it plus noise from the note
    (``fusion_signal`` 0) or see the label far better (``fusion_signal`` > 0)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, N)
    clinical = 2.0 * (y - 0.5) + rng.normal(size=N)
    note = rng.normal(size=N)
    fused = clinical + 0.05 * rng.normal(size=N) + fusion_signal * (y - 0.5)
    oof = {"early": _proba(fused), "late": _proba(fused + 0.05 * note)}
    return OutOfFold(
        y=y, classes=np.array([0, 1]), names=["clinical", "note"], oof=oof,
        baselines={"clinical only": _proba(clinical), "note only": _proba(note)},
        robust={}, contributions={}, fold_of=np.arange(N) % 3,
    )  # fmt: skip


def _config(bootstrap=200, **output) -> StudyConfig:
    return StudyConfig.from_dict({
        "data": {"source": "make_clinical_cohort"}, "fusion": ["early", "late"],
        "evaluation": {"bootstrap": bootstrap, "primary_metric": "auroc"}, "output": output,
        "explanation": {"enabled": False},
    })  # fmt: skip


def summarize(config: StudyConfig, results: OutOfFold) -> dict:
    """The parts of the study summary the rule, the headline and Limitations read (the
    primary metric only, so the test stays fast)."""
    from functools import partial

    from toolkit.study.metrics import METRICS, bootstrap_resamples
    from toolkit.study.summary import _best, _comparisons, _headline, _Scorer, choose_model

    scorer, primary = _Scorer(results, 0.5), "auroc"
    boot = {"primary": primary, "resamples": partial(
        bootstrap_resamples, N, config.evaluation.bootstrap, config.seed, None)}  # fmt: skip
    entries = {
        k: {primary: {"value": METRICS[primary](results.y, v)}} for k, v in results.models.items()
    }
    single = _best(list(results.baselines), entries, primary)
    comparisons = _comparisons(results, scorer, single, **boot)
    chosen = choose_model(config, entries, results, primary, comparisons)
    return {
        "primary_metric": primary, "n_samples": N, "chosen": chosen, "comparisons": comparisons,
        "headline": _headline(results, scorer, chosen, entries, **boot),
        "baselines": {k: entries[k] for k in results.baselines},
        "strategies": {k: entries[k] for k in results.oof}, "mean_abs_contribution": {},
    }  # fmt: skip


def test_only_the_clinical_table_informative_saves_the_clinical_only_model():
    summary = summarize(_config(), _results(0.0))
    chosen, head = summary["chosen"], summary["headline"]
    assert chosen["rule"] == "prefer_simpler"
    assert (chosen["model"], chosen["kind"], chosen["candidates"]) == (
        "clinical only", "single modality", 4,
    )  # fmt: skip
    assert head["verdict"] == "does not help" and head["against"] == "clinical only"
    text = headline_text(summary)
    assert "Chosen model (rule prefer_simpler): clinical only (single modality)." in text
    assert "The simpler model (clinical only) is the one saved." in text
    notes = limitations(_config(), summary)
    assert any(
        "the reported auroc is the best of 2 single-modality out-of-fold estimates" in t
        and "no nested cross-validation" in t
        for t in notes
    ), notes


def test_a_fusion_whose_gain_excludes_zero_is_saved():
    summary = summarize(_config(), _results(3.0))
    chosen, head = summary["chosen"], summary["headline"]
    assert chosen["kind"] == "fusion" and head["verdict"] == "helps"
    assert head["model"] == chosen["model"]  # the headline describes the saved model
    assert summary["comparisons"][chosen["model"]]["low"] > 0
    assert chosen["reason"] == "its gain over clinical only has a 95% interval above 0"
    assert "Fusion helps" in headline_text(summary)


def test_best_mean_primary_keeps_the_old_choice_and_says_what_the_simpler_rule_saves():
    summary = summarize(_config(model_rule="best_mean_primary"), _results(0.0))
    chosen = summary["chosen"]
    assert chosen["kind"] == "fusion" and summary["headline"]["verdict"] == "does not help"
    text = headline_text(summary)
    assert f"The saved model is nevertheless {chosen['model']} (rule best_mean_primary)" in text
    assert "the rule prefer_simpler would save clinical only" in text
    notes = " ".join(limitations(_config(model_rule="best_mean_primary"), summary))
    assert "the reported auroc is the best of 4 out-of-fold estimates" in notes


@pytest.mark.parametrize(
    ("output", "bootstrap", "expected", "note"),
    [
        ({}, 0, "clinical only", True),  # no interval: no gain is shown
        ({"model_rule": "fixed:late"}, 200, "late", False),  # no selection to disclose
    ],
)
def test_without_an_interval_or_with_a_fixed_rule(output, bootstrap, expected, note):
    config = _config(bootstrap, **output)
    summary = summarize(config, _results(3.0))
    assert summary["chosen"]["model"] == expected
    assert any(t.startswith("Model selection:") for t in limitations(config, summary)) is note


def test_overall_prevalence_is_one_entry_of_the_summary():
    from toolkit.study.summary import _prevalence

    results = _results(0.0)
    positives = int(results.y.sum())
    assert _prevalence(results) == {
        "n": N, "class_counts": {"0": N - positives, "1": positives},
        "class_shares": {"0": pytest.approx(1 - positives / N), "1": pytest.approx(positives / N)},
        "positive_class": "1", "prevalence": pytest.approx(positives / N),
    }  # fmt: skip


def test_a_study_where_only_the_table_informs_saves_and_reports_the_table_alone(tmp_path):
    """End to end: labs decide the label, a second table is noise; the study saves the
    labs-only model, says so in the headline and drills into its labs (crp first)."""
    import json

    import pandas as pd
    import yaml

    import toolkit
    from toolkit.study import load_config, run_study

    rng = np.random.default_rng(1)
    n = 160
    frame = pd.DataFrame({c: rng.normal(size=n) for c in ["crp", "age", "sbp", "u1", "u2"]})
    frame["label"] = (frame["crp"] + 0.2 * rng.normal(size=n) > 0).astype(int)
    frame["patient"] = np.arange(n) // 2
    frame.to_csv(tmp_path / "data.csv", index=False)
    config = {
        "name": "tables", "data": {"source": "load_manifest", "params": {"csv": "data.csv"},
                                   "target": "label", "groups": "patient"},
        "modalities": [{"name": "labs", "encoder": "TabularEncoder", "columns": ["crp", "age", "sbp"]},
                       {"name": "noise", "encoder": "TabularEncoder", "columns": ["u1", "u2"]}],
        "fusion": ["late"],
        "evaluation": {"cv": 2, "bootstrap": 100, "robustness": False},
        "output": {"intervals": False, "interactions": False, "drilldown_rows": 1},
    }  # fmt: skip
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    run = run_study(load_config(tmp_path / "study.yaml"), tmp_path / "runs", progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["chosen"]["model"] == "labs only"
    assert metrics["headline"]["verdict"] in ("does not help", "worse")
    assert toolkit.load(run / "model").modality_names_ == ["labs"]
    saved = metrics["labs"]["saved"]
    assert saved["model"] == "labs only" and saved["modalities"]["labs"]["ranking"][0] == "crp"
    assert saved["modalities"]["labs"]["ranked_first"]["crp"] >= 0.9
    page = (run / "report.html").read_text()
    assert "Chosen model (rule prefer_simpler): labs only (single modality)." in page
    assert "<h3>The saved model: labs only</h3>" in page
    explained = metrics["explained_model"]
    assert f"<b>Not the saved model:</b> this study saves labs only (see the headline); the " \
        f"explanations in this report (contributions, their intervals, interactions, " \
        f"drill-downs) are of {explained} fusion" in page
