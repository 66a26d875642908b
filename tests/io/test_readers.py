"""Readers: real files, arrays, and clear errors naming the item."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.exceptions import ReadError
from toolkit.io import read_audio, read_image, read_scan, read_text


def _nibabel_file(name):
    nib_tests = pytest.importorskip("nibabel.tests")
    from pathlib import Path

    path = Path(nib_tests.__file__).parent / "data" / name
    if not path.exists():
        pytest.skip(f"nibabel test file {name} not shipped with this nibabel")
    return path


# -- text -----------------------------------------------------------------------------


@pytest.mark.parametrize("cell", [None, float("nan"), "", "   "])
def test_text_missing_cells_are_none(cell):
    assert read_text(cell) is None


def test_text_keeps_string_and_rejects_numbers():
    assert read_text("fine") == "fine"
    with pytest.raises(ReadError, match="int, not a string"):
        read_text(3)


# -- audio ----------------------------------------------------------------------------


def test_audio_real_fsdd_file_is_resampled(real_data):
    path = real_data / "fsdd" / "0_george_0.wav"
    wave, sr = read_audio(path)
    assert sr == 8000 and wave.dtype == np.float32 and wave.ndim == 1
    up, sr2 = read_audio(path, sample_rate=16000)
    assert sr2 == 16000
    assert abs(len(up) - 2 * len(wave)) <= 2
    assert np.abs(up).max() <= 1.5


def test_audio_pair_stereo_and_int16():
    stereo = np.stack([np.ones(100), -np.ones(100)], axis=1).astype(np.float32)  # (frames, ch)
    wave, sr = read_audio((stereo, 8000))
    assert wave.shape == (100,) and np.allclose(wave, 0.0)
    pcm = (np.full(50, 16384)).astype(np.int16)
    wave, _ = read_audio((pcm, 8000))
    assert np.allclose(wave, 16384 / 32768)  # int16 full range: /32768


def test_audio_wrong_rate_and_empty():
    with pytest.raises(ReadError, match="sample rate must be a positive integer"):
        read_audio((np.zeros(10), -5))
    with pytest.raises(ReadError, match="zero-length"):
        read_audio((np.zeros(0), 8000))


def test_audio_corrupt_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    with pytest.raises(ReadError, match=r"broken\.wav.*could not be decoded"):
        read_audio(bad)


def test_audio_missing_path():
    with pytest.raises(FileNotFoundError, match="nowhere.wav' does not exist"):
        read_audio("/nonexistent/nowhere.wav")


def test_audio_empty_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ReadError, match="empty.wav' is empty"):
        read_audio(empty)


# -- image ----------------------------------------------------------------------------


def test_image_real_pneumoniamnist_png(real_data, tmp_path):
    from PIL import Image

    data = np.load(real_data / "pneumoniamnist" / "pneumoniamnist.npz")
    x = data["test_images"][0]
    assert x.shape == (28, 28) and x.dtype == np.uint8
    path = tmp_path / "xray.png"
    Image.fromarray(x).save(path)
    img = read_image(path)
    assert img.shape == (28, 28, 1)
    np.testing.assert_allclose(img[:, :, 0], x / 255.0, atol=1e-6)


@pytest.mark.parametrize(
    ("arr", "shape"),
    [
        (np.zeros((5, 6), np.uint8), (5, 6, 1)),
        (np.zeros((5, 6, 3), np.uint8), (5, 6, 3)),
        (np.zeros((5, 6, 4), np.uint8), (5, 6, 3)),
        (np.full((5, 6), 60000, np.uint16), (5, 6, 1)),
    ],
)
def test_image_array_layouts(arr, shape):
    img = read_image(arr)
    assert img.shape == shape and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0


def test_image_sixteen_bit_scaling():
    img = read_image(np.full((2, 2), 65535, np.uint16))
    assert np.allclose(img, 1.0)


def test_image_float_values_and_value_range():
    digits = np.arange(16, dtype=np.float64).reshape(4, 4)
    assert np.isclose(read_image(digits).max(), 1.0)
    fixed = read_image(digits, value_range=(0, 32))
    assert np.isclose(fixed.max(), 15 / 32)


def test_image_rejects_4d_array():
    with pytest.raises(ReadError, match=r"array of shape \(2, 3, 4, 5\).*got 4 dimensions"):
        read_image(np.zeros((2, 3, 4, 5)))


def test_image_corrupt_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ReadError, match=r"bad\.png.*could not be decoded"):
        read_image(bad)


def test_image_absurd_size_is_refused_before_decoding(tmp_path):
    from PIL import Image

    path = tmp_path / "huge.png"
    Image.new("L", (10_000, 10_000)).save(path)
    with pytest.raises(ReadError, match="10000x10000 pixels, above"):
        read_image(path)


# -- scan -----------------------------------------------------------------------------


def test_scan_real_nifti_file():
    vol = read_scan(_nibabel_file("anatomical.nii"), spatial_size=(32, 32, 32))
    assert vol.shape == (32, 32, 32) and vol.dtype == np.float32
    assert vol.min() == 0.0 and vol.max() == 1.0


def test_scan_real_4d_nifti_is_averaged_over_volumes():
    import nibabel as nib

    path = _nibabel_file("example4d.nii.gz")
    series = np.asarray(nib.load(path).dataobj, dtype=np.float32)  # (x, y, z, time)
    vol = read_scan(path, spatial_size=(16, 16, 8), orientation=None)
    assert vol.shape == (16, 16, 8)
    np.testing.assert_allclose(
        vol, read_scan(series.mean(axis=3), spatial_size=(16, 16, 8)), atol=1e-6
    )
    assert np.abs(vol - read_scan(series[..., 0], spatial_size=(16, 16, 8))).max() > 1e-3


def _dicom_series(folder, n_slices=4, series_uid=None):
    import pydicom
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True, exist_ok=True)
    src = get_testdata_file("CT_small.dcm")
    for k in range(n_slices):
        ds = pydicom.dcmread(src)
        ds.InstanceNumber = k + 1
        pos = list(map(float, ds.ImagePositionPatient))
        ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 5.0 * k]
        ds.SliceLocation = pos[2] + 5.0 * k
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        if series_uid is not None:
            ds.SeriesInstanceUID = series_uid
        ds.save_as(folder / f"slice_{k}.dcm")
    return folder


def test_scan_real_dicom_series_folder(tmp_path):
    folder = _dicom_series(tmp_path / "series")
    vol = read_scan(folder, spatial_size=(16, 16, 4))
    assert vol.shape == (16, 16, 4)
    assert np.isfinite(vol).all() and vol.max() == 1.0


def test_scan_single_dicom_slice_is_not_a_volume():
    from pydicom.data import get_testdata_file

    with pytest.raises(ReadError, match=r"CT_small\.dcm' holds a 2-D image.*series"):
        read_scan(get_testdata_file("CT_small.dcm"))


def test_scan_dicom_folder_with_mixed_series(tmp_path):
    import pydicom

    folder = _dicom_series(tmp_path / "mixed", 2)
    _dicom_series(tmp_path / "other", 1, series_uid=pydicom.uid.generate_uid())
    (tmp_path / "other" / "slice_0.dcm").rename(folder / "intruder.dcm")
    with pytest.raises(ReadError, match="mixes 2 series"):
        read_scan(folder)


def test_scan_text_file_named_nifti(tmp_path):
    fake = tmp_path / "notes.nii.gz"
    fake.write_text("this is not a scan")
    with pytest.raises(ReadError, match=r"notes\.nii\.gz' could not be read as a scan"):
        read_scan(fake)


def test_scan_truncated_nifti(tmp_path):
    src = _nibabel_file("anatomical.nii").read_bytes()
    cut = tmp_path / "cut.nii"
    cut.write_bytes(src[: len(src) // 2])
    with pytest.raises(ReadError, match=r"cut\.nii' could not be read"):
        read_scan(cut)


def test_scan_2d_array_where_volume_expected():
    with pytest.raises(ReadError, match="expected a 3-D volume.*use ImageEncoder"):
        read_scan(np.zeros((8, 8)))


def test_scan_missing_path():
    with pytest.raises(FileNotFoundError, match="ghost.nii.gz' does not exist"):
        read_scan("/nonexistent/ghost.nii.gz")


def test_missing_file_message_mentions_the_working_directory_only_for_relative_paths(
    tmp_path, monkeypatch
):
    from toolkit.io._paths import check_path

    with pytest.raises(FileNotFoundError) as absolute:
        check_path(tmp_path / "gone.wav", "audio")
    assert "working directory" not in str(absolute.value)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="resolved against the working directory"):
        check_path("gone.wav", "audio")
