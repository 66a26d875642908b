"""``mmtk run --quick`` (toolkit/study/quick.py): a test-sized run of any config, marked
"quick run — not for reporting" in the report, metrics.json and the run folder's name; the
shipped synthetic configs run with it. The quick diagnosis run also checks end to end that
the saved model is the one the headline describes, the labs in a shipped config's report,
the overall prevalence line and the image switch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from toolkit.cli import main
from toolkit.study import load_config
from toolkit.study.quick import QUICK_NOTE, QUICK_ROWS, quick_raw, quick_rows

ROOT = Path(__file__).resolve().parents[2]


def _quick(tmp_path, config, *overrides) -> Path:
    code = main(["run", str(ROOT / "pipelines" / config), "--quick", "--quiet",
                 "--out", str(tmp_path), *sum((["--set", o] for o in overrides), [])])  # fmt: skip
    assert code == 0
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    return folder


@pytest.fixture(scope="module")
def diagnosis(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick_diagnosis")
    return _quick(out, "diagnosis.yaml", "data.params.informative=[clinical]",
                  "output.include_images=false")  # fmt: skip


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    return _quick(tmp_path_factory.mktemp("quick_sentiment"), "sentiment.yaml")


def test_quick_caps_sizes_and_keeps_what_is_already_small():
    raw = {
        "data": {"source": "make_clinical_cohort", "params": {"n_samples": 300, "scan_size": 8}},
        "modalities": [{"name": "note", "encoder": "TextEncoder", "columns": "note",
                        "params": {"n_components": 32}},
                       {"name": "scan", "encoder": "ScanEncoder", "columns": "scan",
                        "params": {"spatial_size": [24, 24, 6]}}],
        "fusion": ["late", {"name": "gated", "params": {"max_epochs": 5}}],
        "evaluation": {"cv": 5, "bootstrap": 1000},
    }  # fmt: skip
    got = quick_raw(raw)
    assert got["data"]["params"] == {"n_samples": QUICK_ROWS, "scan_size": 8, "xray_size": 16}
    assert got["modalities"][0]["params"]["n_components"] == 8
    # TextEncoder's max_length=None (the model's own limit) is capped too
    assert got["modalities"][0]["params"]["max_length"] == 32
    assert got["modalities"][1]["params"]["spatial_size"] == [12, 12, 6]
    assert got["fusion"] == [{"name": "late", "params": {"cv": 2}},
                             {"name": "gated", "params": {"max_epochs": 5, "patience": 2}}]  # fmt: skip
    assert (got["evaluation"]["cv"], got["evaluation"]["bootstrap"]) == (2, 10)
    assert got["output"] == {"drilldown_rows": 1, "drilldown_max_parts": 4}
    assert quick_raw(got) == got and raw["evaluation"]["cv"] == 5  # idempotent, no side effect


def test_quick_rows_keep_every_class():
    y = np.r_[np.zeros(990, int), np.ones(10, int)]
    keep = quick_rows(y, classification=True, seed=0)
    assert np.all(np.diff(keep) > 0) and len(keep) == 79 + 4  # its share of 80, and 4
    assert (y[keep] == 1).sum() == 4  # its share rounds to 1: at least 4 are kept
    assert len(quick_rows(np.arange(50.0), classification=False, seed=0)) == 50


def test_quick_config_is_marked_and_written_resolved(tmp_path):
    config = load_config(ROOT / "pipelines" / "diagnosis.yaml", ["quick=true"])
    assert config.quick and config.evaluation.cv == 2 and config.data.params["n_samples"] == 80
    assert config.to_dict()["quick"] is True


def test_a_quick_run_is_marked_everywhere(diagnosis, sentiment):
    for run in (diagnosis, sentiment):
        assert run.name.split("-")[1] == "quick"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["quick"] == QUICK_NOTE and metrics["folds"] == 2
        page = (run / "report.html").read_text()
        assert "<b>QUICK RUN — NOT FOR REPORTING.</b>" in page
        assert "QUICK RUN — NOT FOR REPORTING." in (run / "model_card.md").read_text()
        assert "quick: true" in (run / "config.resolved.yaml").read_text()


def test_the_saved_model_is_the_one_the_headline_describes(diagnosis):
    """(The known answer of the rule, clinical-only saved when only the table informs, is
    tests/study/test_model_rule.py: 10 quick resamples cannot support it.)"""
    import toolkit

    metrics = json.loads((diagnosis / "metrics.json").read_text())
    chosen, head = metrics["chosen"], metrics["headline"]
    assert chosen["rule"] == "prefer_simpler" and chosen["candidates"] == 6
    saved = toolkit.load(diagnosis / "model")
    if head["verdict"] == "helps":  # a fusion is saved only when its gain's interval is > 0
        assert chosen["kind"] == "fusion" and head["model"] == chosen["model"]
        assert type(saved.fusion_).__name__.lower().startswith(chosen["model"])
    else:
        assert chosen["model"] == head["against"] == metrics["best_single_modality"]
        assert saved.modality_names_ == [chosen["model"].removesuffix(" only")]
    page = (diagnosis / "report.html").read_text()
    assert f"Chosen model (rule prefer_simpler): {chosen['model']} ({chosen['kind']})." in page
    assert f"Model selection: {chosen['model']} was chosen" in page


def test_the_shipped_diagnosis_report_drills_into_the_labs(diagnosis):
    metrics = json.loads((diagnosis / "metrics.json").read_text())
    labs = metrics["labs"]["modalities"]["clinical"]
    assert labs["groups"] == {"vitals": ["heart_rate", "temperature", "sbp"]}
    assert set(labs["players"]) == {"vitals", "age", "sex", "crp", "wbc", "lactate"}
    assert sum(labs["ranked_first"].values()) == pytest.approx(1.0)
    page = (diagnosis / "report.html").read_text()
    assert "<h2>Inside the tables: each column's share" in page
    assert "vitals <small>(heart_rate, temperature, sbp)</small>" in page
    prev = metrics["prevalence"]
    assert f"Prevalence (all {prev['n']} rows): {prev['prevalence']:.1%}" in page


def test_images_withheld_and_text_named_by_its_modality(diagnosis, sentiment):
    assert not list(diagnosis.glob("drilldown_scan_*.png"))
    page = (diagnosis / "report.html").read_text()
    assert "Pictures of rows (&#x27;scan&#x27;) are withheld (output.include_images: false)" in page
    shown = (sentiment / "report.html").read_text()
    assert "Raw text of &#x27;text&#x27; is not included in this report" in shown
    assert "note text" not in shown
    # sentiment.yaml's rows are generated and it asks for them (output.include_images: true)
    assert "Pictures of rows (&#x27;audio&#x27;, &#x27;face&#x27;) are shown" in shown
    drilled = json.loads((sentiment / "metrics.json").read_text())["drilldown"]["records"]
    assert "face" in {r["modality"] for r in drilled}
    assert list(sentiment.glob("drilldown_audio_*.png"))  # a clip's waveform: drawn on request
