"""Issue 25, second trust wave, media readers: nothing silently wrong (missing DICOM slices,
EXIF orientation, multi-frame images, batch-dependent descriptors, bare waveforms, cut WAVs),
bounded memory (long clips in the mfcc backend, large volumes in ScanEncoder), a clear error
for a MONAI ``spatial_size`` below the network's minimum, and no non-regular path opened.

Every test builds its own tiny files in ``tmp_path`` (soundfile, PIL, pydicom).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from toolkit import AudioEncoder, ImageEncoder, ScanEncoder
from toolkit.encoders.base import MissingItemsWarning
from toolkit.exceptions import ReadError
from toolkit.io import read_audio, read_image, read_scan
from toolkit.io import scan as scan_io


def _dicom_series(folder, z_positions):
    import pydicom
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True, exist_ok=True)
    src = get_testdata_file("CT_small.dcm")
    for k, z in enumerate(z_positions):
        ds = pydicom.dcmread(src)
        ds.InstanceNumber = k + 1
        x, y, _ = map(float, ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, float(z)]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(folder / f"slice_{k}.dcm")
    return folder


# -- DICOM: a missing slice ---------------------------------------------------------------


def test_dicom_series_with_a_missing_slice_is_refused_from_the_headers(tmp_path):
    from toolkit.io.scan_headers import _check_dicom_folder

    assert _check_dicom_folder(_dicom_series(tmp_path / "even", [0, 5, 10, 15])) is None
    gap = _dicom_series(tmp_path / "gap", [0, 5, 10, 15, 20])
    os.remove(gap / "slice_2.dcm")  # 0, 5, 15, 20: MONAI read it as 4 slices 6.67 mm apart
    with pytest.raises(
        ReadError,
        match=r"DICOM folder '.*gap' has unevenly spaced slices: 'slice_1\.dcm' and "
        r"'slice_3\.dcm' are 10 mm apart .* closest slices are 5 mm apart \(1 slice\(s\) "
        r"missing\?\).*restore the missing slices",
    ):
        read_scan(gap, spatial_size=(8, 8, 4))  # refused from the headers, before decoding


def test_dicom_series_with_a_duplicated_position_is_refused(tmp_path):
    folder = _dicom_series(tmp_path / "dup", [0, 5, 5, 10])
    with pytest.raises(ReadError, match=r"unevenly spaced slices: .* are 0 mm apart"):
        read_scan(folder, spatial_size=(8, 8, 4))


# -- images: EXIF orientation, multi-frame files, batch-independent descriptors ----------


@pytest.mark.parametrize(
    "orientation, expected",
    [
        (2, lambda a: a[:, ::-1]),
        (3, lambda a: np.rot90(a, 2)),
        (6, lambda a: np.rot90(a, -1)),  # "rotate 90 clockwise to view"
        (8, lambda a: np.rot90(a, 1)),
    ],
)
def test_exif_orientation_is_applied(tmp_path, orientation, expected):
    from PIL import Image

    stored = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "photo.png", exif=exif)
    out = read_image(tmp_path / "photo.png")[..., 0]
    np.testing.assert_array_equal(out, expected(stored) / np.float32(255))


@pytest.mark.parametrize("name", ["anim.gif", "pages.tif", "anim.png"])
def test_multi_frame_images_are_refused_with_the_frame_count(tmp_path, name):
    from PIL import Image

    frames = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (0, 128, 255)]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])
    with pytest.raises(ReadError, match=rf"/{name}' holds 3 frames .*one image per cell"):
        read_image(tmp_path / name)
    frames[1].save(tmp_path / f"one_{name}")  # a single frame reads as before
    assert read_image(tmp_path / f"one_{name}").max() == pytest.approx(128 / 255)


def test_image_descriptors_do_not_depend_on_the_batch(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.random((s, s + 3, 3)).astype(np.float32) for s in (8, 30, 64, 17) * 3]
    images += [np.full((20, 20), 0.5), np.tile(np.linspace(0, 1, 20), (20, 1))]
    enc = ImageEncoder(progress=False).fit(images)
    together = enc.transform(images)
    alone = np.vstack([enc.transform([img]) for img in images])
    # conv2d's summation order changed with the batch size and flipped orientation bins of
    # the HOG block (up to 0.2 apart); now bit-identical.
    np.testing.assert_array_equal(together, alone)


# -- audio: bare waveforms, truncated WAVs, long clips -----------------------------------


def _tone(sr=8000, seconds=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_bare_waveform_is_refused_naming_the_row_and_the_fix():
    enc = AudioEncoder(progress=False).fit([(_tone(), 8000)])
    with pytest.raises(
        ReadError,
        match=r"row 1 .*bare waveform array of shape \(4000,\) with no sample rate .*"
        r"sample_rate=16000 Hz.*pass \(waveform, sample_rate\) pairs",
    ):
        enc.transform([(_tone(), 8000), _tone()])
    with pytest.warns(MissingItemsWarning, match="row 0"):
        _, ok = AudioEncoder(on_error="missing", progress=False).fit([_tone()]).encode([_tone()])
    assert not ok.any()


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_wav_with_a_cut_data_chunk_is_refused_not_shortened(tmp_path, subtype):
    path = tmp_path / "clip.wav"
    sf.write(path, _tone(seconds=1.0), 8000, subtype=subtype)
    assert len(read_audio(path)[0]) == 8000
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) - 1001)  # libsndfile reads the rest as a clip
    with pytest.raises(
        ReadError,
        match=r"'.*clip\.wav' is truncated: its header declares 8,000 frames \(1\.00 s\).*"
        r"holds only 7,\d{3} .*re-export",
    ):
        read_audio(path)
    with pytest.raises(ReadError, match=r"row 0 .*clip\.wav' is truncated"):
        AudioEncoder(progress=False).fit([str(path)]).transform([str(path)])


def test_mfcc_holds_no_per_sample_intermediate_larger_than_the_clip(monkeypatch):
    """The statistics of a long clip work on bounded time chunks: no tensor grows faster
    than the float32 waveform (the spectrogram of the whole clip took 13 bytes per sample,
    the float64 copies 8; a 3,000 s clip at 16 kHz took 3 GB)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from toolkit.encoders.backends import mfcc

    monkeypatch.setattr(mfcc, "_PITCH_FRAMES", 256)
    monkeypatch.setattr(mfcc, "_STFT_FRAMES", 256, raising=False)

    class Largest(TorchDispatchMode):
        bytes = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    Largest.bytes = max(Largest.bytes, t.untyped_storage().nbytes())
            return out

    sr, seconds = 8000, 40
    wave = np.random.default_rng(0).normal(0, 0.1, sr * seconds).astype(np.float32)
    with Largest():
        feats = mfcc.audio_statistics_batch([wave], sr, 8, 2)
    assert np.isfinite(feats).all()
    assert Largest.bytes <= wave.nbytes + sr  # the padded clip (pitch lags) at most


# -- scans: bounded memory, MONAI spatial_size -------------------------------------------


def test_large_volumes_are_resized_when_read_and_never_stacked(monkeypatch):
    import torch

    rng = np.random.default_rng(0)
    vols = [rng.random((12, 10, 14)).astype(np.float32) for _ in range(3)]
    enc = ScanEncoder(spatial_size=(6, 6, 6), hist_bins=8, grid=2, progress=False)
    expected = enc.fit(vols).transform(vols)
    monkeypatch.setattr(scan_io, "HOLD_VOXELS", 1000, raising=False)  # 12*10*14 = 1,680
    assert tuple(enc._read(vols[0]).shape) == (1, 6, 6, 6)  # a chunk holds small volumes
    stacked = []
    real_stack = torch.stack
    monkeypatch.setattr(
        torch, "stack", lambda ts, *a, **k: stacked.append(len(ts)) or real_stack(ts, *a, **k)
    )
    big = scan_io.resize_and_scale([torch.from_numpy(v)[None] for v in vols], (6, 6, 6))
    assert 3 not in stacked and len(big) == 3  # above HOLD_VOXELS: one at a time, no copy
    monkeypatch.setattr(torch, "stack", real_stack)
    np.testing.assert_allclose(enc.transform(vols), expected, rtol=1e-6, atol=1e-6)


def test_monai_spatial_size_below_the_network_minimum_is_a_clear_error(tmp_path):
    from toolkit.encoders.backends.monai_backbone import Monai

    settings = Monai().example(tmp_path)  # a small DenseNet: 2 blocks, downsampling 8x
    vols = [np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)] * 2
    enc = ScanEncoder(backend="monai", progress=False, **{**settings, "spatial_size": (4, 4, 4)})
    with pytest.raises(
        ValueError,
        match=r"spatial_size=\(4, 4, 4\)\) is too small for MONAI 'DenseNet' .*smallest cube "
        r"it takes is \(5, 5, 5\); pass a larger spatial_size",
    ):
        enc.fit(vols)
    ok = ScanEncoder(backend="monai", progress=False, **{**settings, "spatial_size": (5, 5, 5)})
    assert ok.fit(vols).transform(vols).shape == (2, ok.n_features_out_)


# -- every media path is a regular file, checked before it is opened ---------------------


@pytest.mark.parametrize(
    "name, reader",
    [("clip.wav", read_audio), ("anim.gif", read_image), ("page.tif", read_image)],
)
def test_fifo_and_folder_media_paths_are_refused_before_opening(tmp_path, deadline, name, reader):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    with pytest.raises(ReadError, match=r"is a FIFO \(named pipe\), not a regular file"):
        reader(fifo)
    folder = tmp_path / "folder" / name
    folder.mkdir(parents=True)
    with pytest.raises(ReadError, match=r"is a folder, not a"):
        reader(folder)
