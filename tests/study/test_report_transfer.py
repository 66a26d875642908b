"""Study reports with groups have a "Transfer across groups" section (issue 24): the
transfer check per modality and the chosen model's score per held-out group, in
metrics.json, and the same numbers in report.html."""

from __future__ import annotations

import html
import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

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


def _pseudonyms(preds: pd.DataFrame, column: str) -> pd.Series:
    """Each row's pseudonym ("patient 1", ...: the patients by their first row, as
    ``output.include_group_ids: false`` names them in metrics.json and the report)."""
    first = {g: f"patient {k}" for k, g in enumerate(pd.unique(preds[column]), start=1)}
    return preds[column].map(first)


def test_model_scores_per_patient_come_from_the_study_predictions(run):
    """The per-group scores are the study's own out-of-fold accuracy on each patient, who
    is named by pseudonym (the default, output.include_group_ids: false)."""
    entry = _transfer(run)
    summary = json.loads((run / "metrics.json").read_text())
    label = summary["chosen"]["model"]
    assert entry["model"]["label"] == label and entry["group_ids"] == "pseudonyms"
    preds = pd.read_csv(run / "predictions.csv")
    preds["patient"] = _pseudonyms(preds, "patient")
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
    per_fold = pd.Series(correct).groupby(preds["fold"]).mean()
    assert [f["score"] for f in entry["folds"]] == pytest.approx(per_fold.tolist())
    per_fold_patients = preds.groupby("fold")["patient"].nunique()
    assert [f["n_groups"] for f in entry["folds"]] == per_fold_patients.tolist()
    assert sum(f["n_groups"] for f in entry["folds"]) == N_PATIENTS


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
    assert entry["groups_metric"] == "accuracy" and entry["groups_note"] == ""
    assert (
        f"Per group, accuracy (higher is better): overall {model['pooled']:.3f}; worst group "
        f"{model['worst_group']} {model['worst']:.3f}, "
    ) in section
    for f in entry["folds"]:
        assert (
            f"<tr><td>{f['fold']}</td><td>{f['n_groups']}</td><td>{f['n_rows']}</td>"
            f"<td>{f['score']:.3f}</td></tr>"
        ) in section
    for g in entry["groups"]:  # the fold as stored (from 0), the group by its pseudonym
        assert (
            f"<tr><td>{g['group']}</td><td>{g['n_rows']}</td><td>{g['fold']}</td>"
            f"<td>{g['score']:.3f}</td></tr>"
        ) in section
    assert [g["group"] for g in entry["groups"]] == [f"patient {k}" for k in range(1, 11)]
    assert not re.search(r"\bp\d\b", json.dumps(entry) + section)  # no patient id ('p3')


def test_report_folds_are_the_folds_of_metrics_json_and_predictions_csv(run):
    """A fold number in the report is the same number in metrics.json ("folds_detail",
    "transfer") and in predictions.csv: all from 0."""
    metrics = json.loads((run / "metrics.json").read_text())
    page = (run / "report.html").read_text()
    preds = pd.read_csv(run / "predictions.csv")
    detail = metrics["folds_detail"]
    assert [f["fold"] for f in detail] == sorted(preds["fold"].unique()) == [0, 1, 2, 3]
    assert [f["fold"] for f in metrics["transfer"]["folds"]] == [0, 1, 2, 3]
    for f in detail:
        assert f"<tr><td>{f['fold']}</td><td>{f['n']}</td><td>{f['groups']}</td>" in page
        assert f["n"] == int((preds["fold"] == f["fold"]).sum())
        assert f["groups"] == preds.loc[preds["fold"] == f["fold"], "patient"].nunique()
    assert "Folds are numbered from 0 here and everywhere in the run folder" in page


@pytest.mark.parametrize(
    ("column", "name"),
    [("speaker", "speakers"), ("Patient", "patients"), ("pid", "groups"), ("site_id", "sites"),
     ("patient_id", "patients"), ("site_no", "groups"), ("clients", "clients"), (None, "groups"),
     ("PatientID", "patients"), ("family", "families"), ("mrn", "groups"), ("class", "groups")],
)  # fmt: skip
def test_groups_are_named_after_their_column(column, name):
    assert _plural(column) == name


def test_a_check_the_groups_do_not_allow_says_why():
    section = transfer_section({"transfer": {"computed": False, "reason": "class 'x' <1>"}})
    assert section == (
        "<h2>Transfer across groups</h2>\n<p>Not computed: class &#x27;x&#x27; &lt;1&gt;</p>"
    )
    assert transfer_section({}) == ""  # a study without groups has no "transfer" entry


def _few_visits_config(tmp_path) -> dict:
    """60 patients of 1-3 visits, all of one class per patient (as in the shipped
    diagnosis study): AUROC is undefined within every patient."""
    rng = np.random.default_rng(1)
    visits = rng.integers(1, 4, 60)
    patient = np.repeat(np.arange(60), visits)
    label = np.repeat(rng.integers(0, 2, 60), visits)
    frame = pd.DataFrame({
        "lab": label + 0.8 * rng.normal(size=len(patient)),
        "vital": rng.normal(size=len(patient)),
        "patient_id": [f"P{k:02d}" for k in patient],
        "label": label,
    })  # fmt: skip
    frame.to_csv(tmp_path / "visits.csv", index=False)
    config = yaml.safe_load((tmp_path / "study.yaml").read_text())
    config["data"] = {"source": "load_manifest", "params": {"csv": str(tmp_path / "visits.csv")},
                      "target": "label", "groups": "patient_id"}  # fmt: skip
    config["modalities"] = [
        {"name": "lab", "encoder": "TabularEncoder", "columns": ["lab"]},
        {"name": "vital", "encoder": "TabularEncoder", "columns": ["vital"]},
    ]
    config["evaluation"] = {**config["evaluation"], "cv": 3, "primary_metric": "auroc"}
    (tmp_path / "visits.yaml").write_text(yaml.safe_dump(config))
    return load_config(tmp_path / "visits.yaml")


@pytest.fixture(scope="module")
def few_visits(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("visits")
    _config(tmp)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "The number of unique classes")
        return run_study(_few_visits_config(tmp), tmp / "runs", progress=False)


def test_patients_of_one_class_get_brier_per_patient_and_auroc_per_fold(few_visits):
    """AUROC cannot be computed within a patient of one class: the entry says so, scores
    AUROC on each fold of held-out patients and each patient by the Brier score, all
    from the study's own predictions."""
    entry = _transfer(few_visits)
    assert entry["group_name"] == "patients" and entry["metric"] == "roc_auc"
    assert entry["groups_metric"] == "brier"
    assert entry["groups_note"].startswith(
        "AUROC is not given per group: it needs both classes within a group, and 60 of 60 "
        "patients (1-3 rows each) do not have them."
    )
    label = entry["model"]["label"]
    preds = pd.read_csv(few_visits / "predictions.csv")
    y, proba = preds["y_true"].to_numpy(), preds[f"{label}_proba"].to_numpy()
    brier = pd.Series((proba - y) ** 2).groupby(_pseudonyms(preds, "patient_id")).mean()
    scores = {g["group"]: g["score"] for g in entry["groups"]}
    assert scores == pytest.approx(brier.to_dict())
    assert entry["model"]["worst_group"] == brier.idxmax()
    assert entry["model"]["n_groups"] == 60
    per_fold = [roc_auc_score(y[preds["fold"] == k], proba[preds["fold"] == k]) for k in range(3)]
    assert [f["score"] for f in entry["folds"]] == pytest.approx(per_fold)
    assert entry["sentences"][-1].startswith(
        f"{label} on held-out patients (brier per group, lower is better): "
    )


def test_report_explains_why_per_patient_auroc_is_missing(few_visits):
    entry, section = _transfer(few_visits), _section(few_visits)
    assert "None" not in section and "<td>—</td>" not in section
    assert html.escape(entry["groups_note"]) in section
    assert "<p>Per group, brier (lower is better): overall " in section
    worst = sorted(entry["groups"], key=lambda g: -g["score"])[:20]
    rows = re.findall(r"<tr><td>(patient \d+)</td>", section)
    assert rows == [g["group"] for g in worst]  # the 20 worst, worst first
    assert "The 20 worst of 60 scored groups; metrics.json" in section
