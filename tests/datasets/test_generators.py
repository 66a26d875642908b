"""Generators: the ground truth they claim holds, and written files round-trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GroupShuffleSplit

from toolkit import MultimodalClassifier
from toolkit.datasets import load_manifest, make_clinical_cohort, make_sentiment_clips
from toolkit.io import read_audio, read_image, read_scan


def _single_scores(data, train, test, fusion="early"):
    scores = {}
    for name, enc, col in data.modalities:
        clf = MultimodalClassifier([(name, enc, col)], fusion=fusion, random_state=0)
        clf.fit(data.frame.iloc[train], data.target[train])
        scores[name] = clf.score(data.frame.iloc[test], data.target[test])
    return scores


@pytest.mark.parametrize("informative", ["text", "audio", "face"])
def test_sentiment_signal_only_where_informative(informative):
    data = make_sentiment_clips(
        300,
        informative=(informative,),
        text_strength=3,
        audio_strength=3,
        face_strength=3,
        random_state=1,
    )
    scores = _single_scores(data, np.arange(200), np.arange(200, 300))
    assert scores[informative] >= 0.8, scores
    for name, score in scores.items():
        if name != informative:
            assert 0.35 <= score <= 0.65, scores  # chance level
    assert (data.frame[f"signal_{informative}"] != 0).all()
    assert all(
        (data.frame[f"signal_{m}"] == 0).all()
        for m in ("text", "audio", "face")
        if m != informative
    )


def test_sentiment_score_range_conflict_and_missing():
    data = make_sentiment_clips(200, conflict_rate=0.5, missing_rate=0.3, random_state=0)
    assert data.score.min() >= -3 and data.score.max() <= 3
    assert np.array_equal(data.target, (data.score > 0).astype(int))
    assert 0.35 < data.frame["conflict"].mean() < 0.65
    cells = data.frame[["transcript", "audio", "face"]].isna()
    assert 0.2 < cells.to_numpy().mean() < 0.4
    assert not cells.all(axis=1).any()


def test_clinical_signal_only_where_informative():
    data = make_clinical_cohort(
        240, informative=("note",), strength=2.5, noise=0.3, scan_size=16, random_state=0
    )
    train, test = next(
        GroupShuffleSplit(1, test_size=0.4, random_state=0).split(
            data.frame, data.target, data.groups
        )
    )
    scores = _single_scores(data, train, test, fusion="late")
    prior = max(data.target[test].mean(), 1 - data.target[test].mean())
    assert scores["note"] >= prior + 0.15, scores
    for name in ("clinical", "scan"):
        assert scores[name] <= prior + 0.08, scores


def test_clinical_groups_visits_and_prevalence():
    data = make_clinical_cohort(300, prevalence=0.3, scan_size=8, random_state=0)
    frame = data.frame
    assert 0.2 < data.target.mean() < 0.4
    assert frame["patient_id"].nunique() < 300
    # The diagnosis is a property of the patient: identical across their visits.
    assert (frame.groupby("patient_id")["diagnosis"].nunique() == 1).all()
    assert frame[["crp", "wbc", "lactate"]].isna().to_numpy().mean() > 0.01


def test_sentiment_files_round_trip(tmp_path):
    data = make_sentiment_clips(6, missing_rate=0.2, output_dir=tmp_path, random_state=0)
    manifest = load_manifest(tmp_path / "manifest.csv", target="label")
    assert set(manifest.path_columns) == {"audio", "face"}
    original = make_sentiment_clips(6, missing_rate=0.2, random_state=0).frame
    for i in range(6):
        if original["audio"][i] is not None:
            wave, sr = read_audio(manifest.frame["audio"][i])
            assert sr == 8000
            np.testing.assert_allclose(wave, original["audio"][i][0], atol=1 / 32767 + 1e-6)
        else:
            assert pd.isna(manifest.frame["audio"][i])
        if original["face"][i] is not None:
            img = read_image(manifest.frame["face"][i])
            np.testing.assert_allclose(img[:, :, 0], original["face"][i], atol=1 / 255 + 1e-6)
    assert list(manifest.target) == list(data.target)


def test_clinical_files_round_trip(tmp_path):
    data = make_clinical_cohort(
        4, include_xray=True, scan_size=12, output_dir=tmp_path, random_state=0
    )
    original = make_clinical_cohort(4, include_xray=True, scan_size=12, random_state=0).frame
    manifest = load_manifest(tmp_path / "manifest.csv", target="diagnosis")
    assert {"scan", "xray"} <= set(manifest.path_columns)
    from toolkit.io.scan import load_scan

    vol = np.asarray(load_scan(manifest.frame["scan"][0])[0])
    np.testing.assert_allclose(vol, original["scan"][0], atol=1e-6)
    assert read_scan(manifest.frame["scan"][1], spatial_size=(8, 8, 8)).shape == (8, 8, 8)
    assert read_image(manifest.frame["xray"][0]).shape == (12 * 0 + 32, 32, 1)
    assert list(manifest.target) == list(data.target)


def test_clinical_patients_keep_their_age_and_sex_across_visits():
    """Age and sex are drawn per patient (review finding 4): every visit of a patient has
    the first visit's, and both still vary between patients."""
    frame = make_clinical_cohort(300, scan_size=8, random_state=0).frame
    per_patient = frame.groupby("patient_id")[["age", "sex"]].nunique()
    assert (per_patient == 1).all().all()
    assert frame.groupby("patient_id").size().max() == 3  # multi-visit patients exist
    first = frame.drop_duplicates("patient_id")
    assert first["sex"].value_counts().min() > 0.35 * len(first)
    assert first["age"].std() > 10


def test_clinical_files_keep_missing_items_missing(tmp_path):
    """A missing scan or X-ray (missing_rate) is written as an empty manifest cell, with
    no file, and reads back as missing; the present ones round-trip in their rows."""
    kwargs = {"include_xray": True, "scan_size": 8, "xray_size": 8, "missing_rate": 0.3}
    original = make_clinical_cohort(20, random_state=0, **kwargs).frame
    data = make_clinical_cohort(20, output_dir=tmp_path, random_state=0, **kwargs)
    manifest = load_manifest(tmp_path / "manifest.csv", target="diagnosis")
    assert {"scan", "xray"} <= set(manifest.path_columns)
    raw = pd.read_csv(tmp_path / "manifest.csv", keep_default_na=False)
    for col, suffix in (("scan", "nii.gz"), ("xray", "png")):
        missing = original[col].isna().to_numpy()
        assert 0 < missing.sum() < 20  # the seed gives both present and missing items
        assert data.frame[col].isna().tolist() == missing.tolist()
        assert all(data.frame[col][i] is None for i in np.flatnonzero(missing))
        assert raw[col].eq("").tolist() == missing.tolist()
        assert manifest.frame[col].isna().tolist() == missing.tolist()
        assert len(list(tmp_path.glob(f"{col}_*.{suffix}"))) == (~missing).sum()
    present = int(np.flatnonzero(original["scan"].notna())[0])
    from toolkit.io.scan import load_scan

    vol = np.asarray(load_scan(manifest.frame["scan"][present])[0])
    np.testing.assert_allclose(vol, original["scan"][present], atol=1e-6)
    assert manifest.frame["note"].isna().tolist() == original["note"].isna().tolist()


def test_manifest_reports_missing_files(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x")
    pd.DataFrame({"audio": ["a.wav", "b.wav"], "y": [0, 1]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(FileNotFoundError, match="column 'audio' names 1 missing file"):
        load_manifest(tmp_path / "m.csv", path_columns=["audio"])
    with pytest.raises(FileNotFoundError, match="manifest '.*nope.csv' does not exist"):
        load_manifest(tmp_path / "nope.csv")


def test_generator_argument_errors():
    with pytest.raises(ValueError, match="informative must be a non-empty subset"):
        make_sentiment_clips(10, informative=("smell",))
    with pytest.raises(
        ValueError, match=r"prevalence must be a finite number in \(0, 1\), got 1.5"
    ):
        make_clinical_cohort(10, prevalence=1.5)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"n_samples": 0}, ValueError, r"n_samples must be an integer >= 1, got 0"),
        ({"n_samples": -5}, ValueError, r"n_samples must be an integer >= 1, got -5"),
        ({"n_samples": 10.0}, TypeError, r"n_samples must be an integer >= 1, got 10.0 \(float\)"),
        ({"n_samples": True}, TypeError, r"n_samples must be an integer >= 1, got True \(bool\)"),
        ({"sample_rate": -8000}, ValueError, r"sample_rate must be an integer >= 1, got -8000"),
        ({"duration": -0.6}, ValueError, r"duration must be a finite number > 0, got -0.6"),
        ({"duration": 0}, ValueError, r"duration must be a finite number > 0, got 0"),
        ({"duration": 1e-5}, ValueError, r"duration must give at least one sample at sample_rate"),
        ({"image_size": 0}, ValueError, r"image_size must be an integer >= 8, got 0"),
        ({"noise": -1}, ValueError, r"noise must be a finite number >= 0, got -1"),
        (
            {"missing_rate": 1.5},
            ValueError,
            r"missing_rate must be a finite number in \[0, 1\], got 1.5",
        ),
        ({"text_strength": float("nan")}, ValueError, r"text_strength must be a finite number"),
    ],
)
def test_sentiment_negative_lengths_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        make_sentiment_clips(**{"n_samples": 4, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"n_samples": -1}, ValueError, r"n_samples must be an integer >= 2, got -1"),
        ({"n_samples": 1}, ValueError, r"n_samples must be an integer >= 2, got 1"),
        ({"scan_size": -32}, ValueError, r"scan_size must be an integer >= 8, got -32"),
        ({"scan_size": 16.5}, TypeError, r"scan_size must be an integer >= 8, got 16.5"),
        ({"xray_size": 0, "include_xray": True}, ValueError, r"xray_size must be an integer >= 8"),
        (
            {"visits_per_patient": 0.5},
            ValueError,
            r"visits_per_patient must be a finite number in \[1, 3\], got 0.5",
        ),
        ({"strength": -1.0}, ValueError, r"strength must be a finite number >= 0, got -1.0"),
        ({"include_xray": 1}, TypeError, r"include_xray must be True or False, got 1"),
        (
            {"prevalence": True},
            TypeError,
            r"prevalence must be a number in \(0, 1\), got True \(bool\)",
        ),
    ],
)
def test_clinical_negative_lengths_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        make_clinical_cohort(**{"n_samples": 4, "scan_size": 8, **kwargs})


def test_informative_may_be_one_name():
    data = make_sentiment_clips(4, informative="face", random_state=0)
    assert data.informative == ["face"]
    assert (data.frame["signal_text"] == 0).all() and (data.frame["signal_face"] != 0).all()
