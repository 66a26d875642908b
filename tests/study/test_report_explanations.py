"""Study reports show pairwise modality interactions, contribution intervals and the
drill-down (issue 17), on tiny synthetic studies with known answers."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from toolkit.study import load_config, run_study
from toolkit.study.config import ConfigError
from toolkit.study.drilldown import pick_rows

#: The word that decides the label of the text study.
GOOD, BAD = "splendid", "dreadful"
FILLER = ["the", "visit", "was", "today", "and", "staff", "noted", "it", "overall", "really"]


def _config(tmp_path, frame, modalities, fusion, removal="missing", **output) -> dict:
    """A study config over ``frame`` written as a manifest CSV."""
    csv = tmp_path / "data.csv"
    frame.to_csv(csv, index=False)
    config = {
        "name": "explain",
        "seed": 0,
        "task": "classification",
        "data": {"source": "load_manifest", "params": {"csv": str(csv)}, "target": "label",
                 "groups": "patient"},
        "modalities": modalities,
        "fusion": fusion,
        "evaluation": {"cv": 3, "bootstrap": 200, "robustness": False, "baselines": False},
        "explanation": {"enabled": True, "removal": removal},
        "output": {"save_model": False, **output},
    }  # fmt: skip
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


def _xor_frame(n=180, seed=0) -> pd.DataFrame:
    """label = sign(x) XOR sign(z); u is noise; two rows per patient."""
    rng = np.random.default_rng(seed)
    sa, sb = np.tile([1, 1, -1, -1], n // 4), np.tile([1, -1, 1, -1], n // 4)
    return pd.DataFrame({
        "x": sa * (1 + 0.3 * rng.random(n)),
        "z": sb * (1 + 0.3 * rng.random(n)),
        "u": rng.normal(size=n),
        "patient": np.repeat(np.arange(n // 2), 2),
        "label": (sa * sb < 0).astype(int),
    })  # fmt: skip


def _text_frame(n=240, seed=0) -> pd.DataFrame:
    """Half the notes hold one deciding word (GOOD -> 1, BAD -> 0) at a random place among
    six filler words; the others hold seven fillers and a coin-flip label (so the fillers
    carry nothing). The lab value is noise."""
    rng = np.random.default_rng(seed)
    label, decisive = rng.integers(0, 2, n), np.tile([True, False], n // 2)
    notes = []
    for y, has in zip(label, decisive, strict=True):
        words = list(rng.choice(FILLER, size=6 if has else 7))
        if has:
            words.insert(int(rng.integers(0, 7)), GOOD if y else BAD)
        notes.append(", ".join(words))  # one clause (a drill-down part) per word
    return pd.DataFrame({"note": notes, "lab": rng.normal(size=n),
                         "patient": np.arange(n) // 3, "label": label})  # fmt: skip


XOR_MODALITIES = [
    {"name": "a", "encoder": "TabularEncoder", "columns": ["x"]},
    {"name": "b", "encoder": "TabularEncoder", "columns": ["z"]},
    {"name": "noise", "encoder": "TabularEncoder", "columns": ["u"]},
]
TEXT_MODALITIES = [
    {"name": "note", "encoder": "TextEncoder", "columns": "note", "params": {"n_components": 10}},
    {"name": "lab", "encoder": "TabularEncoder", "columns": ["lab"]},
]
#: A fusion that learns XOR in a few seconds (a linear head cannot).
LOWRANK = [{"name": "lowrank", "params": {"max_epochs": 40, "patience": 10}}]


@pytest.fixture(scope="module")
def xor_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("xor")
    return run_study(_config(tmp, _xor_frame(), XOR_MODALITIES, LOWRANK), tmp / "runs",
                     progress=False)  # fmt: skip


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory):
    runs = {}
    for shown in (False, True):
        tmp = tmp_path_factory.mktemp(f"text{int(shown)}")
        config = _config(tmp, _text_frame(), TEXT_MODALITIES, ["late"], include_text=shown,
                         drilldown_rows=3)  # fmt: skip
        runs[shown] = run_study(config, tmp / "runs", progress=False)
    return runs


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


def _page(run):
    return (run / "report.html").read_text()


def _section(page: str, title: str) -> str:
    start = page.index(title)
    end = page.find("<h2>", start + 1)
    return page[start:end]


def test_xor_puts_the_interaction_mass_on_its_pair(xor_run):
    """Neither a nor b alone says anything about an XOR label: the a x b pair carries most
    of the mass. Missing removal goes through the head's learned missing-modality path,
    which is not exactly the label's marginal: seed 0 gave the pair 55% and each noise pair
    13% (background removal gives the pair > 90%, tests/explain/test_interactions.py, but
    costs 100 background rows per coalition)."""
    inter = _metrics(xor_run)["interactions"]
    assert inter["model"] == "lowrank"
    top = inter["pairs"][0]
    assert top["modalities"] == ["a", "b"]
    assert top["share"] > 0.45
    assert inter["interaction_share"] > 0.6
    others = [p["share"] for p in inter["pairs"][1:]]
    assert max(others) < top["share"] / 3
    assert inter["main_effects"]["noise"]["share"] < 0.1
    # the report's table prints these numbers, in this order, and the heatmap exists
    table = _section(_page(xor_run), "Modality interactions (lowrank fusion)")
    assert f"a × b</td><td>pair</td><td>{top['mean_abs_interaction']:.4f}</td>" in table
    assert f"<td>{top['share']:.1%}</td>" in table
    assert table.index("a × b") < table.index("a × noise")
    csv = pd.read_csv(xor_run / "interactions.csv")
    pair = csv[(csv.kind == "pair") & (csv.modality_a == "a") & (csv.modality_b == "b")]
    assert pair["mean_abs"].item() == pytest.approx(top["mean_abs_interaction"], rel=1e-12)
    assert 0 <= top["synergy"] <= 1 and pair["synergy_rows"].item() == top["synergy"]
    assert f"<td>{top['synergy']:.0%} / {1 - top['synergy']:.0%}</td>" in table
    assert (xor_run / "interactions.png").stat().st_size > 5000


def test_interactions_add_up_to_the_contributions(xor_run):
    """Each modality's mean |Shapley value| is at most its mean |main effect| plus half its
    pairs' mean |interaction| (triangle inequality on phi_a = main_a + sum_b I_ab / 2)."""
    summary = _metrics(xor_run)
    inter, mean_abs = summary["interactions"], summary["mean_abs_contribution"]["lowrank"]
    for name, value in mean_abs.items():
        bound = inter["main_effects"][name]["mean_abs"] + sum(
            p["mean_abs_interaction"] / 2 for p in inter["pairs"] if name in p["modalities"]
        )
        assert value <= bound + 1e-9


def test_intervals_over_groups_and_refits_are_reported(xor_run):
    records = _metrics(xor_run)["contribution_intervals"]
    by = {(r["modality"], r["statistic"], r["over"]): r for r in records}
    # the study has groups: the bootstrap resamples the 90 patients, as the metrics do
    assert {r["over"] for r in records} == {"groups", "refits"}
    assert by[("a", "mean_abs", "groups")]["n"] == 90 and by[("a", "share", "refits")]["n"] == 3
    for name in ("a", "b"):
        assert by[(name, "mean_abs", "groups")]["low"] > 0.05
    for key, row in by.items():
        assert row["low"] <= row["estimate"] + 1e-12 and row["estimate"] <= row["high"] + 1e-12, key
    # the bootstrap's point estimate is the contributions table's mean |Shapley value|
    mean_abs = _metrics(xor_run)["mean_abs_contribution"]["lowrank"]
    assert by[("a", "mean_abs", "groups")]["estimate"] == pytest.approx(mean_abs["a"], rel=1e-12)
    # the report prints the same numbers, and says what each interval means
    page = _page(xor_run)
    table = _section(page, "How sure are the contributions")
    row = by[("a", "share", "groups")]
    assert (
        f"<td>a</td><td>mean per-row share</td><td>groups</td><td>90</td>"
        f"<td>{row['estimate']:.4f}</td><td>[{row['low']:.4f}, {row['high']:.4f}]</td>" in table
    )
    # the per-row share is named apart from the contributions table's share of mean |value|
    assert "it differs from the share in the contributions table" in table
    assert "resamples of groups (cluster bootstrap" in page
    assert "Student t interval of the mean across the 3 folds" in page
    csv = pd.read_csv(xor_run / "contribution_intervals.csv")
    assert len(csv) == len(records)
    assert (xor_run / "contribution_intervals_share.png").stat().st_size > 5000


def test_informative_interval_excludes_zero_and_noise_share_is_small(text_runs):
    records = _metrics(text_runs[False])["contribution_intervals"]
    by = {(r["modality"], r["statistic"], r["over"]): r for r in records}
    for over in ("groups", "refits"):
        assert by[("note", "mean_abs", over)]["low"] > 0.1
        assert by[("note", "share", over)]["low"] > 0.8
        assert by[("lab", "share", over)]["high"] < 0.2


def test_nothing_to_drill_into_in_a_tabular_study(xor_run):
    summary = _metrics(xor_run)
    assert summary["drilldown"] == {}
    assert "Inside the modalities" not in _page(xor_run)
    assert not list(xor_run.glob("drilldown_*.png"))


def test_text_drilldown_shows_words_only_with_include_text(text_runs):
    hidden, shown = text_runs[False], text_runs[True]
    frame = _text_frame()
    for run, show in ((hidden, False), (shown, True)):
        drill = _metrics(run)["drilldown"]
        assert drill["model"] == "late" and drill["text_shown"] is show
        assert drill["skipped"] == {"lab": "a table: drilled column by column in 'Inside the tables'"}
        assert len(drill["rows"]) == 3 and drill["fold"] == 2
        records = [r for r in drill["records"] if r["modality"] == "note"]
        assert len(records) == 3
        assert records[0]["reason"] == "most confident true positive"  # binary: why positive
        assert drill["masking"] == {"note": "clauses are removed"}
        assert "A masked part is replaced (note: clauses are removed) and the item" in _page(run)
        assert _metrics(run)["drilldown"]["reasons"][1] == "most confident incorrect"
        contributions = pd.read_csv(run / "contributions.csv")
        decided = 0
        for record in records:
            words = frame["note"].iloc[record["row"]].split(", ")
            # the parts add up to the modality's Shapley value in contributions.csv
            row = contributions[(contributions.row == record["row"])
                                & (contributions.modality == "note")]  # fmt: skip
            assert record["modality_value"] == pytest.approx(row["contribution"].item(), abs=1e-9)
            assert record["exact"] is True and record["n_parts"] == 7
            decisive = [k for k, w in enumerate(words) if w in (GOOD, BAD)]
            if decisive:  # the deciding word is the largest part, most of the text's value
                decided += 1
                best = record["top_parts"][0]
                k = decisive[0]  # withheld: named by kind and place, never by its words
                named = f"an affirmed clause ({k + 1} of 7) in sentence 1"
                assert best["part"] == (words[k] if show else named)
                assert best["value"] / record["modality_value"] > 0.5
        assert decided >= 1
    page_hidden, page_shown = _page(hidden), _page(shown)
    assert "Text withheld" in page_hidden and "Text withheld" not in page_shown
    section = _section(page_hidden, "Inside the modalities")
    assert GOOD not in section and BAD not in section
    assert not list(hidden.glob("drilldown_note_*.png"))
    assert len(list(shown.glob("drilldown_note_*.png"))) == 3
    assert re.search(rf"{GOOD}: \+|{BAD}: [+-]", _section(page_shown, "Inside the modalities"))
    # the report prints metrics.json's numbers
    first = _metrics(shown)["drilldown"]["records"][0]
    assert f"{first['modality_value']:+.4f}" in page_shown
    assert html.escape(first["reason"]) in page_shown
    assert f"{_metrics(shown)['drilldown']['encoder_calls']:,} encoder calls" in page_shown


def test_switching_the_outputs_off(tmp_path):
    config = _config(tmp_path, _text_frame(n=60), TEXT_MODALITIES, ["late"], interactions=False,
                     intervals=False, drilldown_rows=0)  # fmt: skip
    run = run_study(config, tmp_path / "runs", progress=False)
    summary, page = _metrics(run), _page(run)
    assert summary["interactions"] == {} and summary["contribution_intervals"] == []
    assert summary["drilldown"] == {}
    for name in ("interactions.csv", "contribution_intervals.csv", "interactions.png"):
        assert not (run / name).exists()
    assert "Interactions were not computed (output.interactions: false)" in page
    assert "Contribution intervals were not computed (output.intervals: false)" in page
    assert "Drill-down was not computed (output.drilldown_rows: 0)" in page
    assert (run / "contributions.csv").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("output.drilldown=3", r"output.drilldown: unknown key; expected one of \["),
        ("output.interactions=maybe", "output.interactions: expected true or false, found 'maybe'"),
        ("output.intervals=1", "output.intervals: expected true or false, found 1"),
        ("output.drilldown_rows=true",
         r"output.drilldown_rows: expected an integer in \[0, 20\] \(test rows drilled into"),
        ("output.drilldown_rows=21", r"output.drilldown_rows: expected an integer in \[0, 20\]"),
        ("output.drilldown_max_parts=15",
         r"output.drilldown_max_parts: expected an integer in \[1, 14\]"),
        ("output.drilldown_max_parts=2.0",
         r"output.drilldown_max_parts: expected an integer in \[1, 14\]"),
    ],
)  # fmt: skip
def test_config_keys_are_validated(tmp_path, override, message):
    frame = _text_frame(n=30)
    _config(tmp_path, frame, TEXT_MODALITIES, ["late"])
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "study.yaml", [override])


def test_rows_are_picked_confident_correct_and_incorrect_alternately():
    """Rows of the report's drill-down."""
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.95, 0.05]])
    y = np.array([0, 1, 0, 1, 0])
    picked = pick_rows(proba, y, classification=True, n=4)
    assert picked == [(4, "most confident correct"), (3, "most confident incorrect"),
                      (0, "most confident correct"), (2, "most confident incorrect")]  # fmt: skip
    # no wrong row: the correct ones fill the places
    assert [p for p, _ in pick_rows(proba, np.array([0, 1, 1, 0, 0]), True, 3)] == [4, 0, 1]
    # binary, positive class explained: the true positives first (row 1), then the other
    # correct rows; the incorrect ones alternate as before
    picked = pick_rows(proba, y, classification=True, n=4, positive=1)
    assert picked == [(1, "most confident true positive"), (3, "most confident incorrect"),
                      (4, "most confident correct"), (2, "most confident incorrect")]  # fmt: skip
    no_positive = pick_rows(proba, np.array([0, 0, 0, 1, 0]), True, 2, positive=1)
    assert no_positive == [(4, "most confident correct"), (1, "most confident incorrect")]
    best_worst = pick_rows(np.array([1.0, 2.0, 5.0]), np.array([1.1, 0.0, 5.0]), False, 3)
    assert best_worst == [(2, "best predicted"), (1, "worst predicted"), (0, "best predicted")]
