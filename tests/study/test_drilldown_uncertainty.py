"""The study report's drill-down shows each part's uncertainty and ranks resolved parts
first; its scan figure cuts through the top-ranked block (issue 27, items 1 and 3), on a
hand-made drill-down whose answer is known."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import shap

from toolkit.explain import plot_scan_parts
from toolkit.study.drilldown import DrillDown, summarize_drilldown
from toolkit.study.report import _drilldown_section

LABELS = [f"z{i}y{j}x{k}" for i in range(4) for j in range(4) for k in range(4)]


def _scan_drill():
    """One row, 64 blocks of an 8^3 volume: block 21 (z1y1x1) is resolved at +0.30, block
    50 (z3y0x2) larger (+0.45) but with an interval that includes 0, the rest 0."""
    values, errors = np.zeros((1, 64)), np.zeros((1, 64))
    values[0, 21], errors[0, 21] = 0.30, 0.02
    values[0, 50], errors[0, 50] = 0.45, 0.40
    volume = np.zeros((8, 8, 8), dtype=np.float32)
    volume[2:4, 2:4, 2:4] = 1.0  # the lesion lies in block z1y1x1
    display = np.empty(1, dtype=object)
    display[0] = volume
    explanation = shap.Explanation(
        values=values, base_values=np.array([0.1]), data=np.zeros((1, 64)),
        display_data=display, feature_names=LABELS, error_std=errors,
    )  # fmt: skip
    explanation.resolved = np.abs(values) > 3.18 * errors  # t with 3 degrees of freedom
    explanation.exact = np.array([False])
    explanation.encoder_calls = np.array([504])
    drill = DrillDown("late", 2, [7], ["most confident correct"], ["1"], None,
                      {"scan": explanation}, {"scan": "scan"})  # fmt: skip
    return drill, explanation


def test_resolved_parts_rank_first_with_their_errors_in_the_report():
    drill, _ = _scan_drill()
    summary = summarize_drilldown(drill, include_text=False, max_parts=8, top=3)
    record = summary["records"][0]
    assert record["exact"] is False and record["n_resolved"] == 1 and record["n_parts"] == 64
    first, second = record["top_parts"][:2]
    assert (first["part"], first["resolved"], first["error_std"]) == ("z1y1x1", True, 0.02)
    assert (second["part"], second["resolved"]) == ("z3y0x2", False)  # larger, but noise
    page = _drilldown_section(
        SimpleNamespace(explanation=SimpleNamespace(removal="missing")),
        {"drilldown": summary},
        [],
    )
    assert "z1y1x1: +0.3000 (s.e. 0.0200), z3y0x2: +0.4500 (s.e. 0.4000) <b>?</b>" in page
    assert "<td>1 of 64</td>" in page and "interval that includes 0" in page


def test_scan_slices_pass_through_the_top_block(tmp_path):
    _, explanation = _scan_drill()
    fig = plot_scan_parts(explanation, 0)
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles == ["axis 0, slice 2", "axis 1, slice 2", "axis 2, slice 2"]  # z1y1x1: 2-3
    assert "top block z1y1x1" in fig.texts[0].get_text()
    assert plot_scan_parts(explanation, 0, tmp_path / "scan.png").stat().st_size > 3000


def _section(summary) -> str:
    config = SimpleNamespace(explanation=SimpleNamespace(removal="missing"))
    return _drilldown_section(config, {"drilldown": summary}, [])


def test_a_negligible_part_with_a_tiny_error_never_tops_the_parts_that_matter():
    # Block 5 is "resolved" (+0.0001, s.e. 0) but carries 0.02% of the row's |value|; the
    # large block 50 (+0.45, s.e. 0.40) may be noise. Neither is resolved and material, so
    # the row says so and ranks by |value|: block 50 first, the negligible block marked.
    drill, explanation = _scan_drill()
    explanation.values[0, 21], explanation.error_std[0, 21] = 0.0, 0.0
    explanation.values[0, 5] = 0.0001
    explanation.resolved = np.abs(explanation.values) > 3.18 * explanation.error_std
    assert explanation.resolved[0, 5]
    record = summarize_drilldown(drill, include_text=False, max_parts=8, top=2)["records"][0]
    assert [p["part"] for p in record["top_parts"]] == ["z3y0x2", LABELS[5]]
    assert [p["material"] for p in record["top_parts"]] == [True, False]
    assert record["n_resolved"] == 0 and record["too_small"] is False
    page = _section(summarize_drilldown(drill, include_text=False, max_parts=8, top=2))
    assert (
        "<i>no part resolved above noise</i>; z3y0x2: +0.4500 (s.e. 0.4000) <b>?</b>, "
        "z0y1x1: +0.0001 (s.e. 0.0000) <i>(negligible)</i>" in page
    )
    assert "<td>0 of 64</td>" in page


def test_a_row_whose_parts_carry_almost_nothing_is_too_small_to_drill():
    drill, explanation = _scan_drill()
    explanation.values[0, 21], explanation.values[0, 50] = 0.003, -0.001
    explanation.error_std[0, 21], explanation.error_std[0, 50] = 0.0001, 0.0001
    explanation.resolved = np.abs(explanation.values) > 3.18 * explanation.error_std
    record = summarize_drilldown(drill, include_text=False, max_parts=8, top=2)["records"][0]
    assert record["too_small"] is True and record["abs_total"] == 0.004
    assert record["n_resolved"] == 2  # resolved and material, but the whole row is tiny
    page = _section(summarize_drilldown(drill, include_text=False, max_parts=8, top=2))
    assert "<i>too small to drill: the parts carry 0.0040 in all (&lt; 0.01)</i>; z1y1x1" in page


def test_the_methods_name_how_each_default_masker_removes_a_part():
    # The report's Methods read the maskers (a reviewer found 'set to 0 (scan blocks)' and
    # 'mid-grey (image cells)' in the text while the maskers blur and take the mean).
    from toolkit import AudioEncoder, ImageEncoder, ScanEncoder, TextEncoder
    from toolkit.explain import ImageGrid
    from toolkit.study.drilldown import masking_phrase

    phrases = [masking_phrase(e.masker()) for e in
               (TextEncoder(), ImageEncoder(), AudioEncoder(), ScanEncoder())]  # fmt: skip
    assert phrases == [
        "clauses are removed",
        "masked image cells take the item's mean",
        "masked time segments take noise at the clip's noise floor",
        "masked scan blocks take a blur of the item itself",
    ]
    assert masking_phrase(ImageGrid(fill=0.5)) == "masked image cells take the constant 0.5"


def test_parts_that_share_the_value_equally_are_called_presence_not_content():
    # Five clauses at exactly +0.0202 each (a reviewer's row): the model responds to the
    # note being there; ranking them would present presence as content.
    values = np.full((1, 5), 0.0202)
    explanation = shap.Explanation(values=values, base_values=np.array([0.3]),
                                   data=np.array([["a", "b", "c", "d", "e"]], dtype=object),
                                   display_data=np.array(["a. b. c. d. e."], dtype=object),
                                   feature_names=[[f"clause {k}" for k in range(5)]])  # fmt: skip
    explanation.resolved = values != 0
    drill = DrillDown("late", 2, [4], ["most confident incorrect"], ["1"], None,
                      {"note": explanation}, {"note": "text"})  # fmt: skip
    summary = summarize_drilldown(drill, include_text=False, max_parts=8)
    record = summary["records"][0]
    assert record["equal_split"] is True and record["n_resolved"] == 5
    assert "every part has the same value: the model responds to the item being there" in (
        _section(summary)
    )
    explanation.values[0, 2] = 0.05
    assert summarize_drilldown(drill, include_text=False, max_parts=8)["records"][0][
        "equal_split"] is False  # fmt: skip
