"""The ``mmtk`` command (toolkit/cli.py): ``validate``, ``datasets`` and ``run`` on a tiny
generated study, ``--set`` overrides, exit codes (0 done, 2 wrong config or data, nothing
run) and one-line messages; and every shipped pipeline passing ``mmtk validate`` against
its data (skipped where that data is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from toolkit.cli import build_parser, main
from toolkit.datasets import DATASETS

ROOT = Path(__file__).resolve().parents[1]
TINY = """\
name: tiny
data: {source: make_sentiment_clips, params: {n_samples: 40}, target: label}
modalities:
  - {name: text, encoder: TextEncoder, columns: transcript, params: {n_components: 4}}
  - {name: mood, encoder: TabularEncoder, columns: [arousal]}
fusion: [late]
evaluation: {cv: 2, bootstrap: 50, robustness: false, conformal: false}
explanation: {enabled: false}
output: {report: false, save_model: false}
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "tiny.yaml"
    path.write_text(TINY, encoding="utf-8")
    return path


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err  # one line on stderr
    return err.strip()


# -- mmtk validate --------------------------------------------------------------------------


def test_validate_prints_what_it_checked(tiny, capsys):
    assert main(["validate", str(tiny)]) == 0
    assert capsys.readouterr().out.strip() == (
        f"{tiny}: valid (classification, data make_sentiment_clips: 40 rows, modalities "
        "['text', 'mood'], 2 folds, fusion ['late'])"
    )
    assert main(["validate", str(tiny), "--set", "fusion=[early, late]"]) == 0
    assert "fusion ['early', 'late'])" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["evaluation.cv=1"], "mmtk: config error: evaluation.cv: expected an integer >= 2"),
        (["evaluation.cv=41"], "mmtk: config error: evaluation.cv: 41 folds need at least 41 rows, found 40"),
        (["data.target=mood"], "mmtk: config error: data.target: column 'mood' is not in the data"),
        (["evaluation.primary_metric=mae"],
         "mmtk: config error: evaluation.primary_metric: expected a classification metric"),
        (["evaluation.cv"], "mmtk: config error: --set expects key=value, got 'evaluation.cv'"),
        (["name=../x"], "mmtk: config error: name: expected a plain name"),
    ],
)  # fmt: skip
def test_validate_refuses_a_bad_config_with_exit_2_and_the_key(tiny, capsys, overrides, message):
    argv = ["validate", str(tiny)]
    for assignment in overrides:
        argv += ["--set", assignment]
    assert main(argv) == 2
    assert _err(capsys).startswith(message)


def test_validate_a_missing_or_unreadable_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "none.yaml")]) == 2
    assert (
        _err(capsys) == f"mmtk: config error: config file '{tmp_path / 'none.yaml'}' does not exist"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert main(["validate", str(bad)]) == 2
    assert _err(capsys).startswith(f"mmtk: config error: config file '{bad}' is not valid YAML")


def test_a_command_line_error_exits_2_before_anything_runs(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "x.yaml"])
    assert exc.value.code == 2
    assert "invalid choice: 'train'" in capsys.readouterr().err
    assert {"run", "validate", "datasets"} <= set(
        build_parser()._subparsers._group_actions[0].choices
    )


# -- mmtk datasets --------------------------------------------------------------------------


def test_datasets_lists_every_registered_source_with_its_licence(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name, info in DATASETS.items():
        assert f"licence: {info.licence}" in out and name in out
    assert main(["datasets", "make_sentiment_clips"]) == 0
    info = DATASETS["make_sentiment_clips"]
    assert capsys.readouterr().out.splitlines()[:3] == [
        f"{info.name} ({info.kind}): {info.title}",
        f"  licence: {info.licence}",
        f"  citation: {info.citation}",
    ]
    assert main(["datasets", "make_nothing"]) == 2
    assert _err(capsys).startswith("mmtk: unknown dataset 'make_nothing'; expected one of")


# -- mmtk run -------------------------------------------------------------------------------


def test_run_a_tiny_study_with_overrides(tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["run", str(tiny), "--out", str(out), "--quiet",
            "--set", "name=tiny_cli", "--set", "evaluation.bootstrap=25"]  # fmt: skip
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    (run,) = out.iterdir()
    assert run.name.startswith("tiny_cli-")
    assert f"run folder: {run}" in stdout and f"report: {run / 'report.html'}" in stdout
    assert "late fusion" in stdout and "text only" in stdout and "mood only" in stdout
    assert "auroc   95% interval" in stdout and " *" in stdout  # the chosen model is starred
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    resolved = yaml.safe_load((run / "config.resolved.yaml").read_text())
    assert resolved["name"] == "tiny_cli" and resolved["evaluation"]["bootstrap"] == 25
    assert resolved["fusion"] == ["late"] and "path" not in resolved
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["bootstrap"]["n_boot"] == 25 and metrics["folds"] == 2
    assert metrics["primary_metric"] == "auroc"
    assert 0.0 <= metrics["chance_levels"]["accuracy"] <= 1.0
    assert metrics["chance_levels"]["auroc"] == 0.5
    assert not (run / "report.html").exists()  # output.report: false


def test_run_with_a_bad_override_exits_2_and_makes_no_folder(tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["run", str(tiny), "--out", str(out), "--quiet", "--set", "evaluation.bootstrap=-1"]
    assert main(argv) == 2
    assert _err(capsys).startswith("mmtk: config error: evaluation.bootstrap: expected an integer")
    assert not out.exists() or not any(out.iterdir())


# -- every shipped pipeline against its data ------------------------------------------------


def _template_path(raw: dict, folder: Path) -> str | None:
    """Why a template pipeline cannot be read here (a placeholder input path), or None;
    relative paths are read against the config's ``folder``, as the study reads them."""
    params = raw["data"].get("params") or {}
    for key in ("csv", "path", "data_dir"):
        if key in params and not (folder / Path(params[key]).expanduser()).exists():
            return f"its data.params.{key} '{params[key]}' is absent (a template to fill in)"
    return None


@pytest.mark.parametrize("path", sorted((ROOT / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_pipeline_passes_mmtk_validate(path, capsys, monkeypatch, request):
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    reason = _template_path(raw, path.parent)
    if reason:
        pytest.skip(reason)
    if DATASETS[raw["data"]["source"]].kind != "synthetic":
        # skips when the real data folder is absent (tests/conftest.py)
        monkeypatch.setenv("TOOLKIT_DATA_DIR", str(request.getfixturevalue("real_data")))
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    assert f"{path}: valid (" in capsys.readouterr().out


# -- issue 27: --set into lists, list hints, duplicate keys, validate as strict as run ------


def test_set_reaches_a_list_entry_by_position_and_by_name(tiny):
    from toolkit.study import load_config

    config = load_config(
        tiny, ["modalities.0.params.n_components=3", "modalities.mood.columns=[valence]"]
    )
    assert config.modalities[0].params == {"n_components": 3}
    assert config.modalities[1].columns == ["valence"]
    assert load_config(tiny, ["modalities.-1.name=feel"]).modalities[1].name == "feel"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("modalities.5.params.n_components=3",
         "modalities.5: the list has 2 entries (positions 0 to 1; names ['text', 'mood'])"),
        ("modalities.notes.params.n_components=3",
         "modalities has no entry named 'notes'; use a position (0 to 1) or one of the names "
         "['text', 'mood']"),
        ("fusion=late", "fusion: expected a list of strategies, found the name 'late'; write it "
         "as a list: fusion: [late] (on the command line: --set fusion=[late])"),
    ],
)  # fmt: skip
def test_set_errors_name_the_entries_and_suggest_a_list(tiny, capsys, override, message):
    assert main(["validate", str(tiny), "--set", override]) == 2
    assert message in _err(capsys)


def test_a_duplicate_key_is_refused_with_its_lines(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text(TINY.replace("evaluation: {cv: 2,", "evaluation: {cv: 3, cv: 2,"))
    assert main(["validate", str(path)]) == 2
    assert _err(capsys) == (
        f"mmtk: config error: config file '{path}': key 'cv' appears twice in one mapping "
        "(lines 7 and 7); keep one"
    )
    path.write_text(TINY + "fusion: [early]\n")
    assert main(["validate", str(path)]) == 2
    assert "key 'fusion' appears twice in one mapping (lines 6 and 10)" in _err(capsys)


def test_validate_refuses_an_array_column_under_a_table_as_run_does(tmp_path, capsys):
    path = tmp_path / "scan_as_table.yaml"
    path.write_text(
        "data: {source: make_clinical_cohort, params: {n_samples: 30, scan_size: 8}, "
        "target: diagnosis}\nmodalities:\n  - {name: labs, encoder: TabularEncoder, "
        "columns: [age, scan]}\nevaluation: {cv: 2}\n"
    )
    out = tmp_path / "runs"
    for argv in (["validate", str(path)], ["run", str(path), "--out", str(out), "--quiet"]):
        assert main(argv) == 2
        assert _err(capsys).startswith(
            "mmtk: config error: modalities[0].columns: column 'scan' holds values of type "
            "['ndarray']"
        )
    assert not out.exists()  # an invalid config leaves no output folder behind
