"""Real-data loaders against the numbers in the shared data README (skip when absent)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from toolkit.datasets import (
    load_av_digits,
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
    def split(n):
        return {
            "text": rng.normal(size=(n, 6, 4)).astype(np.float32),
            "audio": np.concatenate(
                [np.zeros((n, 2, 3)), rng.normal(size=(n, 3, 3))], axis=1
            ).astype(np.float32),
            "vision": rng.normal(size=(n, 5, 2)).astype(np.float32),
            "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
            "id": [f"vid_{i}" for i in range(n)],
            "audio_lengths": [3] * n,
            "vision_lengths": [5] * n,
        }

    with open(path, "wb") as fh:
        pickle.dump({"train": split(8), "valid": split(3), "test": split(4)}, fh)


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
