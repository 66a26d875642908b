"""Study reports with groups have a "Transfer across groups" section (issue 24): the
transfer check per modality and the chosen model's score per held-out group, in
metrics.json, and the same numbers in report.html."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from toolkit.study import load_config, run_study
from toolkit.study.transfer import _plural, transfer_section

N_PATIENTS, PER_PATIENT = 10, 24
VOICE = [f"v{i}" for i in range(24)]


def _frame(seed: int = 0) -> pd.DataFrame:
    """``voice`` identifies the patient and shows the label through a template of that
    patient's own; ``lab`` shows it the same way in every patient."""
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(N_PATIENTS), PER_PATIENT)
    label = rng.integers(0, 2, len(patient))
    signature = 2.0 * rng.normal(size=(N_PATIENTS, len(VOICE)))
    own_way = rng.normal(size=(N_PATIENTS, 2, len(VOICE)))
    voice = signature[patient] + own_way[patient, label]
    voice = voice + 0.3 * rng.normal(size=voice.shape)
    frame = pd.DataFrame(voice, columns=VOICE)
    frame["lab"] = label + 0.9 * rng.normal(size=len(patient))
    frame["patient"] = [f"p{k}" for k in patient]
    frame["label"] = label
    return frame


def _config(tmp_path) -> dict:
    csv = tmp_path / "data.csv"
    _frame().to_csv(csv, index=False)
    config = {
        "name": "transfer",
        "seed": 0,
        "task": "classification",
        "data": {"source": "load_manifest", "params": {"csv": str(csv)}, "target": "label",
                 "groups": "patient"},
        "modalities": [
            {"name": "voice", "encoder": "TabularEncoder", "columns": VOICE},
            {"name": "lab", "encoder": "TabularEncoder", "columns": ["lab"]},
        ],
        "fusion": ["early"],
        "evaluation": {"cv": 4, "bootstrap": 0, "robustness": False, "baselines": True,
                       "primary_metric": "accuracy"},
        "explanation": {"enabled": False},
        "output": {"save_model": False},
    }  # fmt: skip
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transfer")
    return run_study(_config(tmp), tmp / "runs", progress=False)


def _transfer(run) -> dict:
    return json.loads((run / "metrics.json").read_text())["transfer"]


def _section(run) -> str:
    page = (run / "report.html").read_text()
    start = page.index("<h2>Transfer across groups</h2>")
    return page[start : page.find("<h2>", start + 1)]


def test_metrics_json_flags_the_patient_specific_modality(run):
    entry = _transfer(run)
    assert entry["computed"] is True
    assert entry["metric"] == "accuracy" and entry["note"] == ""
    assert entry["group_name"] == "patients" and entry["group_column"] == "patient"
    assert entry["n_groups"] == N_PATIENTS
    assert entry["n_splits"] == {"within": 4, "across": 4}
    assert entry["flagged"] == ["voice"]
    by = {m["modality"]: m for m in entry["modalities"]}
    assert by["voice"]["within"] - by["voice"]["across"] > 0.2
    assert by["voice"]["identifies_groups"] and not by["lab"]["identifies_groups"]
    assert by["lab"]["status"] == "transfers"
    assert entry["sentences"][0].startswith("voice: ")
    assert "within patients" in entry["sentences"][0]


def test_model_scores_per_patient_come_from_the_study_predictions(run):
    """The per-group scores are the study's own out-of-fold accuracy on each patient."""
    entry = _transfer(run)
    summary = json.loads((run / "metrics.json").read_text())
    label = summary["chosen"]["model"]
    assert entry["model"]["label"] == label
    preds = pd.read_csv(run / "predictions.csv")
    proba = preds[f"{label}_proba"].to_numpy()
    correct = (proba >= 0.5).astype(int) == preds["y_true"].to_numpy()
    per = pd.Series(correct).groupby(preds["patient"]).mean()
    scores = {g["group"]: g["score"] for g in entry["groups"]}
    assert set(scores) == set(per.index)
    for group, value in per.items():
        assert scores[group] == pytest.approx(value)
    assert entry["model"]["pooled"] == pytest.approx(correct.mean())
    assert entry["model"]["worst"] == pytest.approx(per.min())
    assert summary["strategies"].get(label, summary["baselines"].get(label))["accuracy"][
        "value"
    ] == pytest.approx(entry["model"]["pooled"])
    folds = {g["group"]: g["fold"] for g in entry["groups"]}
    fold_of = preds.groupby("patient")["fold"].first()
    assert all(folds[g] == fold_of[g] for g in fold_of.index)


def test_report_shows_the_numbers_of_metrics_json(run):
    entry, section = _transfer(run), _section(run)
    for m in entry["modalities"]:
        row = re.search(rf"<tr><td>{m['modality']}</td>(.*?)</tr>", section).group(1)
        cells = re.findall(r"<td>(.*?)</td>", row)
        assert cells[0] == str(m["n_rows"])
        assert cells[1] == f"{m['within']:.3f}"
        assert cells[2].startswith(f"{m['across']:.3f} <small>[{m['across_low']:.3f}, ")
        assert cells[3].startswith(f"{m['gap']:+.3f} <small>[{m['gap_low']:+.3f}, ")
        assert cells[4] == f"{m['group_id']:.3f} (chance {m['group_id_chance']:.3f})"
        assert ("<b>flagged</b>" in cells[5]) == m["flagged"]
    for sentence in entry["sentences"]:
        assert f"<li>{html.escape(sentence)}</li>" in section
    model = entry["model"]
    assert f"Overall {model['pooled']:.3f}; worst group {model['worst_group']} " in section
    for g in entry["groups"]:
        assert (
            f"<tr><td>{g['group']}</td><td>{g['n_rows']}</td><td>{g['fold'] + 1}</td>"
            f"<td>{g['score']:.3f}</td></tr>"
        ) in section


@pytest.mark.parametrize(
    ("column", "name"),
    [("speaker", "speakers"), ("Patient", "patients"), ("pid", "groups"), ("site_id", "groups"),
     ("clients", "groups"), (None, "groups")],
)  # fmt: skip
def test_groups_are_named_after_their_column(column, name):
    assert _plural(column) == name


def test_a_check_the_groups_do_not_allow_says_why():
    section = transfer_section({"transfer": {"computed": False, "reason": "class 'x' <1>"}})
    assert section == (
        "<h2>Transfer across groups</h2>\n<p>Not computed: class &#x27;x&#x27; &lt;1&gt;</p>"
    )
    assert transfer_section({}) == ""  # a study without groups has no "transfer" entry
