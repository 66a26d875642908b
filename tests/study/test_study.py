"""Study engine and the mmtk command line on the embedded default data."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from toolkit.cli import main
from toolkit.study import load_config, run_study
from toolkit.study.engine import StudyError

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["evaluation.bootstrap=40", "output.save_model=false"]
#: conformal prediction refits every strategy per fold; it is tested end to end once
#: (test_grouped_regression_study) and on its own in tests/test_conformal.py
NO_CONFORMAL = "evaluation.conformal.enabled=false"


def _run(config, tmp_path, *overrides):
    code = main(
        [
            "run",
            str(ROOT / "pipelines" / config),
            "--out",
            str(tmp_path),
            "--quiet",
            *sum((["--set", o] for o in overrides), []),
        ]
    )
    assert code == 0
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    return folder


@pytest.fixture(scope="module")
def sentiment_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sentiment")
    return _run(
        "sentiment.yaml",
        out,
        "data.params.n_samples=180",
        "evaluation.bootstrap=40",
        "data.params.informative=[face]",
        NO_CONFORMAL,
    )


def test_sentiment_run_folder_is_complete(sentiment_run):
    folder = sentiment_run
    for name in (
        "config.resolved.yaml",
        "environment.json",
        "metrics.json",
        "metrics.csv",
        "predictions.csv",
        "contributions.csv",
        "report.html",
    ):
        assert (folder / name).is_file(), name
    assert (folder / "model" / "model.skops").is_file()
    card = (folder / "model_card.md").read_text()
    metrics = json.loads((folder / "metrics.json").read_text())
    chosen = metrics["chosen"]["model"]
    assert f"- Chosen by rule `prefer_simpler`: **{chosen}**" in card
    assert "## Limitations" in card and "SYNTHETIC" in card
    assert set(metrics["strategies"]) == {"early", "late", "gated"}
    assert set(metrics["baselines"]) == {"text only", "audio only", "face only"}
    for entry in [*metrics["strategies"].values(), *metrics["baselines"].values()]:
        acc = entry["accuracy"]
        assert acc["low"] <= acc["value"] <= acc["high"]
    assert set(metrics["comparisons"]) == {"early", "late", "gated"}
    assert set(metrics["robustness"]["late"]) == {"text", "audio", "face"}
    contrib = pd.read_csv(folder / "contributions.csv")
    assert len(contrib) == 180 * 3
    assert contrib.groupby("row").size().eq(3).all()
    env = json.loads((folder / "environment.json").read_text())
    assert env["seed"] == 0 and "scikit-learn" in env["versions"]


def test_report_embeds_every_figure(sentiment_run):
    page = (sentiment_run / "report.html").read_text()
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 6
    for data in images:
        raw = base64.b64decode(data)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 2000
    assert "Methods" in page and "bootstrap" in page
    assert "Raw text of &#x27;text&#x27; is not included in this report" in page


def test_saved_model_is_the_chosen_one_and_loads(sentiment_run):
    import toolkit

    metrics = json.loads((sentiment_run / "metrics.json").read_text())
    model = toolkit.load(sentiment_run / "model")
    if metrics["chosen"]["kind"] == "single modality":
        assert model.modality_names_ == [metrics["chosen"]["model"].removesuffix(" only")]
    else:
        assert model.modality_names_ == ["text", "audio", "face"]
        assert type(model.fusion_).__name__.lower().startswith(metrics["chosen"]["model"])


def test_informative_modality_ranks_first(sentiment_run):
    metrics = json.loads((sentiment_run / "metrics.json").read_text())
    assert metrics["contribution_ranking"][0] == "face"
    assert metrics["best_single_modality"] == "face only"


def test_diagnosis_study_is_grouped_and_reports_clinical_metrics(tmp_path):
    folder = _run(
        "diagnosis.yaml",
        tmp_path,
        "data.params.n_samples=150",
        "data.params.scan_size=12",
        "modalities.scan.params.spatial_size=[12,12,12]",  # the volumes' own size
        NO_CONFORMAL,
        *SMALL,
    )
    metrics = json.loads((folder / "metrics.json").read_text())
    for key in (
        "auroc",
        "auprc",
        "brier",
        "sensitivity",
        "specificity",
        "calibration_slope",
        "calibration_intercept",
    ):
        assert key in metrics["strategies"]["late"]
    auroc = metrics["strategies"]["late"]["auroc"]
    assert auroc["low"] < auroc["value"] < auroc["high"]
    assert metrics["robustness"]["late"]
    assert metrics["contribution_ranking"]
    preds = pd.read_csv(folder / "predictions.csv")
    from toolkit.datasets import make_clinical_cohort

    cohort = make_clinical_cohort(150, scan_size=12, prevalence=0.3, random_state=0).frame
    assert preds["patient_id"].tolist() == cohort["patient_id"].tolist()  # the group column
    assert (preds.groupby("patient_id")["fold"].nunique() == 1).all()
    assert (folder / "calibration.png").is_file() and (folder / "roc.png").is_file()
    assert metrics["bootstrap"] == {
        "n_boot": 40,
        "unit": "group",
        "seed": 0,
        "method": "percentile",
    }
    # prevalence per fold adds up to the cohort
    folds = metrics["folds_detail"]
    assert sum(f["n"] for f in folds) == 150
    assert sum(f["class_counts"]["1"] for f in folds) == int(cohort["diagnosis"].sum())
    # the chosen model by the declared rule (prefer_simpler: the best single modality unless
    # a fusion's gain over it has an interval above 0), the headline against that modality
    single = metrics["best_single_modality"]
    gains = {k: c["low"] for k, c in metrics["comparisons"].items() if c["low"] > 0}
    expected = (max(gains, key=lambda k: metrics["strategies"][k]["auroc"]["value"])
                if gains else single)  # fmt: skip
    chosen = metrics["chosen"]
    assert (chosen["rule"], chosen["model"], chosen["candidates"]) == (
        "prefer_simpler",
        expected,
        6,
    )
    assert chosen["kind"] == ("fusion" if gains else "single modality")
    assert metrics["headline"]["against"] == single
    assert metrics["headline"]["verdict"] == ("helps" if gains else metrics["headline"]["verdict"])
    assert metrics["headline"]["verdict"] in ("helps", "does not help", "worse")
    # robustness numbers with intervals, calibration with bin counts
    scan = metrics["robustness_intervals"]["late"]["scan"]
    assert scan["low"] <= scan["value"] <= scan["high"]
    assert scan["drop"] == pytest.approx(auroc["value"] - scan["value"])
    assert sum(b["n"] for b in metrics["calibration"]["late"]) == 150
    page = (folder / "report.html").read_text()
    for section in (
        "<h2>Data (from the data card)</h2>",
        "<h3>Test rows per fold",
        "<h2>Limitations</h2>",
        "<h2>TRIPOD+AI checklist</h2>",
        "SYNTHETIC DATA.",
    ):
        assert section in page, section  # fmt: skip


def test_failed_study_keeps_finished_folds(tmp_path, monkeypatch):
    config = load_config(
        ROOT / "pipelines" / "sentiment.yaml",
        ["data.params.n_samples=90", "fusion=[late]", NO_CONFORMAL, *SMALL],
    )  # one strategy: what is tested is the folds written before the failure
    written = []

    def write_two_then_fail(folder, result):
        if len(written) == 2:
            raise StudyError(f"injected failure after {len(written)} folds")
        written.append(engine_write_fold(folder, result))

    from toolkit.study import engine

    engine_write_fold = engine.write_fold
    monkeypatch.setattr(engine, "write_fold", write_two_then_fail)
    with pytest.raises(StudyError, match="injected failure after 2 folds") as caught:
        run_study(config, tmp_path, progress=False)
    (folder,) = list(tmp_path.iterdir())
    assert caught.value.run_folder == folder
    folds = sorted(p.name for p in (folder / "folds").iterdir())
    assert folds == ["fold_0.json", "fold_1.json"]
    record = json.loads((folder / "folds" / "fold_1.json").read_text())
    assert len(record["test_index"]) == len(record["late"]) == 30
    # The folder is marked failed, with the error; nothing claims to be a finished study.
    status = json.loads((folder / "status.json").read_text())
    assert status["status"] == "failed"
    assert status["error"].startswith("StudyError: injected failure after 2 folds")
    assert "injected failure after 2 folds" in (folder / "FAILED").read_text()
    assert not (folder / "metrics.json").exists() and not (folder / "report.html").exists()


def test_run_study_has_no_test_only_parameter():
    import inspect

    assert not [p for p in inspect.signature(run_study).parameters if p.startswith("_")]


def test_run_folders_are_never_overwritten(tmp_path):
    config = load_config(
        ROOT / "pipelines" / "sentiment.yaml",
        [
            "data.params.n_samples=60",
            "evaluation.bootstrap=0",
            "output.save_model=false",
            "output.report=false",
            "fusion=[late]",
            "evaluation.robustness=false",
            "explanation.enabled=false",
            NO_CONFORMAL,
        ],
    )
    a = run_study(config, tmp_path, progress=False)
    b = run_study(config, tmp_path, progress=False)
    assert a != b and a.exists() and b.exists()
    for run in (a, b):
        assert run.parent == tmp_path.resolve()
        assert json.loads((run / "status.json").read_text())["status"] == "complete"


def _write(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


BASE = """
name: bad
data: {source: make_sentiment_clips, params: {n_samples: 30}, target: label}
modalities:
  - {name: text, encoder: TextEncoder, columns: transcript}
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE.replace("TextEncoder", "WordEncoder"), "modalities[0].encoder: expected one of"),
        (
            BASE.replace("columns: transcript", "columns: speech"),
            "modalities[0].columns: column(s) ['speech'] are not in the data",
        ),
        (
            BASE + "evaluation: {cv: three}\n",
            "evaluation.cv: expected an integer >= 2 (at most the rows, smallest class, "
            "groups), found 'three'",
        ),
        (
            BASE + "fusion: [middle]\n",
            "fusion[0]: expected one of ['attention', 'auto', 'early', 'gated', 'late', 'lowrank', "
            "'tensor']",
        ),
        (BASE.replace("make_sentiment_clips", "make_movies"), "data.source: expected one of"),
        (
            BASE + "task: ranking\n",
            "task: expected one of ['classification', 'regression'], found 'ranking'",
        ),
        (BASE + "evaluaton: {cv: 3}\n", "evaluaton: unknown key"),
    ],
)
def test_bad_configs_exit_nonzero_with_one_line_naming_the_key(tmp_path, capsys, text, message):
    path = _write(tmp_path, text)
    assert main(["run", str(path), "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "runs").exists()  # nothing written for a config that never ran


def test_a_bad_config_from_the_command_line_is_one_line_and_exit_code_2(tmp_path):
    """The same through ``python -m toolkit.cli`` (the process's exit code and stderr)."""
    path = _write(tmp_path, BASE + "evaluaton: {cv: 3}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "toolkit.cli", "run", str(path), "--out", str(tmp_path / "runs"), "--quiet"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("mmtk: config error: evaluaton: unknown key; expected one of ['data', ")


def test_validate_datasets_and_help(capsys):
    assert main(["validate", str(ROOT / "pipelines" / "diagnosis.yaml")]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "load_mimic_iv_demo" in out and "ODbL" in out
    with pytest.raises(SystemExit) as exc:
        main(["run", "--help"])
    assert exc.value.code == 0


SHIPPED = {  # what each config states, as validation must keep it
    "sentiment.yaml": ("sentiment", "classification", "make_sentiment_clips",
                       ["text", "audio", "face"], 3, 300, "accuracy"),
    "diagnosis.yaml": ("diagnosis", "classification", "make_clinical_cohort",
                       ["clinical", "note", "scan"], 3, 300, "auroc"),
    "av_digits.yaml": ("av_digits", "classification", "load_av_digits",
                       ["audio", "image"], 3, 300, "accuracy"),
    "mosi_template.yaml": ("cmu_mosi", "regression", "load_mmsa_features",
                           ["text", "audio", "vision"], 5, 1000, "mae"),
    "manifest_template.yaml": ("my_study", "classification", "load_manifest",
                               ["note", "scan", "labs"], 5, 1000, "auroc"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_configs_state_their_studies(name):
    """What each shipped config states (every pipeline's stated values surviving loading
    is checked for all of pipelines/*.yaml in tests/study/test_config.py)."""
    config = load_config(ROOT / "pipelines" / name)
    run_name, task, source, modalities, cv, bootstrap, primary = SHIPPED[name]
    assert (config.name, config.task, config.data.source) == (run_name, task, source)
    assert [m.name for m in config.modalities] == modalities
    evaluation = config.evaluation
    assert (evaluation.cv, evaluation.bootstrap) == (cv, bootstrap)
    assert evaluation.primary_metric == primary
    # av_digits (real data, 3,000 rows, speaker groups) also evaluates fusion="auto"
    extra = ["auto"] if name == "av_digits.yaml" else []
    assert config.fusion_names == ["early", "late", "gated", *extra]


def test_cli_prints_a_summary(tmp_path, capsys):
    code = main(
        ["run", str(ROOT / "pipelines" / "sentiment.yaml"), "--out", str(tmp_path), "--quiet",
         "--set", "data.params.n_samples=60", "--set", "evaluation.bootstrap=20", "--set", "fusion=[late]",
         "--set", "output.save_model=false", "--set", "output.report=false",
         "--set", NO_CONFORMAL]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"late fusion( \*)?\s+0\.\d{3}\s+\[0\.\d{3}, [01]\.\d{3}\]", out), out
    assert "face only" in out and "modality contributions (late fusion)" in out
    assert "report:" in out
    assert out.startswith("Chosen model (rule prefer_simpler): ")
    assert len(out.splitlines()) <= 20  # one screen


def test_same_seed_same_study_metrics(tmp_path):
    overrides = [  # every strategy of the shipped config, small
        "data.params.n_samples=60",
        "evaluation.bootstrap=10",
        "output.save_model=false",
        "output.report=false",
        NO_CONFORMAL,
    ]
    config = load_config(ROOT / "pipelines" / "sentiment.yaml", overrides)
    a = run_study(config, tmp_path / "a", progress=False)
    b = run_study(config, tmp_path / "b", progress=False)
    assert (a / "metrics.json").read_text() == (b / "metrics.json").read_text()
    assert (a / "contributions.csv").read_text() == (b / "contributions.csv").read_text()


def _base_values(run):
    """Per fold: f(x) - sum of contributions over the rows (the explanation's base value),
    and the training prior of the fold's positive class."""
    import numpy as np

    preds = pd.read_csv(run / "predictions.csv")
    contrib = pd.read_csv(run / "contributions.csv").groupby("row")["contribution"].sum()
    base = preds["late_proba"].to_numpy() - contrib.loc[preds["row"]].to_numpy()
    positive = sorted(preds["y_true"].unique())[1]
    out = []
    for k in sorted(preds["fold"].unique()):
        test = (preds["fold"] == k).to_numpy()
        prior = float(np.mean(preds["y_true"][~test] == positive))
        out.append((base[test], prior))
    return out


def test_text_only_in_reports_that_ask_and_background_removal(tmp_path):
    import numpy as np

    overrides = [
        "data.params.n_samples=60",
        "evaluation.bootstrap=10",
        "output.save_model=false",
        "fusion=[late]",
        NO_CONFORMAL,
    ]
    shown = run_study(
        load_config(
            ROOT / "pipelines" / "sentiment.yaml",
            [*overrides, "output.include_text=true", "explanation.removal=background"],
        ),
        tmp_path / "a",
        progress=False,
    )
    hidden = run_study(
        load_config(ROOT / "pipelines" / "sentiment.yaml", overrides),
        tmp_path / "b",
        progress=False,
    )
    from toolkit.datasets import make_sentiment_clips

    transcripts = make_sentiment_clips(
        60, text_strength=3, audio_strength=3, face_strength=3, random_state=0
    ).frame["transcript"]
    page_shown, page_hidden = (
        (shown / "report.html").read_text(),
        (hidden / "report.html").read_text(),
    )
    assert "Texts that contributed most" in page_shown
    assert sum(t in page_shown for t in transcripts) >= 1
    assert not any(t in page_hidden for t in transcripts)
    assert len(pd.read_csv(hidden / "contributions.csv")) == 60 * 3
    assert "removal: background" in page_shown and "removal: missing" in page_hidden
    # Missing removal: the empty coalition is the fold's training prior.
    for base, prior in _base_values(hidden):
        np.testing.assert_allclose(base, prior, atol=1e-9)
    # Background removal: one base value per fold (the mean output on the fold's
    # background rows), which is not the prior.
    for base, prior in _base_values(shown):
        np.testing.assert_allclose(base, base[0], atol=1e-9)
        # the mean output over background rows; a calibrated model (late fusion calibrates
        # its heads) puts it close to the prior, but it is computed from the rows, not copied
        assert base[0] != prior and abs(base[0] - prior) < 0.05


REGRESSION = """
name: severity
task: regression
data:
  source: make_clinical_cohort
  params: {n_samples: 60, scan_size: 8, missing_rate: 0.3}
  target: severity
  groups: patient_id
modalities:
  - {name: clinical, encoder: TabularEncoder, columns: [age, crp, lactate]}
  - {name: note, encoder: TextEncoder, columns: note, params: {n_components: 4}}
fusion: [early, late]
evaluation: {cv: 3, bootstrap: 10, conformal: true}
output: {save_model: false}
"""


def test_grouped_regression_study(tmp_path):
    path = tmp_path / "severity.yaml"
    path.write_text(REGRESSION)
    run = run_study(load_config(path), tmp_path / "runs", progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "regression" and metrics["grouped"] is True
    assert metrics["primary_metric"] == "mae"
    assert set(metrics["strategies"]["late"]) == {"mae", "rmse", "r2", "pearson_r"}
    assert set(metrics["baselines"]) == {"clinical only", "note only"}
    best = min(metrics["strategies"], key=lambda s: metrics["strategies"][s]["mae"]["value"])
    assert metrics["best_strategy"] == best
    preds = pd.read_csv(run / "predictions.csv")
    assert {"early_pred", "late_pred", "note only_pred", "patient_id"} <= set(preds.columns)
    assert metrics["bootstrap"]["unit"] == "group"
    assert len(pd.read_csv(run / "contributions.csv")) == 60 * 2
    assert (run / "predictions.png").is_file() and (run / "robustness.png").is_file()
    page = (run / "report.html").read_text()
    assert "task: regression." in page and "group K-fold (unstratified), not shuffled" in page
    # conformal intervals: coverage per availability pattern covers every row once
    conformal = metrics["conformal"]
    assert conformal["confidence"] == 0.9
    late = conformal["strategies"]["late"]
    assert set(late) == {"clinical", "clinical+note", "all"}
    assert late["clinical"]["n"] + late["clinical+note"]["n"] == late["all"]["n"] == 60
    assert metrics["missingness"]["patterns"] == {
        "clinical": late["clinical"]["n"],
        "clinical+note": late["clinical+note"]["n"],
    }
    assert "<h2>Conformal coverage per availability pattern (asked: 90%)</h2>" in page


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # age, the off-scale target, leaves the features (a target column is refused as one)
        (["evaluation.mosi_metrics=true", "data.target=age", "modalities.clinical.columns=[crp, lactate]"],
         "evaluation.mosi_metrics: MOSI's acc2 / f1 / acc7 are defined on a [-3, 3] sentiment "
         "score, but the target spans"),
        (["evaluation.primary_metric=acc7"],
         "evaluation.primary_metric: 'acc7' is a CMU-MOSI metric; set evaluation.mosi_metrics: true"),
        (["output.model_rule=fixed:gated"],
         "output.model_rule: 'fixed:gated' names a strategy not listed in fusion ['early', 'late']"),
    ],
)  # fmt: skip
def test_validate_refuses_mosi_metrics_off_scale_and_unknown_rules(
    tmp_path, capsys, overrides, message
):
    path = tmp_path / "severity.yaml"
    path.write_text(REGRESSION)
    args = ["validate", str(path)] + sum((["--set", o] for o in overrides), [])
    assert main(args) == 2
    assert message in capsys.readouterr().err
