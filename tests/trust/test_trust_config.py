"""Trust, classes 5 and 6: study paths stay inside ``--out`` and configs fail at
``mmtk validate`` (bounded, typed keys; data checked against the config; failed runs
marked; unreachable schedulers refused in one line)."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit.cli import main
from toolkit.study import ConfigError, engine, load_config, run_study, validate_config

SMALL = """
name: small
seed: 0
task: classification
data: {source: make_sentiment_clips, params: {n_samples: 30, text_strength: 3}, target: label}
modalities:
  - {name: text, encoder: TextEncoder, columns: transcript, params: {n_components: 4}}
fusion: [late]
evaluation: {cv: 3, bootstrap: 0, robustness: false, baselines: false}
explanation: {enabled: false}
output: {report: false, save_model: false}
"""


def _config(tmp_path: Path, text: str = SMALL, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _fails(capfd, argv, message, code=2):
    """``mmtk argv`` exits ``code`` with exactly one stderr line containing ``message``."""
    assert main(argv) == code
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert message in err[0], err[0]
    return err[0]


def _validate_fails(tmp_path, capfd, sets, message):
    path = _config(tmp_path)
    argv = ["validate", str(path), *sum((["--set", s] for s in sets), [])]
    return _fails(capfd, argv, message)


# -- class 5: paths stay where they belong ----------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../escape", "a/b", "a\\b", "~evil", "/tmp/abs", "..", ".hidden", "a..b", "", "x" * 101, 5],
)
def test_name_that_would_leave_out_is_refused_at_validate(tmp_path, capfd, name):
    line = _validate_fails(tmp_path, capfd, [f"name={json.dumps(name)}"], "config error: name:")
    assert "expected a plain name" in line and "becomes a folder name" in line


def test_modality_name_becomes_a_folder_so_it_is_checked_too(tmp_path, capfd):
    text = SMALL.replace("{name: text,", "{name: ../../outside,")
    path = _config(tmp_path, text)
    _fails(capfd, ["validate", str(path)], "modalities[0].name: expected a plain name")


def test_bad_name_leaves_nothing_under_out(tmp_path, capfd):
    path = _config(tmp_path)
    out = tmp_path / "runs"
    argv = ["run", str(path), "--out", str(out), "--quiet", "--set", "name=../../pwned"]
    _fails(capfd, argv, "config error: name: expected a plain name")
    assert not (tmp_path / "pwned").exists() and not (tmp_path.parent / "pwned").exists()
    assert not out.exists() or not any(out.iterdir())


def test_generator_output_dir_is_refused(tmp_path, capfd):
    _validate_fails(
        tmp_path,
        capfd,
        [f"data.params.output_dir={tmp_path / 'elsewhere'}"],
        "data.params.output_dir: a study does not write generated files",
    )
    assert not (tmp_path / "elsewhere").exists()


def test_symlink_in_place_of_the_run_folder_is_refused(tmp_path, capfd, monkeypatch):
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "runs"
    out.mkdir()
    monkeypatch.setattr(engine, "_stamp", lambda: "20000101-000000")
    (out / "small-20000101-000000").symlink_to(outside, target_is_directory=True)
    path = _config(tmp_path)
    _fails(capfd, ["run", str(path), "--out", str(out), "--quiet"], "is a symbolic link")
    assert list(outside.iterdir()) == []


def test_run_folder_is_resolved_inside_out_even_through_a_linked_out(tmp_path, monkeypatch):
    real = tmp_path / "real_runs"
    real.mkdir()
    link = tmp_path / "runs"
    link.symlink_to(real, target_is_directory=True)
    monkeypatch.setattr(engine, "_execute", lambda *args: None)
    run = run_study(load_config(_config(tmp_path)), link, progress=False)
    assert run.parent == real.resolve() and run.is_relative_to(real.resolve())
    assert run.name.startswith("small-") and not run.is_symlink()


def test_out_that_is_a_file_is_refused(tmp_path, capfd):
    (tmp_path / "runs").write_text("not a folder")
    path = _config(tmp_path)
    argv = ["run", str(path), "--out", str(tmp_path / "runs"), "--quiet"]
    _fails(capfd, argv, "is a file, not a folder")


def test_manifest_csv_in_config_resolves_against_the_config_folder(tmp_path, capfd, monkeypatch):
    study = tmp_path / "study"
    (study / "data").mkdir(parents=True)
    rng = np.random.RandomState(0)
    for i in range(12):
        (study / "data" / f"n{i}.txt").write_text("x")
    pd.DataFrame(
        {
            "doc": [f"n{i}.txt" for i in range(12)],
            "age": rng.normal(50, 10, 12).round(),
            "label": [0, 1] * 6,
        }
    ).to_csv(study / "data" / "m.csv", index=False)
    text = SMALL.replace(
        "{source: make_sentiment_clips, params: {n_samples: 30, text_strength: 3}, target: label}",
        "{source: load_manifest, params: {csv: data/m.csv}, target: label}",
    ).replace("{name: text, encoder: TextEncoder, columns: transcript, params: {n_components: 4}}",
              "{name: labs, encoder: TabularEncoder, columns: [age]}")  # fmt: skip
    path = _config(study, text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["validate", str(path)]) == 0
    assert "12 rows" in capfd.readouterr().out
    config = load_config(path)
    frame = engine.load_study_data(config)[0]
    assert frame["doc"][0] == str(study / "data" / "n0.txt")


# -- class 6: bounded, typed keys -------------------------------------------------------


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("evaluation.cv=1", "evaluation.cv: expected an integer >= 2"),
        ("evaluation.cv=2.0", "evaluation.cv: expected an integer >= 2"),
        ("evaluation.cv=true", "evaluation.cv: expected an integer >= 2 (at most the rows, "
                               "smallest class, groups), found True (a boolean)"),
        ("evaluation.bootstrap=100001", "evaluation.bootstrap: expected an integer in "
                                        "[0, 100,000], found 100001"),
        ("evaluation.bootstrap=-1", "evaluation.bootstrap: expected an integer in [0, 100,000]"),
        ("evaluation.bootstrap=true", "evaluation.bootstrap: expected an integer in [0, 100,000],"
                                      " found True (a boolean)"),
        ("evaluation.bootstrap=10.5", "evaluation.bootstrap: expected an integer in [0, 100,000]"),
        ("seed=-1", "seed: expected an integer in [0, 4,294,967,295], found -1"),
        ("seed=4294967296", "seed: expected an integer in [0, 4,294,967,295], found 4294967296"),
        ("seed=false", "seed: expected an integer in [0, 4,294,967,295], found False (a boolean)"),
        ("seed=1.5", "seed: expected an integer in [0, 4,294,967,295], found 1.5"),
        ("evaluation.n_jobs=0", "evaluation.n_jobs: expected an integer in [1, 64]"),
        ("evaluation.n_jobs=65", "evaluation.n_jobs: expected an integer in [1, 64]"),
        ("evaluation.n_jobs=-2", "evaluation.n_jobs: expected an integer in [1, 64]"),
        ("evaluation.n_jobs=true", "evaluation.n_jobs: expected an integer in [1, 64]"),
        ("evaluation.n_jobs=-1.0", "evaluation.n_jobs: expected an integer in [1, 64]"),
        ("evaluation.threshold=true", "evaluation.threshold: expected a number in (0, 1)"),
        ("evaluation.threshold=1", "evaluation.threshold: expected a number in (0, 1), found 1"),
        ("evaluation.threshold=.nan", "evaluation.threshold: expected a number in (0, 1)"),
        ("explanation.enabled=3", "explanation.enabled: expected true or false, found 3"),
        ("data.params.n_samples=true", "data.params.n_samples: expected an integer"),
        ("data.params.n_samples=30.5", "data.params.n_samples: expected an integer"),
        ("data.params.duration=true", "data.params.duration: expected a number, found True"),
        ("data.params.noise=.inf", "data.params.noise: expected a finite number, found inf"),
        ("data.params.random_state=-3", "data.params.random_state: expected an integer in [0,"),
        ("data.params.n_sample=30", "data.params.n_sample: not a parameter of "
                                    "make_sentiment_clips"),
        ("data.params.n_samples=-5", "data.params: make_sentiment_clips failed: n_samples must be"
                                     " an integer >= 1, got -5"),
        ("data.params.n_samples=100000000", "would generate about"),
    ],
)  # fmt: skip
def test_numeric_keys_are_bounded_and_typed(tmp_path, capfd, assignment, message):
    _validate_fails(tmp_path, capfd, [assignment], message)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("{n_components: true}", "modalities[0].params.n_components: expected an integer"),
        ("{n_components: 0}", "modalities[0].params: The 'n_components' parameter of TextEncoder"),
        ("{n_components: 4.5}", "modalities[0].params.n_components: expected an integer"),
        ("{n_component: 4}", "modalities[0].params.n_component: not a parameter of TextEncoder"),
        ("{batch_size: -1}", "modalities[0].params: The 'batch_size' parameter of TextEncoder"),
    ],
)
def test_encoder_params_are_checked_at_validate(tmp_path, capfd, params, message):
    text = SMALL.replace("params: {n_components: 4}}", f"params: {params}}}")
    _fails(capfd, ["validate", str(_config(tmp_path, text))], message)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: late, params: {cv: true}}", "fusion[0].params.cv: expected an integer"),
        ("{name: gated, params: {dropout: .nan}}", "fusion[0].params.dropout: expected a finite"),
        ("{name: gated, params: {max_epochs: -3}}", "fusion[0].params: The 'max_epochs' parameter"),
        ("{name: late, params: {combine: vote}}", "fusion[0].params: The 'combine' parameter"),
    ],
)
def test_fusion_params_are_checked_at_validate(tmp_path, capfd, entry, message):
    text = SMALL.replace("fusion: [late]", f"fusion: [{entry}]")
    _fails(capfd, ["validate", str(_config(tmp_path, text))], message)


def test_limits_are_keyword_parameters(tmp_path, monkeypatch):
    config = load_config(_config(tmp_path), ["evaluation.bootstrap=20", "evaluation.n_jobs=4"])
    with pytest.raises(
        ConfigError, match=r"evaluation.bootstrap: expected an integer in \[0, 10\]"
    ):
        validate_config(config, max_bootstrap=10)
    with pytest.raises(ConfigError, match=r"evaluation.n_jobs: expected an integer in \[1, 2\]"):
        validate_config(config, max_n_jobs=2)
    with pytest.raises(ConfigError, match="more than the 0.0 GiB allowed .max_synthetic_bytes."):
        validate_config(config, max_synthetic_bytes=1000)
    validate_config(config)  # the defaults admit it
    monkeypatch.setattr(engine, "_execute", lambda *args: None)
    with pytest.raises(
        ConfigError, match=r"evaluation.bootstrap: expected an integer in \[0, 10\]"
    ):
        run_study(config, tmp_path / "runs", progress=False, limits={"max_bootstrap": 10})
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    big = _config(tmp_path, SMALL + "#" * 2000 + "\n", "big.yaml")
    with pytest.raises(ConfigError, match="more than the 1,000 allowed .max_config_bytes."):
        load_config(big, max_config_bytes=1000)
    assert load_config(big)["name"] == "small"
    nested = "data.params.informative=" + "[" * 6 + "face" + "]" * 6
    with pytest.raises(
        ConfigError, match="9 levels deep, more than the 5 allowed .max_config_depth"
    ):
        load_config(big, [nested], max_config_depth=5)


def test_yaml_alias_bombs_are_refused_before_they_are_built(tmp_path, capfd):
    rows = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        rows.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    path = _config(tmp_path, "\n".join(rows) + "\nname: *i\n", "bomb.yaml")  # 9**9 values
    assert path.stat().st_size < 700
    _fails(capfd, ["validate", str(path)], "expands to more than 100,000 values once its YAML")
    loop = _config(tmp_path, "name: x\nfusion: &f [early, *f]\n", "loop.yaml")
    with pytest.raises(ConfigError, match="has a YAML alias that refers to itself"):
        load_config(loop)
    # Aliases that stay small are still read as YAML defines them.
    reuse = _config(tmp_path, SMALL + "extra: &p [1, 2]\nmore: *p\n", "reuse.yaml")
    with pytest.raises(ConfigError, match="extra: unknown key"):  # checked after the expansion
        load_config(reuse)
    with pytest.raises(ConfigError, match="more than 3 values"):
        load_config(reuse, max_config_values=3)


def test_deeply_nested_yaml_is_one_line(tmp_path, capfd):
    path = _config(tmp_path, "name: x\nfusion: " + "[" * 20000 + "]" * 20000 + "\n", "deep.yaml")
    _fails(capfd, ["validate", str(path)], "is nested too deeply to parse")
    path = _config(tmp_path, "name: x\nfusion: " + "[" * 40 + "]" * 40 + "\n", "deep40.yaml")
    _fails(capfd, ["validate", str(path)], "nests mappings and lists 41 levels deep")


def test_config_file_faults_name_the_file(tmp_path, capfd):
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    _fails(capfd, ["validate", str(tmp_path / "latin1.yaml")], "is not UTF-8 text")
    (tmp_path / "dir.yaml").mkdir()
    _fails(capfd, ["validate", str(tmp_path / "dir.yaml")], "is not a regular file")
    (tmp_path / "keys.yaml").write_text(SMALL + "1: one\n")
    _fails(capfd, ["validate", str(tmp_path / "keys.yaml")], "1: unknown key")
    path = _config(tmp_path)
    _fails(capfd, ["validate", str(path), "--set", "evaluation..cv=3"], "has an empty part")
    _fails(capfd, ["validate", str(path), "--set", "fusion.x=1"], "fusion is a list without named")


# -- class 6: validate loads the data and checks the config against it ------------------


def _manifest(tmp_path, **columns) -> Path:
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    pd.DataFrame(columns).to_csv(folder / "m.csv", index=False)
    return folder / "m.csv"


def _manifest_config(tmp_path, csv, task="classification", extra="", target="label"):
    """A manifest study; ``extra`` is added, or replaces the evaluation line when it is one
    (a key written twice is refused)."""
    evaluation = "evaluation: {cv: 3, bootstrap: 0}"
    if extra.startswith("evaluation:"):
        evaluation, extra = extra, ""
    text = f"""
name: mf
task: {task}
data: {{source: load_manifest, params: {{csv: {csv}}}, target: {target}}}
modalities:
  - {{name: labs, encoder: TabularEncoder, columns: [age]}}
fusion: [late]
{evaluation}
{extra}
"""
    return _config(tmp_path, text, "mf.yaml")


AGES = np.random.RandomState(0).normal(50, 10, 12).round()


@pytest.mark.parametrize(
    ("label", "task", "extra", "message"),
    [
        ([0, 1] * 6, "regression", "evaluation: {cv: 3, primary_metric: auroc}",
         "evaluation.primary_metric: expected a regression metric, one of ['mae'"),
        ([0, 1, 2] * 4, "classification", "evaluation: {cv: 3, primary_metric: auroc}",
         "evaluation.primary_metric: 'auroc' needs a binary target; this one has 3 classes"),
        ([0, 1] * 6, "classification", "evaluation: {cv: 13}",
         "evaluation.cv: 13 folds need at least 13 rows, found 12"),
        ([0] * 10 + [1] * 2, "classification", "",
         "evaluation.cv: 3 folds need at least 3 rows of every class; class 1 has 2; use cv <= 2"),
        ([0.5, 1.25] * 6, "classification", "",
         "the target has non-integer values such as [0.5, 1.25, 0.5]"),
        (["a", "b"] * 6, "regression", "",
         "a regression target must be numeric, found values such as ['a', 'b', 'a']"),
        ([0, 1] * 5 + [np.nan, 1], "classification", "",
         "data.target: column 'label' has no value in row(s) [10]"),
        ([1.0] * 11 + [np.inf], "regression", "", "values in row(s) [11] are not finite numbers"),
        ([1] * 12, "classification", "", "a classification study needs 2+ classes, found [1]"),
    ],
)  # fmt: skip
def test_validate_checks_target_task_metric_and_cv(tmp_path, capfd, label, task, extra, message):
    csv = _manifest(tmp_path, age=AGES, label=label)
    _fails(capfd, ["validate", str(_manifest_config(tmp_path, csv, task, extra))], message)


def test_validate_checks_columns_and_groups(tmp_path, capfd):
    csv = _manifest(tmp_path, age=AGES, label=[0, 1] * 6, pid=[1, 1, 2, 2] * 3)
    path = _manifest_config(tmp_path, csv, target="diagnosis")
    _fails(capfd, ["validate", str(path)], "data.target: column 'diagnosis' is not in the data")
    path = _manifest_config(tmp_path, csv)
    _fails(capfd, ["validate", str(path), "--set", "data.groups=patient"],
           "data.groups: column 'patient' is not in the data")  # fmt: skip
    _fails(capfd, ["validate", str(path), "--set", "data.groups=pid"],
           "evaluation.cv: 3 folds need at least 3 groups, found 2; use cv <= 2")  # fmt: skip
    _fails(capfd, ["validate", str(path), "--set", "modalities=[{name: labs, encoder: "
                   "TabularEncoder, columns: [age, crp]}]"],
           "modalities[0].columns: column(s) ['crp'] are not in the data")  # fmt: skip
    assert main(["validate", str(path)]) == 0
    assert "valid (classification, data load_manifest: 12 rows" in capfd.readouterr().out


def test_validate_refuses_duplicate_ids_with_conflicting_labels(tmp_path, capfd):
    pid = [f"p{i}" for i in range(11)] + ["p0"]
    csv = _manifest(tmp_path, pid=pid, age=AGES, label=[0, 1] * 6)
    path = _manifest_config(tmp_path, csv)
    _fails(capfd, ["validate", str(path), "--set", "data.params.id_column=pid"],
           "id 'p0' appears in rows [0, 11] with conflicting 'label' values [0, 1]")  # fmt: skip
    assert main(["validate", str(path)]) == 0  # without id_column no id is assumed


def test_validate_names_the_manifest_fault(tmp_path, capfd):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "m.csv").write_text("")
    path = _manifest_config(tmp_path, tmp_path / "data" / "m.csv")
    _fails(capfd, ["validate", str(path)], "load_manifest failed: manifest '")
    _fails(capfd, ["validate", str(path)], "m.csv' is empty (no header line)")


# -- class 6: a failed run is marked failed; config errors leave nothing ------------------


def test_config_error_found_at_run_leaves_no_folder(tmp_path, capfd):
    out = tmp_path / "runs"
    argv = ["run", str(_config(tmp_path)), "--out", str(out), "--quiet",
            "--set", "evaluation.cv=31"]  # fmt: skip
    _fails(capfd, argv, "evaluation.cv: 31 folds need at least 31 rows, found 30")
    assert not out.exists() or list(out.iterdir()) == []


def test_run_that_fails_is_marked_failed_with_the_error(tmp_path, capfd, monkeypatch):
    def boom(*args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(engine, "_execute", boom)
    out = tmp_path / "runs"
    line = _fails(
        capfd, ["run", str(_config(tmp_path)), "--out", str(out), "--quiet"],
        "mmtk: study failed: RuntimeError: disk on fire (run folder '", code=1,
    )  # fmt: skip
    assert "is marked failed" in line
    (run,) = list(out.iterdir())
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and status["error"] == "RuntimeError: disk on fire"
    failed = (run / "FAILED").read_text()
    assert "RuntimeError: disk on fire" in failed and "Traceback" in failed and "boom" in failed


def test_interrupted_run_is_marked_failed_and_reraised(tmp_path, capfd, monkeypatch):
    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "_execute", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_study(load_config(_config(tmp_path)), tmp_path / "runs", progress=False)
    (run,) = list((tmp_path / "runs").iterdir())
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    assert "KeyboardInterrupt" in (run / "FAILED").read_text()
    argv = ["run", str(_config(tmp_path)), "--out", str(tmp_path / "cli"), "--quiet"]
    _fails(capfd, argv, "mmtk: interrupted (a run folder already made is marked failed)", 130)


def test_terminated_run_is_marked_failed(tmp_path, monkeypatch):
    import signal

    def killed(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM did not arrive")

    monkeypatch.setattr(engine, "_execute", killed)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "runs"
    with pytest.raises(SystemExit) as exc:
        main(["run", str(_config(tmp_path)), "--out", str(out), "--quiet"])
    assert exc.value.code == 143
    assert signal.getsignal(signal.SIGTERM) is before
    (run,) = list(out.iterdir())
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    assert "Terminated: 143" in (run / "FAILED").read_text()


def test_finished_run_is_marked_complete(tmp_path):
    run = run_study(load_config(_config(tmp_path)), tmp_path / "runs", progress=False)
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    assert not (run / "FAILED").exists()
    assert (run / "metrics.json").is_file() and len(list((run / "folds").iterdir())) == 3


# -- class 6: --scheduler that is not a Dask scheduler ----------------------------------


def _scheduler_fails(tmp_path, capfd, address, message):
    out = tmp_path / "runs"
    argv = ["run", str(_config(tmp_path)), "--out", str(out), "--quiet",
            "--scheduler", address, "--scheduler-timeout", "0.5"]  # fmt: skip
    start = time.perf_counter()
    line = _fails(capfd, argv, message)
    assert time.perf_counter() - start < 10
    assert not out.exists() or list(out.iterdir()) == []
    return line


def test_unreachable_scheduler_is_one_line_and_fast(tmp_path, capfd):
    pytest.importorskip("distributed")
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    line = _scheduler_fails(
        tmp_path, capfd, f"tcp://127.0.0.1:{port}", f"--scheduler tcp://127.0.0.1:{port}: not a "
        "reachable Dask scheduler (OSError: Timed out trying to connect"
    )  # fmt: skip
    assert "drop --scheduler" in line


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("http://127.0.0.1:8786", "not a reachable Dask scheduler (ValueError: unknown address "
                                  "scheme 'http'"),
        ("localhost", "not a reachable Dask scheduler (ValueError: missing port number"),
    ],
)  # fmt: skip
def test_scheduler_address_dask_cannot_use(tmp_path, capfd, address, message):
    pytest.importorskip("distributed")
    _scheduler_fails(tmp_path, capfd, address, message)


def test_server_that_is_not_a_dask_scheduler(tmp_path, capfd):
    pytest.importorskip("distributed")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]

    def answer():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nhello")
            conn.close()

    threading.Thread(target=answer, daemon=True).start()
    try:
        _scheduler_fails(
            tmp_path, capfd, f"tcp://127.0.0.1:{port}", "not a reachable Dask scheduler"
        )
    finally:
        server.close()


def test_scheduler_without_dask_installed(tmp_path, capfd, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # import fails
    line = _scheduler_fails(tmp_path, capfd, "tcp://127.0.0.1:8786", "dask.distributed is not")
    assert "install the 'distributed' extra" in line


def test_scheduler_timeout_is_bounded():
    with pytest.raises(engine.SchedulerError, match=r"--scheduler-timeout: expected seconds"):
        engine.connect_scheduler("tcp://127.0.0.1:1", timeout=0)
    with pytest.raises(engine.SchedulerError, match=r"--scheduler-timeout: expected seconds"):
        engine.connect_scheduler("tcp://127.0.0.1:1", timeout=True)
    assert engine.SCHEDULER_TIMEOUT == 5.0


def test_scan_settings_too_large_are_refused_at_validate_and_create_no_folder(tmp_path, capfd):
    text = SMALL.replace(
        "  - {name: text, encoder: TextEncoder, columns: transcript, params: {n_components: 4}}",
        "  - {name: face, encoder: ScanEncoder, columns: face, "
        "params: {spatial_size: [4096, 4096, 4096]}}",
    )
    path = _config(tmp_path, text)
    line = _fails(capfd, ["validate", str(path)], "modalities[0].params: spatial_size=")
    assert "above the max_resampled_voxels=33,554,432 limit" in line
    _fails(capfd, ["run", str(path), "--out", str(tmp_path / "out")], "modalities[0].params")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_relative_weights_path_resolves_against_the_config_folder(tmp_path, monkeypatch):
    """A config's relative ``weights:`` names the file beside the config, from any working
    directory (it was resolved against the working directory); a relative ``model`` is
    resolved only when that folder exists beside the config (else it may be a hub id)."""
    from toolkit.study.config import resolve_encoder_paths
    from toolkit.study.data import load_study_data

    study = tmp_path / "study"
    study.mkdir()
    (study / "w.pt").write_bytes(b"")
    text = SMALL.replace(
        "params: {n_components: 4}}",
        "params: {n_components: 4}}\n  - {name: face, encoder: ImageEncoder, columns: face, "
        "params: {backend: torchvision, model: mobilenet_v3_small, weights: w.pt}}",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(_config(study, text))
    modalities = load_study_data(config)[3]
    assert dict((name, enc) for name, enc, _ in modalities)["face"].weights == str(study / "w.pt")
    assert config.to_dict()["modalities"][1]["params"]["weights"] == "w.pt"  # as written
    assert resolve_encoder_paths(config, {"model": "org/model-id"}) == {"model": "org/model-id"}
    (study / "local_model").mkdir()
    got = resolve_encoder_paths(config, {"model": "local_model", "weights": str(tmp_path / "a")})
    assert got == {"model": str(study / "local_model"), "weights": str(tmp_path / "a")}
    # a model folder of the working directory only would change with it: refused
    (elsewhere / "models" / "bert").mkdir(parents=True)
    with pytest.raises(ValueError, match="'models/bert' is a folder of the working directory"):
        resolve_encoder_paths(config, {"model": "models/bert"})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("{spatial_size: [1024, 1024, 1024], max_resampled_voxels: 1099511627776}",
         "modalities[1].params: max_resampled_voxels=1099511627776 is above the limit "
         "max_resampled_voxels=33,554,432 voxels; a config cannot raise it"),
        ("{max_resampled_voxels: 1099511627776}",
         "max_resampled_voxels=1099511627776 is above the limit max_resampled_voxels"),
        ("{batch_size: 100000000}", "batch_size=100000000 is above the limit max_batch_size"),
    ],
)  # fmt: skip
def test_a_configs_encoder_sizes_are_held_to_the_load_limits(tmp_path, capfd, params, message):
    """A config set an encoder's sizes (a 1024^3 grid for 8^3 scans, a file's own voxel
    limit) and validate passed; run then ran out of memory."""
    text = (
        SMALL.replace(
            "data: {source: make_sentiment_clips, params: {n_samples: 30, text_strength: 3}, "
            "target: label}",
            "data: {source: make_clinical_cohort, params: {n_samples: 30, scan_size: 8}, "
            "target: diagnosis}",
        )
        .replace(
            "params: {n_components: 4}}",
            "params: {n_components: 4}}\n  - {name: scan, encoder: ScanEncoder, columns: scan, "
            f"params: {params}}}",
        )
        .replace("columns: transcript", "columns: note")
    )
    _fails(capfd, ["validate", str(_config(tmp_path, text))], message)
