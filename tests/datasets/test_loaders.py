"""Real-data loaders against the numbers in the shared data README (skip when absent)."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit.datasets import (
    load_av_digits,
    load_manifest,
    load_mimic_iv_demo,
    load_mmsa_features,
    load_pneumoniamnist,
    load_speech_emotion,
    load_uci_sentences,
)
from toolkit.datasets.loaders import data_home


def test_av_digits_counts_and_unseen_speakers(real_data):
    data = load_av_digits(real_data)
    frame = data.frame
    assert len(frame) == 3000 and frame["speaker"].nunique() == 6
    assert (frame["label"].value_counts() == 300).all()
    train, test = frame[frame.split == "train"], frame[frame.split == "test"]
    assert len(train) == 2000 and len(test) == 1000
    assert not set(train["speaker"]) & set(test["speaker"])
    assert frame["image"][0].shape == (8, 8)
    # Images are paired by label: a nearest-mean classifier on images recovers it.
    means = np.stack(
        [
            np.mean([im for im, y in zip(frame.image, frame.label, strict=True) if y == d], axis=0)
            for d in range(10)
        ]
    )
    guess = [np.argmin(((means - im) ** 2).sum(axis=(1, 2))) for im in frame.image[:300]]
    assert np.mean(np.array(guess) == frame.label[:300].to_numpy()) > 0.8


def test_av_digits_noise_is_seeded(real_data):
    a = load_av_digits(real_data, image_noise=4.0, random_state=1).frame["image"][0]
    b = load_av_digits(real_data, image_noise=4.0, random_state=1).frame["image"][0]
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"test_speakers \['nobody'\]"):
        load_av_digits(real_data, test_speakers=("nobody",))


def test_uci_sentences(real_data):
    data = load_uci_sentences(real_data)
    assert len(data.frame) == 3000
    counts = data.frame.groupby(["source", "label"]).size()
    assert (counts == 500).all()


def test_speech_emotion(real_data):
    data = load_speech_emotion(real_data)
    assert len(data.frame) == 47
    assert data.frame[["arousal", "valence"]].abs().max().max() <= 1.0


def test_pneumoniamnist(real_data):
    data = load_pneumoniamnist(real_data)
    sizes = data.frame["split"].value_counts().to_dict()
    assert sizes == {"train": 3882, "val": 524, "test": 624}
    train = data.frame[data.frame.split == "train"]
    assert (train["label"] == 0).sum() == 388 and (train["label"] == 1).sum() == 3494
    assert data.frame["image"][0].shape == (28, 28)


def test_mimic_iv_demo(real_data):
    data = load_mimic_iv_demo(real_data)
    frame = data.frame
    assert len(frame) == 275 and frame["subject_id"].nunique() == 100
    assert data.target.sum() == 15
    assert (frame["age"] >= 18).all()
    long_stay = load_mimic_iv_demo(real_data, task="long_stay")
    assert long_stay.target.sum() == int((frame["los_days"] > 7).sum())


def test_missing_folder_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("TOOLKIT_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="set TOOLKIT_DATA_DIR"):
        data_home(None, "fsdd")
    with pytest.raises(FileNotFoundError, match=r"dataset folder '.*fsdd' does not exist"):
        load_av_digits(tmp_path)
    monkeypatch.setenv("TOOLKIT_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="uci_sentences"):
        load_uci_sentences()


def _mmsa_file(path, rng):
    def split(n, name):
        return {
            "text": rng.normal(size=(n, 6, 4)).astype(np.float32),
            "audio": np.concatenate(
                [np.zeros((n, 2, 3)), rng.normal(size=(n, 3, 3))], axis=1
            ).astype(np.float32),
            "vision": rng.normal(size=(n, 5, 2)).astype(np.float32),
            "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
            "id": [f"{name}_vid_{i}" for i in range(n)],  # ids are unique across splits
            "audio_lengths": [3] * n,
            "vision_lengths": [5] * n,
        }

    with open(path, "wb") as fh:
        pickle.dump(
            {"train": split(8, "train"), "valid": split(3, "valid"), "test": split(4, "test")}, fh
        )


def test_mmsa_features_layout(tmp_path):
    path = tmp_path / "unaligned_50.pkl"
    _mmsa_file(path, np.random.default_rng(0))
    data = load_mmsa_features(path)
    frame = data.frame
    assert frame["split"].value_counts().to_dict() == {"train": 8, "test": 4, "valid": 3}
    assert frame["audio"][0].shape == (3, 3)  # front padding trimmed to audio_lengths
    assert frame["text"][0].shape == (6, 4)
    assert np.array_equal(frame["label"], (frame["score"] > 0).astype(int))
    from toolkit import MultimodalRegressor

    reg = MultimodalRegressor(data.modalities, fusion="late", random_state=0)
    reg.fit(frame[frame.split == "train"], data.target[frame.split == "train"])
    assert reg.predict(frame[frame.split == "test"]).shape == (4,)


def test_mmsa_loader_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"train": Evil()}, fh)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load 'builtins.print'"):
        load_mmsa_features(path)


# -- manifests: paths, duplicates and file faults (trust classes 5, 7, 8) ---------------


def _csv(folder, **columns):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.csv"
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


def test_manifest_paths_resolve_against_its_folder_not_the_cwd(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "clips").mkdir(parents=True)
    for name in ("a.wav", "b.wav"):
        (data / "clips" / name).write_bytes(b"x")
    _csv(data, audio=["clips/a.wav", "clips/b.wav"], y=[0, 1])
    (tmp_path / "clips").mkdir()  # a decoy beside the working directory
    (tmp_path / "clips" / "a.wav").write_bytes(b"decoy")
    monkeypatch.chdir(tmp_path)
    for given in ("data/m.csv", data / "m.csv"):
        manifest = load_manifest(given)
        assert manifest.path_columns == ["audio"]
        assert manifest.frame["audio"].tolist() == [
            str(data.absolute() / "clips" / "a.wav"),
            str(data.absolute() / "clips" / "b.wav"),
        ]
    monkeypatch.chdir(data / "clips")  # relative to the new cwd the files would not exist
    moved = load_manifest(data / "m.csv", path_columns=["audio"])
    assert Path(moved.frame["audio"][0]).read_bytes() == b"x"


def test_manifest_missing_file_names_the_row(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x")
    path = _csv(tmp_path, audio=["a.wav", "gone.wav"], y=[0, 1])
    with pytest.raises(FileNotFoundError, match=r"names 1 missing file\(s\), e.g. row 1: '.*gone"):
        load_manifest(path, path_columns=["audio"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"manifest '.*m.csv' is empty \(no header line\); write a header row"),
        (b"audio,label\n", r"manifest '.*m.csv' has a header but no rows"),
        (
            b"note,label\ncaf\xe9,1\n",
            r"manifest '.*m.csv' is not UTF-8 text \(undecodable byte e9\)",
        ),
        (b"a,b\n1,2\n3,4,5,6\n", r"manifest '.*m.csv' could not be read as CSV: Error tokenizing"),
        (b"age,age,label\n1,2,0\n", r"manifest '.*m.csv' names column 'age' twice"),
    ],
)
def test_manifest_file_faults_name_the_file(tmp_path, content, message):
    (tmp_path / "m.csv").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_manifest(tmp_path / "m.csv")


def test_manifest_that_is_not_a_regular_file_is_never_opened(tmp_path):
    import os

    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(ValueError, match=r"manifest '.*folder.csv' is not a regular file"):
        load_manifest(tmp_path / "folder.csv")
    os.mkfifo(tmp_path / "fifo.csv")  # opening it would block this test
    with pytest.raises(ValueError, match=r"manifest '.*fifo.csv' is not a regular file"):
        load_manifest(tmp_path / "fifo.csv")


@pytest.mark.parametrize(
    ("cells", "shown"),
    [([1, 2], "1 (int)"), ([1.5, 2.5], "1.5 (float)"), ([True, False], "True (bool)")],
)
def test_manifest_path_cell_that_is_not_text_names_the_row(tmp_path, cells, shown):
    path = _csv(tmp_path, audio=cells, y=[0, 1])
    with pytest.raises(
        ValueError,
        match=rf"manifest '.*m.csv', column 'audio', row 0: expected a file path \(text\), "
        rf"found {re.escape(shown)}; write the path as text",
    ):
        load_manifest(path, path_columns="audio")
    # Auto-detection never takes a numeric column for paths, and does not fail on it.
    assert load_manifest(path).path_columns == []


def test_manifest_mixed_path_column_names_the_missing_row(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x")
    path = _csv(tmp_path, audio=["a.wav", 5, None], y=[0, 1, 0])
    with pytest.raises(FileNotFoundError, match=r"names 1 missing file\(s\), e.g. row 1: '.*5'"):
        load_manifest(path, path_columns=["audio"])


def test_manifest_duplicate_ids_with_conflicting_labels_are_refused(tmp_path):
    path = _csv(tmp_path, pid=["p1", "p2", "p1", "p3", "p3"], label=[0, 1, 1, 0, 0])
    with pytest.raises(
        ValueError,
        match=r"id 'p1' appears in rows \[0, 2\] with conflicting 'label' values \[0, 1\]; "
        "correct the labels",
    ):
        load_manifest(path, target="label", id_column="pid")
    agreeing = _csv(tmp_path / "ok", pid=["p1", "p1", "p2"], label=[1, 1, 0])
    assert load_manifest(agreeing, target="label", id_column="pid").target.tolist() == [1, 1, 0]
    two = _csv(tmp_path / "two", pid=[7, 7, 8, 8], label=["a", "b", "a", "b"])
    with pytest.raises(ValueError, match=r"id 7 appears .* \(1 more id\(s\) conflict\)"):
        load_manifest(two, target="label", id_column="pid")


def test_manifest_ids_must_be_present(tmp_path):
    path = _csv(tmp_path, pid=["p1", None, "p3"], label=[0, 1, 0])
    with pytest.raises(ValueError, match=r"id column 'pid' is empty in row\(s\) \[1\]"):
        load_manifest(path, target="label", id_column="pid")
    with pytest.raises(ValueError, match=r"id column 'visit' is not in manifest"):
        load_manifest(path, id_column="visit")


def test_speech_emotion_empty_table_names_the_file(tmp_path):
    folder = tmp_path / "speech_emotion"
    folder.mkdir()
    (folder / "arousal.csv").write_text("")
    (folder / "valence.csv").write_text("a.wav,0.5\n")
    with pytest.raises(ValueError, match=r"speech emotion table '.*arousal.csv' is empty"):
        load_speech_emotion(tmp_path)


def test_mimic_truncated_table_names_the_file(tmp_path):
    hosp = tmp_path / "mimic_iv_demo" / "hosp"
    hosp.mkdir(parents=True)
    for name in ("admissions", "patients", "labevents", "d_labitems"):
        (hosp / f"{name}.csv.gz").write_bytes(b"\x1f\x8b\x08\x00broken")
    with pytest.raises(ValueError, match=r"MIMIC-IV table '.*admissions.csv.gz' is truncated"):
        load_mimic_iv_demo(tmp_path)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda d: load_av_digits(d, image_noise=-1.0),
            r"image_noise must be a finite number >= 0",
        ),
        (lambda d: load_av_digits(d, audio_noise=float("nan")), r"audio_noise must be a finite"),
        (
            lambda d: load_mimic_iv_demo(d, lab_window_hours=0),
            r"lab_window_hours must be a finite number > 0",
        ),  # noqa: E501
        (lambda d: load_mimic_iv_demo(d, lab_window_hours=-24), r"lab_window_hours .* got -24"),
        (lambda d: load_uci_sentences(d, sources=()), r"sources must name at least one of"),
        (lambda d: load_pneumoniamnist(d, splits=[]), r"splits must name at least one of"),
    ],
)
def test_loader_negative_or_empty_arguments_are_refused(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(tmp_path)  # refused before the (absent) data folder is looked at


def test_uci_sentences_file_that_is_not_utf8_names_file_and_line(tmp_path):
    folder = tmp_path / "uci_sentences"
    folder.mkdir()
    (folder / "amazon_cells_labelled.txt").write_bytes(b"good phone\t1\nbad caf\xe9\t0\n")
    with pytest.raises(
        ValueError, match=r"amazon_cells_labelled.txt:2: byte b'\\xe9' is not UTF-8"
    ):
        load_uci_sentences(tmp_path, sources=("amazon",))
    (folder / "amazon_cells_labelled.txt").write_bytes(b"good phone\t1\nbad cafe\t0\n")
    data = load_uci_sentences(tmp_path, sources=("amazon",))
    assert data.frame["sentence"].tolist() == ["good phone", "bad cafe"]
