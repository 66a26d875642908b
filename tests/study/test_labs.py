"""The report's lab drill-down (toolkit/study/labs.py, report_labs.py): a cohort where one
lab decides the label ranks that lab first in >= 90% of rows, also inside a column group;
groups keep the Owen values adding up to the modality's value; the section renders the
numbers of metrics.json."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolkit import MultimodalClassifier, TabularEncoder
from toolkit.explain import explain_features
from toolkit.study.labs import lab_summary, tabular_modalities
from toolkit.study.report_labs import labs_section

LABS = ["crp", "wbc", "age", "sbp", "sodium"]


@pytest.fixture(scope="module")
def cohort():
    """Five labs, only crp decides the label; a second table of noise."""
    rng = np.random.default_rng(0)
    n = 240
    frame = pd.DataFrame({c: rng.normal(size=n) for c in [*LABS, "u1", "u2"]})
    y = (frame["crp"] + 0.2 * rng.normal(size=n) > 0).astype(int).to_numpy()
    mods = [("labs", TabularEncoder(), LABS), ("other", TabularEncoder(), ["u1", "u2"])]
    model = MultimodalClassifier(mods, fusion="late", random_state=0).fit(frame[:160], y[:160])
    return model, frame[160:]


def test_the_informative_lab_ranks_first_in_nine_rows_of_ten(cohort):
    model, rows = cohort
    stats = lab_summary(explain_features(model, rows, "labs"))
    assert stats["players"] == LABS and stats["n_rows"] == 80
    assert stats["ranking"][0] == "crp"
    assert stats["ranked_first"]["crp"] >= 0.9
    assert sum(stats["ranked_first"].values()) == pytest.approx(1.0)
    assert sum(stats["share"].values()) == pytest.approx(1.0)


def test_a_column_group_is_one_player_and_the_values_still_add_up(cohort):
    model, rows = cohort
    plain = explain_features(model, rows, "labs")
    grouped = explain_features(
        model, rows, "labs", groups={"inflammation": ["crp", "wbc"], "vitals": ["sbp"]}
    )
    assert list(grouped.feature_names) == ["inflammation", "vitals", "age", "sodium"]
    assert grouped.data[0, 0] == (rows["crp"].iloc[0], rows["wbc"].iloc[0])
    # both are Owen values nested under the same modality value
    np.testing.assert_allclose(grouped.values.sum(axis=1), plain.values.sum(axis=1), atol=1e-9)
    stats = lab_summary(grouped)
    assert stats["ranking"][0] == "inflammation" and stats["ranked_first"]["inflammation"] >= 0.9
    with pytest.raises(ValueError, match="column 'crp' is in two groups"):
        explain_features(model, rows, "labs", groups={"a": ["crp"], "b": ["crp", "wbc"]})
    with pytest.raises(ValueError, match=r"has 5 players .* group more columns"):
        explain_features(model, rows, "labs", max_features=4, groups={"v": ["sbp"]})


def test_tables_are_found_by_their_encoder_and_the_section_shows_the_numbers(cohort):
    model, rows = cohort
    assert tabular_modalities(model.modalities) == ["labs", "other"]
    stats = lab_summary(
        explain_features(model, rows, "labs", groups={"inflammation": ["crp", "wbc"]})
    )
    labs = {
        "model": "late", "fold": 1, "n_rows": 80,
        "modalities": {"labs": {**stats, "groups": {"inflammation": ["crp", "wbc"]}}},
        "rows": [{"row": 7, "modality": "labs", "modality_value": 0.25,
                  "top_parts": [{"part": "inflammation", "value": 0.2}]}],
        "skipped": {"admission": "it has 12 columns"},
    }  # fmt: skip
    page = labs_section({"labs": labs})
    assert "<h2>Inside the tables: each column's share (late fusion, fold 1)</h2>" in page
    assert "inflammation <small>(crp, wbc)</small>" in page
    first = stats["ranked_first"]["inflammation"]
    assert f"<td>{first:.0%}</td>" in page
    assert "inflammation: +0.2000" in page and "Not drilled: admission (it has 12 columns)" in page
    assert labs_section({"labs": {}}) == ""
    # the saved model, a table alone, gets its own tables after the explained strategy's
    saved = {**labs, "model": "labs only", "rows": [], "skipped": {}}
    page = labs_section({"labs": {**labs, "saved": saved}})
    assert page.index("(late fusion, fold 1)") < page.index("<h3>The saved model: labs only</h3>")
    alone = labs_section({"labs": {"saved": saved}})
    assert "(labs only, the saved model, fold 1)</h2>" in alone


def test_run_labs_explains_the_saved_table_alone_or_the_strategy(cohort):
    """``"labs only"`` (the saved model when a table alone wins) is refitted on the fold's
    training rows with the table only; a strategy with every modality. Only the rows the
    drill-down shows are listed."""
    from types import SimpleNamespace

    from toolkit.fusion import LateFusion
    from toolkit.study.labs import run_labs
    from toolkit.study.orchestration import FoldPlan

    model, _ = cohort
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({c: rng.normal(size=120) for c in [*LABS, "u1", "u2"]})
    y = (frame["crp"] > 0).astype(int).to_numpy()
    plan = FoldPlan(frame=frame, y=y, modalities=model.modalities,
                    fusions={"late": LateFusion(random_state=0)}, seed=0, n_classes=2)  # fmt: skip
    proba = np.column_stack([1 - y, y]).astype(float)
    results = SimpleNamespace(models={"late": proba, "labs only": proba},
                              mask=np.ones((120, 2), dtype=bool))  # fmt: skip
    splits = [(np.arange(60, 120), np.arange(60)), (np.arange(60), np.arange(60, 120))]
    single = run_labs(plan, "labs only", results, splits, column_groups={}, shown_rows=[70, 3])
    assert single["model"] == "labs only" and single["fold"] == 1 and single["n_rows"] == 60
    assert list(single["modalities"]) == ["labs"]  # the noise table is not in that model
    assert single["modalities"]["labs"]["ranking"][0] == "crp"
    assert [r["row"] for r in single["rows"]] == [70]  # row 3 is not in the last fold
    fused = run_labs(plan, "late", results, splits, column_groups={"other": {"u": ["u1", "u2"]}})
    assert list(fused["modalities"]) == ["labs", "other"]
    assert fused["modalities"]["other"]["players"] == ["u"]
    assert run_labs(plan, "u1 only", results, splits, column_groups={}) == {}


def test_a_drilled_row_adds_its_presence_and_a_negligible_table_is_called_so():
    # A row's modality value is its presence plus its columns (the Shapley value in
    # contributions.csv), and the table says which part is presence; a reviewer found the
    # value without presence (+0.5781 against +0.5095 in contributions.csv).
    import shap

    from toolkit.study.labs import _row_records

    exp = shap.Explanation(values=np.array([[0.3, -0.1], [0.0, 0.2]]),
                           base_values=np.zeros(2), feature_names=["crp", "sex"])  # fmt: skip
    exp.presence_values = np.array([-0.07, 0.01])
    (record,) = _row_records(exp, "clinical", [0], [289], None)
    assert record["modality_value"] == pytest.approx(0.13) and record["presence_value"] == -0.07
    stats = lab_summary(exp)
    labs = {"model": "late", "fold": 2, "n_rows": 2, "rows": [record], "skipped": {},
            "modalities": {"clinical": {**stats, "groups": {}}}}  # fmt: skip
    page = labs_section({"labs": labs})
    assert "<th>of which presence</th>" in page and "<td>+0.1300</td><td>-0.0700</td>" in page
    assert "Too small to rank" not in page
    tiny = shap.Explanation(values=np.full((2, 2), 0.001), base_values=np.zeros(2),
                            feature_names=["wbc", "vitals"])  # fmt: skip
    labs["modalities"] = {"clinical": {**lab_summary(tiny), "groups": {}}}
    assert "Too small to rank: the columns carry 0.0020 in all on average" in (
        labs_section({"labs": labs})
    )
