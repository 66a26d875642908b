"""A clinician's review of the study report: fold numbers are the same in the report as in
metrics.json and predictions.csv (from 0), group identifiers are withheld unless
``output.include_group_ids`` is true, and pictures of rows only with
``output.include_images: true``; on hand-made study outputs whose answer is known."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from toolkit.encoders import TabularEncoder
from toolkit.study.config import StudyConfig
from toolkit.study.drilldown import DrillDown
from toolkit.study.engine import shown_drilldown
from toolkit.study.orchestration import FoldPlan
from toolkit.study.report import _data_section, _privacy_section
from toolkit.study.summary import OutOfFold, _folds
from toolkit.study.transfer import pseudonyms, transfer_section, transfer_summary
from toolkit.study.writing import _predictions_table

#: Six patients of 8 visits, by their record numbers, in the order of their first row; the
#: study's folds (3) hold out whole patients: fold 2 first, so a row's fold is not its
#: position.
IDS = ["MRN-0042", "MRN-0007", "MRN-0913", "MRN-0100", "MRN-0555", "MRN-0301"]
FOLD = {"MRN-0042": 2, "MRN-0007": 0, "MRN-0913": 1, "MRN-0100": 2, "MRN-0555": 0,
        "MRN-0301": 1}  # fmt: skip
GROUPS = np.repeat(IDS, 8)
Y = np.tile([0, 1], 24)


def _study():
    """(plan, out-of-fold results, summary) of a grouped study whose model is wrong on
    MRN-0913's rows 0-3 only (its accuracy 0.5, every other patient's 1.0)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"lab": Y + 0.5 * rng.normal(size=48), "vital": rng.normal(size=48)})
    plan = FoldPlan(frame=frame, y=Y, modalities=[("lab", TabularEncoder(), ["lab", "vital"])],
                    fusions={}, seed=0, n_classes=2, groups=GROUPS)  # fmt: skip
    proba = np.where(Y == 1, 0.8, 0.2)
    wrong = np.flatnonzero(GROUPS == "MRN-0913")[:4]
    proba[wrong] = 1 - proba[wrong]
    results = OutOfFold(
        y=Y, classes=np.array([0, 1]), names=["lab"], oof={"late": np.column_stack([1 - proba, proba])},
        baselines={}, robust={}, contributions={}, fold_of=np.array([FOLD[g] for g in GROUPS]),
        groups=GROUPS,
    )  # fmt: skip
    summary = {"primary_metric": "accuracy", "folds": 3, "chosen": {"model": "late"},
               "best_strategy": "late"}  # fmt: skip
    return plan, results, summary


@pytest.fixture(scope="module")
def entries():
    plan, results, summary = _study()
    return {
        shown: transfer_summary(plan, results, summary, group_name="patient_id",
                                include_group_ids=shown)
        for shown in (False, True)
    }  # fmt: skip


def _cells(section: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    row = re.search(rf"<tr><td>{re.escape(first)}</td>(.*?)</tr>", section).group(1)
    return re.findall(r"<td>(.*?)</td>", row)


# -- fold numbers ---------------------------------------------------------------------------


def test_a_fold_in_the_folds_table_is_the_fold_of_metrics_json_and_predictions_csv():
    _, results, _ = _study()
    detail = _folds(results)  # metrics.json "folds_detail"
    assert [f["fold"] for f in detail] == [0, 1, 2]
    config = StudyConfig.from_dict({"name": "s", "data": {"source": "make_clinical_cohort",
                                                          "groups": "patient_id"}})  # fmt: skip
    page = _data_section(config, {"folds_detail": detail}, 6)
    assert "Folds are numbered from 0 here and everywhere in the run folder" in page
    predictions = _predictions_table(results, "patient_id")
    for f in detail:
        assert _cells(page, str(f["fold"]))[:2] == [str(f["n"]), str(f["groups"])]
        rows = predictions[predictions["fold"] == f["fold"]]
        assert len(rows) == f["n"] == 16 and rows["patient_id"].nunique() == f["groups"] == 2


@pytest.mark.parametrize("shown", [False, True])
def test_transfer_folds_in_the_report_are_those_of_metrics_json(entries, shown):
    entry = json.loads(json.dumps(entries[shown]))  # as metrics.json stores it
    section = transfer_section({"transfer": entry})
    # per fold: fold 1 holds MRN-0913 (4 of 8 wrong) and MRN-0301: 12 of 16 right
    assert [(f["fold"], f["n_groups"], f["n_rows"], f["score"]) for f in entry["folds"]] == [
        (0, 2, 16, 1.0), (1, 2, 16, 0.75), (2, 2, 16, 1.0)]  # fmt: skip
    assert "folds are numbered from 0, as in metrics.json and predictions.csv" in section
    for f in entry["folds"]:
        assert f"<tr><td>{f['fold']}</td><td>2</td><td>16</td><td>{f['score']:.3f}</td></tr>" in (
            section
        )
    # per group: the fold shown is the group's fold in metrics.json and in predictions.csv
    names = {raw: raw for raw in IDS} if shown else pseudonyms(GROUPS, "patients")
    for raw, name in names.items():
        (stored,) = [g["fold"] for g in entry["groups"] if g["group"] == name]
        assert stored == FOLD[raw]
        assert _cells(section, name)[:2] == ["8", str(FOLD[raw])]


def test_progress_lines_and_fold_files_name_the_fold_as_stored(tmp_path, monkeypatch):
    """Folds finishing out of order (2, then 0): each progress line names the fold by its
    stored number, the one of folds/fold_<k>.json and of predictions.csv."""
    from toolkit.study import engine

    lines = []
    finished = [SimpleNamespace(fold=k, test_index=[k], oof={}, baselines={}) for k in (2, 0)]
    monkeypatch.setattr(engine, "log", lambda progress, line: lines.append(line))
    monkeypatch.setattr(engine, "fold_results", lambda *a, **k: contextlib.nullcontext(finished))
    monkeypatch.setattr(engine.OutOfFold, "empty",
                        classmethod(lambda cls, *a: SimpleNamespace(add=lambda result: None)))  # fmt: skip
    job = SimpleNamespace(
        config=SimpleNamespace(evaluation=SimpleNamespace(n_jobs=1)), client=None, progress=False,
        study=SimpleNamespace(splits=[None] * 3, classes=None),
    )  # fmt: skip
    engine._run_folds(tmp_path, job, SimpleNamespace(), None)
    assert lines == ["fold 2 of folds 0-2 done (1 of 3 finished)",
                     "fold 0 of folds 0-2 done (2 of 3 finished)"]  # fmt: skip
    for k in (0, 2):
        assert json.loads((tmp_path / "folds" / f"fold_{k}.json").read_text())["fold"] == k


# -- group identifiers ----------------------------------------------------------------------


def test_pseudonyms_follow_the_first_row_of_each_group():
    groups = ["b7", "a1", "b7", "c3", "a1", 5]
    assert pseudonyms(groups, "patients") == {"b7": "patient 1", "a1": "patient 2",
                                              "c3": "patient 3", 5: "patient 4"}  # fmt: skip
    assert pseudonyms(np.array([10, 3, 10]), "groups") == {10: "group 1", 3: "group 2"}


def test_by_default_metrics_json_and_the_report_name_patients_by_pseudonym(entries):
    entry = entries[False]
    stored = json.dumps(entry)
    section = transfer_section({"transfer": entry})
    for raw in IDS:
        assert raw not in stored and raw not in section
    assert entry["group_ids"] == "pseudonyms"
    assert [g["group"] for g in entry["groups"]] == [f"patient {k}" for k in range(1, 7)]
    # MRN-0913, the third patient in the data, is the worst: accuracy 0.5
    assert (entry["model"]["worst_group"], entry["model"]["worst"]) == ("patient 3", 0.5)
    assert "(worst: patient 3)" in entry["sentences"][-1]
    assert _cells(section, "patient 3") == ["8", "1", "0.500"]
    assert "Patients are named by pseudonym, numbered in the order of their first row" in section
    assert "(output.include_group_ids: false)" in section


def test_with_include_group_ids_the_identifiers_and_the_same_numbers(entries):
    hidden, shown = entries[False], entries[True]
    assert shown["group_ids"] == "given"
    assert (shown["model"]["worst_group"], shown["model"]["worst"]) == ("MRN-0913", 0.5)
    section = transfer_section({"transfer": shown})
    assert _cells(section, "MRN-0913") == ["8", "1", "0.500"]
    assert "(output.include_group_ids: true; set it to false" in section
    # only the names differ: every number is the same
    names = pseudonyms(GROUPS, "patients")
    by_name = {g["group"]: g for g in hidden["groups"]}
    for g in shown["groups"]:
        assert {**g, "group": names[g["group"]]} == by_name[names[g["group"]]]
    assert hidden["modalities"] == shown["modalities"] and hidden["folds"] == shown["folds"]


def test_a_refusal_names_the_group_by_its_pseudonym():
    plan, results, summary = _study()
    plan = dataclasses.replace(plan, groups=np.full(48, "MRN-0042"))
    entry = transfer_summary(plan, results, summary, group_name="patient_id")
    assert entry["computed"] is False and "MRN-0042" not in entry["reason"]
    assert entry["reason"].startswith(
        "groups holds one group only ('patient 1'); holding out groups needs at least 2 (better "
        "5 or more)"
    )
    # a number: quoted as it is, and no other 5 in the sentence is replaced
    plan = dataclasses.replace(plan, groups=np.full(48, 5))
    entry = transfer_summary(plan, results, summary, group_name="patient_id")
    assert entry["reason"].startswith(
        "groups holds one group only ('patient 1'); holding out groups needs at least 2 (better "
        "5 or more)"
    )
    # a class in one numeric group (the estimators' refusal): renamed too
    from toolkit.study.transfer import _withhold_ids, pseudonyms

    ids = np.repeat([10004235, 10009628, 10018081], 20)
    said = _withhold_ids(
        "groups: all 20 rows of class 1 are in one group (10004235); give groups",
        pseudonyms(ids, "patients"),
    )
    assert "10004235" not in said and "in one group ('patient 1')" in said and "all 20" in said


@pytest.mark.parametrize("shown", [False, True])
def test_the_privacy_note_says_how_groups_are_named(shown):
    config = StudyConfig.from_dict({
        "name": "s", "data": {"source": "make_clinical_cohort", "groups": "patient_id"},
        "output": {"include_group_ids": shown},
    })  # fmt: skip
    note = _privacy_section(config, [], {"lab": "table"}, grouped_by="patient_id")
    if shown:
        assert note == (
            "Group identifiers (the &#x27;patient_id&#x27; column) are shown in this report and "
            "metrics.json (output.include_group_ids: true; set it to false to show pseudonyms)."
        )
    else:
        assert note.startswith(
            "Group identifiers (the &#x27;patient_id&#x27; column) are withheld from this "
            "report and metrics.json (output.include_group_ids: false): groups are named "
            "&#x27;patient 1&#x27;, &#x27;patient 2&#x27;, ..."
        )
    assert _privacy_section(config, [], {"lab": "table"}) == ""  # a study without groups


# -- pictures of rows -----------------------------------------------------------------------


def _scan_and_lab_drill() -> DrillDown:
    import shap

    values = np.zeros((1, 8))
    values[0, 3] = 0.3
    display = np.empty(1, dtype=object)
    display[0] = np.ones((4, 4, 4), dtype=np.float32)
    scan = shap.Explanation(values=values, base_values=np.array([0.1]), data=np.zeros((1, 8)),
                            display_data=display, feature_names=[f"b{i}" for i in range(8)])  # fmt: skip
    lab = shap.Explanation(values=np.array([[0.2, -0.1]]), base_values=np.array([0.1]),
                           data=np.zeros((1, 2)), feature_names=["crp", "wbc"])  # fmt: skip
    return DrillDown("late", 2, [7], ["most confident correct"], ["1"], None,
                     {"scan": scan, "lab": lab}, {"scan": "scan", "lab": "table"})  # fmt: skip


@pytest.mark.parametrize(("output", "pictures"), [({}, False), ({"include_images": False}, False),
                                                  ({"include_images": True}, True)])  # fmt: skip
def test_pictures_of_rows_only_with_include_images_true(output, pictures):
    config = StudyConfig.from_dict({"name": "s", "data": {"source": "make_clinical_cohort"},
                                    "output": output})  # fmt: skip
    assert config.output.include_images is pictures
    assert config.output.include_group_ids is False and config.output.include_text is False
    drill = shown_drilldown(_scan_and_lab_drill(), include_images=config.output.include_images)
    assert sorted(drill.explanations) == (["lab", "scan"] if pictures else ["lab"])
    full = _scan_and_lab_drill()
    voice = dataclasses.replace(full, kinds={**full.kinds, "scan": "audio"})  # a clip's waveform
    kept = shown_drilldown(voice, include_images=config.output.include_images).explanations
    assert sorted(kept) == (["lab", "scan"] if pictures else ["lab"])
    note = _privacy_section(config, [], {"scan": "scan", "lab": "table"})
    if pictures:
        assert note.startswith("Pictures of rows (&#x27;scan&#x27;) are shown in the drill-down")
    else:
        assert note.startswith("Pictures of rows (&#x27;scan&#x27;) are withheld "
                               "(output.include_images: false)")  # fmt: skip
