"""The bad-input matrix: every case raises a clear error (type, what, where, what to do)
or, with on_error="missing", marks exactly that item missing and reports it.

docs/reliability.md lists these cases with their outcomes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from toolkit import (
    AudioEncoder,
    ImageEncoder,
    MultimodalClassifier,
    MultimodalRegressor,
    ScanEncoder,
    TabularEncoder,
    TextEncoder,
)
from toolkit.encoders.base import MissingItemsWarning
from toolkit.exceptions import MissingModalityError, ReadError
from toolkit.io import read_audio, read_image, read_scan


@pytest.fixture
def files(tmp_path):
    """Real small files of every kind, good and bad."""
    t = np.arange(8000) / 8000
    tone = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    out = {}
    out["wav"] = tmp_path / "ok.wav"
    sf.write(out["wav"], tone, 8000, subtype="PCM_16")
    out["stereo"] = tmp_path / "stereo.wav"
    sf.write(out["stereo"], np.stack([tone, tone], axis=1), 8000, subtype="PCM_16")
    out["odd_rate"] = tmp_path / "odd.wav"
    sf.write(out["odd_rate"], tone[:5000], 11025, subtype="PCM_16")
    raw = out["wav"].read_bytes()
    out["truncated_wav"] = tmp_path / "truncated.wav"
    out["truncated_wav"].write_bytes(raw[:30])
    out["corrupt_wav"] = tmp_path / "corrupt.wav"
    out["corrupt_wav"].write_bytes(b"RIFF" + bytes(range(200)))
    out["empty_wav"] = tmp_path / "empty.wav"
    out["empty_wav"].write_bytes(b"")
    out["png_as_wav"] = tmp_path / "picture.wav"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "pic.png")
    out["png_as_wav"].write_bytes((tmp_path / "pic.png").read_bytes())
    out["grey"] = tmp_path / "grey.png"
    Image.fromarray(np.full((6, 6), 128, np.uint8)).save(out["grey"])
    out["rgba"] = tmp_path / "rgba.png"
    Image.fromarray(np.full((6, 6, 4), 200, np.uint8), mode="RGBA").save(out["rgba"])
    out["png16"] = tmp_path / "sixteen.png"
    Image.fromarray(np.full((6, 6), 40000, np.uint16)).save(out["png16"])
    out["huge"] = tmp_path / "huge.png"
    Image.new("L", (10_000, 10_000)).save(out["huge"])
    import nibabel as nib

    out["nifti"] = tmp_path / "vol.nii.gz"
    nib.save(
        nib.Nifti1Image(
            np.random.default_rng(0).random((12, 12, 12)).astype(np.float32), np.eye(4)
        ),
        out["nifti"],
    )
    out["truncated_nifti"] = tmp_path / "cut.nii"
    nib.save(
        nib.Nifti1Image(
            np.random.default_rng(0).random((12, 12, 12)).astype(np.float32), np.eye(4)
        ),
        tmp_path / "full.nii",
    )
    out["truncated_nifti"].write_bytes((tmp_path / "full.nii").read_bytes()[:600])
    out["text_nifti"] = tmp_path / "notes.nii.gz"
    out["text_nifti"].write_text("not a scan")
    return out


def _frame(n=40, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    df = pd.DataFrame(
        {"note": [f"felt {w}" for w in np.array(["good", "bad"])[y]], "age": rng.normal(50, 5, n)}
    )
    return df, y


MODS = [("text", TextEncoder(n_components=2), "note"), ("clinical", TabularEncoder(), ["age"])]


# -- audio -------------------------------------------------------------------------------


def test_corrupt_wav(files):
    with pytest.raises(
        ReadError, match=r"corrupt\.wav' could not be decoded as audio.*WAV, FLAC or OGG"
    ):
        read_audio(files["corrupt_wav"])


def test_empty_wav(files):
    with pytest.raises(
        ReadError, match=r"empty\.wav' is empty \(0 bytes\); re-export or remove it"
    ):
        read_audio(files["empty_wav"])


def test_truncated_wav(files):
    with pytest.raises(ReadError, match=r"truncated\.wav' could not be decoded"):
        read_audio(files["truncated_wav"])


def test_wrongly_named_audio(files):
    with pytest.raises(ReadError, match=r"picture\.wav' could not be decoded"):
        read_audio(files["png_as_wav"])


def test_zero_length_waveform():
    with pytest.raises(ReadError, match="zero-length"):
        read_audio((np.zeros(0, np.float32), 8000))


def test_non_finite_waveform():
    with pytest.raises(ReadError, match="NaN or infinite samples"):
        read_audio((np.array([0.0, np.nan], np.float32), 8000))


def test_bad_sample_rate():
    with pytest.raises(ReadError, match="sample rate must be a positive integer, got 0"):
        read_audio((np.zeros(10), 0))


def test_stereo_is_mixed_to_mono(files):
    wave, sr = read_audio(files["stereo"])
    assert wave.ndim == 1 and sr == 8000


def test_unusual_sample_rate_is_resampled(files):
    wave, sr = read_audio(files["odd_rate"], sample_rate=16000)
    assert sr == 16000 and abs(len(wave) - round(5000 * 16000 / 11025)) <= 2


def test_missing_audio_path_names_row_and_column(files):
    items = pd.Series([str(files["wav"]), "/nowhere/clip.wav"], name="voice")
    with pytest.raises(
        FileNotFoundError,
        match=r"row 1 of column 'voice': audio file '/nowhere/clip.wav' does not exist.*on_error='missing'",
    ):
        AudioEncoder().fit(items).transform(items)


def test_unreadable_audio_marked_missing_with_summary(files):
    items = pd.Series([str(files["wav"]), str(files["corrupt_wav"]), None], name="voice")
    with pytest.warns(
        MissingItemsWarning,
        match=r"1 unreadable audio item\(s\) in column 'voice' were marked missing: row 1",
    ):
        _, available = AudioEncoder(on_error="missing").fit(items).encode(items)
    assert available.tolist() == [True, False, False]


# -- images ------------------------------------------------------------------------------


def test_grey_rgba_and_16_bit_images(files):
    assert read_image(files["grey"]).shape == (6, 6, 1)
    assert read_image(files["rgba"]).shape == (6, 6, 3)
    assert np.allclose(read_image(files["png16"]), 40000 / 65535)


def test_4d_image_array():
    with pytest.raises(ReadError, match="got 4 dimensions; pass one image per cell"):
        read_image(np.zeros((2, 2, 2, 2)))


def test_absurd_image_size_refused(files):
    with pytest.raises(
        ReadError, match="10000x10000 pixels, above the 50,000,000 pixel limit; downscale it"
    ):
        read_image(files["huge"])


def test_non_numeric_image_array():
    with pytest.raises(ReadError, match="expected a numeric array"):
        read_image(np.array([["a", "b"], ["c", "d"]]))


def test_image_wrong_channel_count():
    with pytest.raises(ReadError, match="last axis must hold 1, 3 or 4 channels"):
        read_image(np.zeros((4, 4, 7)))


# -- scans -------------------------------------------------------------------------------


def test_truncated_nifti(files):
    with pytest.raises(ReadError, match=r"cut\.nii' could not be read as a scan"):
        read_scan(files["truncated_nifti"])


def test_text_file_named_nifti(files):
    with pytest.raises(ReadError, match=r"notes\.nii\.gz' could not be read as a scan"):
        read_scan(files["text_nifti"])


def test_2d_array_where_volume_expected():
    with pytest.raises(
        ReadError, match="expected a 3-D volume of shape \\(D, H, W\\), got 2 dimensions"
    ):
        read_scan(np.zeros((5, 5)))


def test_dicom_folder_with_mixed_series(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    folder = tmp_path / "series"
    folder.mkdir()
    for k, uid in enumerate([None, pydicom.uid.generate_uid()]):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        if uid:
            ds.SeriesInstanceUID = uid
        ds.save_as(folder / f"{k}.dcm")
    with pytest.raises(ReadError, match="mixes 2 series.*put each series in its own folder"):
        read_scan(folder)


def test_scan_nan_voxels():
    vol = np.zeros((4, 4, 4))
    vol[0, 0, 0] = np.nan
    with pytest.raises(ReadError, match="NaN or infinite voxels"):
        read_scan(vol)


def test_scan_encoder_marks_bad_file_missing(files):
    items = [str(files["nifti"]), str(files["text_nifti"])]
    with pytest.warns(MissingItemsWarning, match="row 1"):
        _, available = (
            ScanEncoder(spatial_size=(8, 8, 8), on_error="missing").fit(items).encode(items)
        )
    assert available.tolist() == [True, False]


# -- tables and estimators ---------------------------------------------------------------


def test_missing_column():
    df, y = _frame()
    with pytest.raises(
        ValueError, match=r"modality 'clinical' needs column\(s\) \['age'\], which X does not have"
    ):
        MultimodalClassifier(MODS).fit(df.drop(columns="age"), y)


def test_wrong_column_type_in_text():
    df, y = _frame()
    df["note"] = df["note"].astype(object)
    df.loc[3, "note"] = 7
    with pytest.raises(
        ReadError, match="row 3 of column 'note': text item '7' is a int, not a string"
    ):
        MultimodalClassifier(MODS).fit(df, y)


def test_wrong_cell_type_in_table():
    df = pd.DataFrame({"age": [1.0, 2.0], "notes": [{"a": 1}, {"b": 2}]})
    with pytest.raises(TypeError, match=r"column 'notes' holds values of type \['dict'\]"):
        TabularEncoder().fit(df)


@pytest.mark.parametrize("cell", [None, np.nan, "", "  "])
def test_missing_text_cells_are_absent_not_zero(cell):
    df, y = _frame()
    df["note"] = df["note"].astype(object)
    df.loc[2, "note"] = cell
    clf = MultimodalClassifier(MODS, random_state=0).fit(df, y)
    emb = clf.embed(df)
    assert not emb.mask[2, 0] and emb.mask[3, 0]
    assert np.isnan(emb.blocks["text"][2]).all()


def test_missing_image_cell_is_absent():
    block, available = ImageEncoder().fit([np.eye(4)]).encode([np.eye(4), None, float("nan")])
    assert available.tolist() == [True, False, False] and np.isnan(block[1:]).all()


def test_non_finite_tabular_value():
    df, y = _frame()
    df.loc[7, "age"] = -np.inf
    with pytest.raises(
        ValueError, match=r"column 'age' holds infinite values at rows \[7\]; replace them"
    ):
        MultimodalClassifier(MODS).fit(df, y)


def test_row_with_every_modality_missing():
    df, y = _frame()
    df["note"] = df["note"].astype(object)
    df.loc[4, ["note", "age"]] = [None, np.nan]
    with pytest.raises(
        MissingModalityError, match=r"rows \[4\].*Remove them or provide at least one modality"
    ):
        MultimodalClassifier(MODS).fit(df, y)


def test_y_wrong_length():
    df, y = _frame()
    with pytest.raises(ValueError, match="X has 40 rows but y has 39 values"):
        MultimodalClassifier(MODS).fit(df, y[:-1])


def test_y_with_nan():
    df, y = _frame()
    with pytest.raises(ValueError, match="y holds 1 missing label"):
        MultimodalClassifier(MODS).fit(df, np.where(np.arange(40) == 0, np.nan, y))
    with pytest.raises(ValueError, match="y holds 1 NaN or infinite value"):
        MultimodalRegressor(MODS).fit(df, np.where(np.arange(40) == 0, np.nan, 1.0))


def test_y_with_one_class():
    df, _ = _frame()
    with pytest.raises(
        ValueError, match="y has only one class \\('a'\\); a classifier needs at least 2"
    ):
        MultimodalClassifier(MODS).fit(df, ["a"] * 40)


def test_unseen_class_at_scoring_counts_as_an_error():
    df, y = _frame()
    clf = MultimodalClassifier(MODS, random_state=0).fit(df, y)
    pred = clf.predict(df)
    assert set(pred) <= set(clf.classes_) and 5 not in clf.classes_
    mixed = np.asarray(y).copy()
    mixed[::2] = 5  # half the rows carry a label the model never saw
    seen_correct = np.sum(pred[1::2] == mixed[1::2])
    assert seen_correct > 0
    # unseen labels count as errors over all rows: neither skipped nor refused
    assert clf.score(df, mixed) == pytest.approx(seen_correct / len(mixed))


def test_mismatched_columns_between_fit_and_predict():
    df, y = _frame()
    clf = MultimodalClassifier(MODS, random_state=0).fit(df, y)
    with pytest.raises(ValueError, match=r"modality 'text' needs column\(s\) \['note'\]"):
        clf.predict(df.rename(columns={"note": "text"}))


def test_unknown_modality_on_a_fitted_model():
    df, y = _frame()
    clf = MultimodalClassifier(MODS, random_state=0).fit(df, y)
    with pytest.raises(
        KeyError, match=r"unknown modality 'scan'; available: \['text', 'clinical'\]"
    ):
        clf.embed(df).select(["scan"])


def test_sparse_and_non_frame_input():
    import scipy.sparse

    df, y = _frame()
    with pytest.raises(TypeError, match="sparse input is not supported"):
        MultimodalClassifier().fit(scipy.sparse.csr_matrix(np.eye(40)), y)
    with pytest.raises(TypeError, match="X must be a pandas DataFrame"):
        MultimodalClassifier(MODS).fit(df.to_numpy(), y)
