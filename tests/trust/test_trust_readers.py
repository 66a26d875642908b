"""Hostile and faulty inputs to the readers: resources are bounded before decoding, nothing
non-regular is opened, no silent wrong values, and every error names the item.

Each test writes its own tiny files (soundfile, nibabel, pydicom, os.mkfifo, sockets).
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from toolkit import AudioEncoder, ImageEncoder, ScanEncoder, TextEncoder
from toolkit.datasets import load_mmsa_features, mmsa
from toolkit.encoders.base import MissingItemsWarning
from toolkit.exceptions import ReadError
from toolkit.io import audio as audio_io
from toolkit.io import image as image_io
from toolkit.io import read_audio, read_image, read_scan, read_text
from toolkit.io import scan as scan_io


def _tone(freq=440.0, sr=8000, seconds=0.5, amp=0.5):
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _wav(path, seconds=0.5, sr=8000, channels=1):
    wave = _tone(sr=sr, seconds=seconds)
    sf.write(path, np.stack([wave] * channels, axis=1) if channels > 1 else wave, sr)
    return path


def _nifti(path, data, affine=None):
    import nibabel as nib

    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def _dicom_series(folder, n_slices=4, position=None, orientation=None, slope=None):
    import pydicom
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True, exist_ok=True)
    src = get_testdata_file("CT_small.dcm")
    for k in range(n_slices):
        ds = pydicom.dcmread(src)
        ds.InstanceNumber = k + 1
        pos = list(map(float, ds.ImagePositionPatient))
        ds.ImagePositionPatient = position or [pos[0], pos[1], pos[2] + 5.0 * k]
        if orientation is not None:
            ds.ImageOrientationPatient = orientation
        if slope is not None:
            ds.RescaleSlope = slope
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(folder / f"slice_{k}.dcm")
    return folder


def _forbid(monkeypatch, owner, name):
    def boom(*args, **kwargs):
        raise AssertionError(f"{name} was called: the data was decoded before the limit check")

    monkeypatch.setattr(owner, name, boom)


@pytest.fixture
def no_decoding(monkeypatch):
    from monai.transforms import LoadImage

    _forbid(monkeypatch, LoadImage, "__call__")


# -- FIFOs, devices, sockets are refused, never opened ----------------------------------


def test_fifo_is_refused_without_opening_by_every_file_reader(tmp_path, deadline):
    fifo = tmp_path / "clip.wav"
    os.mkfifo(fifo)
    for read in (read_audio, read_image, read_scan):
        with pytest.raises(ReadError, match=r"clip\.wav' is a FIFO \(named pipe\).*not opened"):
            read(fifo)
    with pytest.raises(ReadError, match=r"clip\.wav' is a FIFO"):
        load_mmsa_features(fifo)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_device_and_symlink_to_device_are_refused(tmp_path, deadline):
    with pytest.raises(ReadError, match=r"'/dev/zero' is a character device, not a regular"):
        read_image("/dev/zero")
    link = tmp_path / "noise.wav"
    link.symlink_to("/dev/urandom")
    with pytest.raises(ReadError, match=r"noise\.wav' is a character device"):
        read_audio(link)
    with pytest.raises(ReadError, match=r"noise\.wav' is a character device"):
        load_mmsa_features(link)


def test_socket_is_refused():
    folder = Path(tempfile.mkdtemp(prefix="tk"))  # short path: AF_UNIX names are limited
    path = folder / "s.nii"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        with pytest.raises(ReadError, match=r"s\.nii' is a socket"):
            read_scan(path)
    finally:
        sock.close()
        path.unlink()
        folder.rmdir()


def test_fifo_or_subfolder_inside_a_dicom_series_is_refused(tmp_path, deadline):
    folder = _dicom_series(tmp_path / "series", n_slices=2)
    os.mkfifo(folder / "pipe")
    with pytest.raises(ReadError, match=r"entry 'pipe' of DICOM folder .* is a FIFO"):
        read_scan(folder)
    (folder / "pipe").unlink()
    (folder / "nested").mkdir()
    with pytest.raises(ReadError, match="holds a subfolder 'nested'"):
        read_scan(folder)


def test_fifo_row_is_marked_missing_with_on_error(tmp_path, deadline):
    fifo = tmp_path / "live.wav"
    os.mkfifo(fifo)
    items = pd.Series([(_tone(), 8000), str(fifo)], name="voice")
    with pytest.warns(MissingItemsWarning, match=r"row 1: audio path '.*live\.wav' is a FIFO"):
        _, available = AudioEncoder(on_error="missing").fit(items).encode(items)
    assert available.tolist() == [True, False]


def test_broken_symlink_says_target_missing(tmp_path):
    link = tmp_path / "gone.wav"
    link.symlink_to(tmp_path / "nowhere.wav")
    with pytest.raises(FileNotFoundError, match="a symbolic link whose target is missing"):
        read_audio(link)


# -- audio: duration and rate from the header, before decoding ---------------------------


def test_audio_duration_from_header_before_decoding(tmp_path, monkeypatch):
    path = _wav(tmp_path / "long.wav", seconds=2.0)
    _forbid(monkeypatch, sf.SoundFile, "blocks")
    _forbid(monkeypatch, sf.SoundFile, "read")
    with pytest.raises(
        ReadError,
        match=r"long\.wav' lasts 2\.0 s \(from its header\), longer than the max_seconds=1 s",
    ):
        read_audio(path, max_seconds=1)


def test_audio_limits_are_parameters_with_documented_defaults(tmp_path):
    assert audio_io.MAX_SECONDS == 3600.0 and audio_io.MAX_SAMPLE_RATE == 768_000
    assert AudioEncoder().max_seconds == audio_io.MAX_SECONDS
    wave, sr = read_audio(_wav(tmp_path / "ok.wav", seconds=2.0), max_seconds=2.5)
    assert sr == 8000 and wave.shape == (16000,)
    with pytest.raises(ReadError, match=r"lasts 2\.0 s \(16,000 frames at 8,000 Hz\)"):
        read_audio((_tone(seconds=2.0), 8000), max_seconds=1.5)
    with pytest.raises(ReadError, match=r"sample rate 1,000,000 Hz is above the max_sample_rate"):
        read_audio((_tone(), 1_000_000))
    with pytest.raises(ReadError, match=r"header's sample rate 96,000 Hz is above"):
        read_audio(_wav(tmp_path / "hi.wav", sr=96000, seconds=0.01), max_sample_rate=48000)


def test_audio_encoder_max_seconds_marks_long_clip_missing(tmp_path):
    items = pd.Series([(_tone(), 8000), str(_wav(tmp_path / "l.wav", seconds=2.0))], name="v")
    with pytest.warns(MissingItemsWarning, match=r"row 1: audio file .* max_seconds=1 s limit"):
        _, available = AudioEncoder(max_seconds=1, on_error="missing").fit(items).encode(items)
    assert available.tolist() == [True, False]


def test_multichannel_file_is_mixed_down_blockwise(tmp_path):
    path = tmp_path / "quad.wav"
    frames = 70_000  # more than one decoding block (2**18 samples over 4 channels)
    data = np.stack([np.full(frames, v, np.float32) for v in (0.1, 0.2, 0.3, 0.4)], axis=1)
    sf.write(path, data, 8000, subtype="FLOAT")
    wave, _ = read_audio(path)
    assert wave.shape == (frames,)
    np.testing.assert_allclose(wave, 0.25, atol=1e-6)


# -- resampling: bounded cost for awkward rates, accurate --------------------------------


@pytest.fixture
def kernel_sizes(monkeypatch):
    sizes = []
    original = audio_io.Resampler.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        sizes.append(self.kernel.numel())

    monkeypatch.setattr(audio_io.Resampler, "__init__", spy)
    return sizes


@pytest.mark.parametrize("orig", [44_101, 96_001])
def test_awkward_rate_resampling_is_bounded_and_accurate(orig, kernel_sizes):
    wave = _tone(freq=440.0, sr=orig, seconds=1.0, amp=0.5)
    out, sr = read_audio((wave, orig), sample_rate=16_000)
    down, up = audio_io.resample_factors(orig, 16_000)
    assert max(down, up) <= audio_io.MAX_RESAMPLE_FACTOR
    # Bounded kernel: gcd(orig, 16000) == 1 would give 16000 x (orig + ...) ~ 1e9 values.
    assert len(kernel_sizes) == 1 and kernel_sizes[0] <= 1024 * (1024 + 32)
    assert sr == 16_000 and abs(len(out) - 16_000) <= 1
    core = out[1000:-1000]
    spectrum = np.abs(np.fft.rfft(core * np.hanning(len(core)), n=1 << 20))
    peak_hz = np.argmax(spectrum) * 16_000 / (1 << 20)
    assert peak_hz == pytest.approx(440.0, abs=0.1)
    assert np.abs(core).max() == pytest.approx(0.5, rel=0.01)


def test_resample_factors_exact_for_common_rates_and_bounded_otherwise():
    assert audio_io.resample_factors(44_100, 16_000) == (441, 160)
    assert audio_io.resample_factors(8_000, 16_000) == (1, 2)
    down, up = audio_io.resample_factors(44_101, 16_000, max_factor=128)
    assert max(down, up) <= 128 and abs(up / down / (16_000 / 44_101) - 1) < 1e-3
    with pytest.raises(ValueError, match="too far apart"):
        audio_io.resample_factors(768_000, 1_000, max_factor=64)


def test_resampling_refusal_names_the_item():
    with pytest.raises(ReadError, match=r"audio item .*cannot resample from 768000 Hz"):
        read_audio((_tone(sr=768_000, seconds=0.01), 768_000), sample_rate=700)


@pytest.mark.parametrize(
    ("orig", "target", "expected"),
    [
        (16_000, 16_000, (1, 1)),
        (1, 1, (1, 1)),
        (1, 1000, (1, 1000)),
        (768_000, 767_999, (1, 1)),
        (10**12, 10**12 + 1, (1, 1)),
        (1, 2, (1, 2)),
        (2, 1, (2, 1)),
    ],
)
def test_resample_factors_edges_that_resample(orig, target, expected):
    assert audio_io.resample_factors(orig, target) == expected


@pytest.mark.parametrize(
    ("orig", "target"),
    [(7, 16_000), (1, 16_000), (2, 16_000), (16_000, 7), (16_000, 1), (1, 768_000), (768_000, 1)],
)
def test_resample_factors_rates_too_far_apart_are_a_value_error(orig, target):
    # 7 -> 16,000 Hz used to raise ZeroDivisionError: Fraction(1, 0).
    with pytest.raises(ValueError, match=f"cannot resample from {orig} Hz to {target} Hz"):
        audio_io.resample_factors(orig, target)


def test_resample_factors_both_rates_awkward_and_huge():
    for orig, target in [(44_101, 16_001), (767_999, 16_001), (999_983, 999_979)]:
        down, up = audio_io.resample_factors(orig, target)
        assert 1 <= min(down, up) and max(down, up) <= audio_io.MAX_RESAMPLE_FACTOR
        assert abs(up / down / (target / orig) - 1) < 1e-3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 16_000), "orig_sr must be a positive integer, got 0"),
        ((16_000, -5), "target_sr must be a positive integer, got -5"),
        ((True, 16_000), "orig_sr must be a positive integer, got True"),
        ((44_100.5, 16_000), "orig_sr must be a positive integer, got 44100.5"),
        ((44_101, 16_000, 0), "max_factor must be a positive integer, got 0"),
    ],
)
def test_resample_factors_refuse_non_positive_or_non_integer_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        audio_io.resample_factors(*args)


@pytest.mark.parametrize("rate", [7, 1])
def test_very_low_rate_file_is_a_read_error_honouring_on_error(tmp_path, rate):
    path = tmp_path / f"low{rate}.wav"
    sf.write(path, np.zeros(20, np.float32), rate)
    with pytest.raises(
        ReadError, match=rf"low{rate}\.wav': cannot resample from {rate} Hz to 16000 Hz"
    ):
        read_audio(path, sample_rate=16_000)
    items = [(_tone(), 8000), str(path)]
    with pytest.warns(MissingItemsWarning, match=rf"row 1: audio file .*low{rate}\.wav'"):
        _, available = AudioEncoder(on_error="missing").fit(items).encode(items)
    assert available.tolist() == [True, False]


@pytest.mark.parametrize(("orig", "target"), [(44_100, 16_000), (8_000, 22_050), (44_101, 16_000)])
def test_blockwise_resampling_equals_one_shot_torchaudio(orig, target):
    import torch
    import torchaudio.functional as AF

    rng = np.random.default_rng(0)
    wave = (0.5 * rng.standard_normal(50_000)).astype(np.float32)
    down, up = audio_io.resample_factors(orig, target)
    expected = AF.resample(torch.from_numpy(wave), down, up).numpy()
    resampler = audio_io.Resampler(orig, target)
    cuts = np.sort(rng.integers(0, len(wave), 40))
    parts = [resampler.feed(piece) for piece in np.split(wave, cuts)] + [resampler.finish()]
    got = np.concatenate(parts)
    assert got.shape == expected.shape == (resampler.output_length(len(wave)),)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    np.testing.assert_allclose(audio_io.resample(wave, orig, target), expected, atol=2e-5)


def test_file_decoded_and_resampled_across_blocks_matches_whole_file(tmp_path):
    import torch
    import torchaudio.functional as AF

    frames = 3 * (1 << 18) // 2 + 17  # several decoding blocks, stereo
    rng = np.random.default_rng(1)
    data = (0.3 * rng.standard_normal((frames, 2))).astype(np.float32)
    path = tmp_path / "long.wav"
    sf.write(path, data, 44_100, subtype="FLOAT")
    wave, sr = read_audio(path, sample_rate=16_000)
    mono = (data / 2).sum(axis=1, dtype=np.float32)
    expected = AF.resample(torch.from_numpy(mono), 441, 160).numpy()
    assert sr == 16_000 and wave.shape == expected.shape
    np.testing.assert_allclose(wave, expected, atol=2e-5)


def test_decoded_size_limit_from_header_before_decoding(tmp_path, monkeypatch):
    path = _wav(tmp_path / "two.wav", seconds=2.0)  # 16,000 frames at 8 kHz
    assert audio_io.MAX_DECODED_BYTES == 512 * 2**20
    assert AudioEncoder().max_decoded_bytes == audio_io.MAX_DECODED_BYTES
    # At 16 kHz it becomes 32,000 float32 samples = 128,000 bytes.
    wave, _ = read_audio(path, sample_rate=16_000, max_decoded_bytes=128_000)
    assert wave.shape == (32_000,)
    _forbid(monkeypatch, sf.SoundFile, "blocks")
    with pytest.raises(
        ReadError,
        match=r"two\.wav' decodes to 0\.1 MiB of float32 samples at 16,000 Hz \(from its header "
        r"or shape\), above the max_decoded_bytes=127,999 limit; split it",
    ):
        read_audio(path, sample_rate=16_000, max_decoded_bytes=127_999)
    with pytest.raises(ReadError, match=r"audio item .* above the max_decoded_bytes=100 limit"):
        read_audio((_tone(seconds=0.01), 8000), max_decoded_bytes=100)
    with pytest.raises(ValueError, match="max_decoded_bytes must be a positive integer, got 0"):
        read_audio((_tone(), 8000), max_decoded_bytes=0)


def test_audio_encoder_max_decoded_bytes_is_validated_and_marks_rows_missing(tmp_path):
    from sklearn.utils._param_validation import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="max_decoded_bytes"):
        AudioEncoder(max_decoded_bytes=0).fit([(_tone(), 8000)])
    items = [(_tone(seconds=0.1), 8000), str(_wav(tmp_path / "two.wav", seconds=2.0))]
    with pytest.warns(MissingItemsWarning, match=r"row 1: .*max_decoded_bytes=100,000 limit"):
        _, available = (
            AudioEncoder(max_decoded_bytes=100_000, on_error="missing").fit(items).encode(items)
        )
    assert available.tolist() == [True, False]


def test_nan_in_a_later_decoding_block_names_its_frame(tmp_path):
    data = np.zeros((300_000, 1), np.float32)
    data[270_001, 0] = np.nan
    path = tmp_path / "nan_late.wav"
    sf.write(path, data, 8000, subtype="FLOAT")
    with pytest.raises(
        ReadError, match=r"nan_late\.wav' contains NaN or infinite samples .*index \(270001, 0\)"
    ):
        read_audio(path)


# -- audio arrays: layout, integer scaling, refused dtypes --------------------------------


def test_fewer_frames_than_channels_is_refused_not_guessed():
    three_frames_eight_channels = np.tile(np.arange(8, dtype=np.float32), (3, 1))
    with pytest.raises(
        ReadError, match=r"both axes of shape \(3, 8\).*ambiguous.*pass the 1-D mono waveform"
    ):
        read_audio((three_frames_eight_channels, 8000))
    with pytest.raises(ReadError, match=r"neither axis of shape \(100, 100\)"):
        read_audio((np.zeros((100, 100), np.float32), 8000))


def test_both_unambiguous_layouts_mix_down_the_right_axis():
    left, right = _tone(), np.zeros(4000, np.float32)
    frames_first, _ = read_audio((np.stack([left, right], axis=1), 8000))
    channels_first, _ = read_audio((np.stack([left, right], axis=0), 8000))
    np.testing.assert_allclose(frames_first, left / 2, atol=1e-7)
    np.testing.assert_array_equal(frames_first, channels_first)


@pytest.mark.parametrize(
    ("values", "dtype", "expected"),
    [
        ([-32768, 16384, 0], np.int16, [-1.0, 0.5, 0.0]),
        ([0, 128, 255], np.uint8, [-1.0, 0.0, 127 / 128]),
        ([2**30, -(2**31)], np.int32, [0.5, -1.0]),
        ([-128, 64], np.int8, [-1.0, 0.5]),
        ([0, 32768], np.uint16, [-1.0, 0.0]),
    ],
)
def test_integer_waveforms_scaled_by_full_range(values, dtype, expected):
    wave, _ = read_audio((np.array(values, dtype=dtype), 8000))
    np.testing.assert_allclose(wave, expected, atol=1e-7)


@pytest.mark.parametrize(
    ("wave", "message"),
    [
        (np.ones(10, np.complex64), r"samples are complex \(complex64\)"),
        (np.ones(10, bool), "samples are boolean"),
        (np.array(["a", "b"], dtype=object), "non-numeric dtype object"),
    ],
)
def test_complex_boolean_object_waveforms_refused(wave, message):
    with pytest.raises(ReadError, match=message):
        read_audio((wave, 8000))


def test_ragged_waveform_and_boolean_rate_refused():
    with pytest.raises(ReadError, match="not a rectangular numeric array"):
        read_audio(([np.zeros(3), np.zeros(5)], 8000))
    with pytest.raises(ReadError, match="sample rate must be a positive integer, got True"):
        read_audio((np.zeros(10, np.float32), True))


# -- values beyond float32 are not "NaN" --------------------------------------------------


def test_values_near_1e308_are_out_of_float32_range_not_nan(tmp_path):
    big = np.array([0.0, 1e308, 0.5])
    with pytest.raises(ReadError, match=r"samples out of float32 range.*1e\+308.*not NaN"):
        read_audio((big, 8000))
    with pytest.raises(ReadError, match=r"voxels out of float32 range"):
        read_scan(np.full((4, 4, 4), 1e300))
    with pytest.raises(ReadError, match=r"pixel values out of float32 range"):
        read_image(np.array([[0.0, 1e308], [1.0, 2.0]]))
    vol = np.ones((4, 4, 4))
    vol[1, 2, 3] = -1e308
    path = _nifti(tmp_path / "wide.nii", vol)
    with pytest.raises(ReadError, match=r"wide\.nii' holds voxels out of float32 range"):
        read_scan(path, spatial_size=(4, 4, 4))


def test_real_nan_still_reported_as_nan(tmp_path):
    with pytest.raises(ReadError, match=r"contains NaN or infinite samples \(1 of 3"):
        read_audio((np.array([0.0, np.nan, 1.0]), 8000))
    vol = np.ones((4, 4, 4), np.float32)
    vol[0, 0, 0] = np.nan
    with pytest.raises(ReadError, match=r"nan\.nii' contains NaN or infinite voxels"):
        read_scan(_nifti(tmp_path / "nan.nii", vol), spatial_size=(4, 4, 4))
    with pytest.raises(ReadError, match="contains NaN or infinite pixel values"):
        read_image(np.array([[np.nan, 0.2]]), value_range=(0, 1))


def test_dicom_rescale_beyond_float32_refused_from_header(tmp_path, no_decoding):
    folder = _dicom_series(tmp_path / "series", n_slices=2, slope=1e36)
    with pytest.raises(ReadError, match=r"RescaleSlope 1e\+36.*out of float32 range"):
        read_scan(folder)


# -- scans: voxel count from the header, before decoding ---------------------------------


def test_nifti_voxels_from_header(tmp_path, no_decoding):
    path = _nifti(tmp_path / "big.nii.gz", np.zeros((8, 8, 8), np.float32))
    with pytest.raises(
        ReadError,
        match=r"big\.nii\.gz' has 512 voxels \(from its header\), above the max_voxels=100",
    ):
        read_scan(path, max_voxels=100, spatial_size=(4, 4, 4))


def test_dicom_voxels_from_headers(tmp_path, no_decoding):
    folder = _dicom_series(tmp_path / "ct", n_slices=4)  # 4 x 128 x 128
    with pytest.raises(ReadError, match=r"DICOM folder '.*ct' has .* voxels \(from the headers"):
        read_scan(folder, max_voxels=50_000, spatial_size=(4, 4, 4))
    with pytest.raises(ReadError, match=r"slice_0\.dcm' has 16,384 voxels \(from its header\)"):
        read_scan(folder / "slice_0.dcm", max_voxels=1000, spatial_size=(4, 4, 4))


def test_scan_voxel_limit_default_parameter_and_arrays():
    assert scan_io.MAX_VOXELS == 2**28 and ScanEncoder().max_voxels == scan_io.MAX_VOXELS
    vol = np.random.default_rng(0).random((10, 10, 10))
    with pytest.raises(ReadError, match=r"has 1,000 voxels \(shape \(10, 10, 10\)\), above"):
        read_scan(vol, max_voxels=999, spatial_size=(4, 4, 4))
    assert read_scan(vol, max_voxels=1000, spatial_size=(4, 4, 4)).shape == (4, 4, 4)


def test_complex_scans_refused(tmp_path):
    with pytest.raises(ReadError, match="voxels are complex"):
        read_scan(np.ones((4, 4, 4), np.complex64))
    path = _nifti(tmp_path / "cplx.nii", np.ones((4, 4, 4), np.complex64))
    with pytest.raises(ReadError, match=r"cplx\.nii': voxels are complex"):
        read_scan(path)


# -- scans: the grids resampling creates are bounded before they are made -------------------


@pytest.mark.parametrize(("mm", "side"), [(45.0, 406), (70.0, 631)])
def test_resampling_bomb_refused_from_the_nifti_header(tmp_path, no_decoding, mm, side):
    # A 4 KB file: 10^3 voxels at 45 mm read at 1 mm used to take 13.5 s and 4.7 GB.
    vol = np.random.default_rng(0).random((10, 10, 10)).astype(np.float32)
    path = _nifti(tmp_path / "coarse.nii", vol, np.diag([mm, mm, mm, 1.0]))
    assert path.stat().st_size < 5000
    with pytest.raises(
        ReadError,
        match=rf"coarse\.nii' would have {side**3:,} voxels \({side}x{side}x{side}\) once "
        rf"resampled from \({mm}, {mm}, {mm}\) mm to pixdim=\(1\.0, 1\.0, 1\.0\) mm \(from its "
        r"header\), above the max_resampled_voxels=33,554,432 limit; choose a coarser pixdim",
    ):
        read_scan(path, pixdim=(1, 1, 1), spatial_size=(8, 8, 8))


def test_resampled_voxel_limit_is_a_parameter_with_exact_boundary(tmp_path):
    assert scan_io.MAX_RESAMPLED_VOXELS == 2**25
    assert ScanEncoder().max_resampled_voxels == scan_io.MAX_RESAMPLED_VOXELS
    vol = np.random.default_rng(0).random((4, 4, 4)).astype(np.float32)
    path = _nifti(tmp_path / "two_mm.nii", vol, np.diag([2.0, 2.0, 2.0, 1.0]))
    # 4 voxels at 2 mm span 6 mm: 7 voxels at 1 mm per axis.
    kwargs = dict(pixdim=(1, 1, 1), spatial_size=(4, 4, 4))
    assert read_scan(path, max_resampled_voxels=343, **kwargs).shape == (4, 4, 4)
    with pytest.raises(ReadError, match=r"343 voxels \(7x7x7\).*max_resampled_voxels=342 lim"):
        read_scan(path, max_resampled_voxels=342, **kwargs)


def test_resampled_shape_is_exact_for_rotated_affines():
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    from toolkit.io.scan import resampled_shape

    angle = np.deg2rad(30)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([2.0, 3.0, 4.0])
    affine = affine[[1, 0, 2, 3]]  # axes not in RAS order either
    shape = (9, 11, 5)
    real = MetaTensor(torch_rand(shape), affine=affine)
    expected = Spacing(pixdim=(1.5, 1.0, 2.0))(Orientation(axcodes="RAS")(real)).shape[1:]
    assert resampled_shape(shape, affine, "RAS", (1.5, 1.0, 2.0)) == tuple(expected) == (21, 17, 9)


def torch_rand(shape):
    import torch

    return torch.from_numpy(np.random.default_rng(0).random((1, *shape)).astype(np.float32))


def test_dicom_resampling_bomb_refused_before_resampling(tmp_path, monkeypatch):
    folder = _dicom_series(tmp_path / "ct", n_slices=3)  # 128 x 128 x 3, ~0.66 x 0.66 x 5 mm
    monkeypatch.setattr(scan_io, "preprocess_scan", lambda *a, **k: pytest.fail("resampled"))
    with pytest.raises(
        ReadError,
        match=r"DICOM series folder '.*ct' would have [\d,]+ voxels .* \(from its affine, before "
        r"resampling\), above the max_resampled_voxels=100,000 limit",
    ):
        read_scan(
            folder, pixdim=(0.1, 0.1, 0.1), spatial_size=(4, 4, 4), max_resampled_voxels=100_000
        )


def test_resampling_bomb_row_marked_missing_and_bad_grid_parameters_refused(tmp_path):
    vol = np.random.default_rng(0).random((10, 10, 10)).astype(np.float32)
    bomb = _nifti(tmp_path / "bomb.nii", vol, np.diag([45.0, 45.0, 45.0, 1.0]))
    fine = _nifti(tmp_path / "fine.nii", vol, np.diag([1.0, 1.0, 1.0, 1.0]))
    items = pd.Series([str(fine), str(bomb)], name="ct")
    enc = ScanEncoder(spatial_size=(8, 8, 8), pixdim=(1, 1, 1), on_error="missing")
    with pytest.warns(MissingItemsWarning, match=r"row 1: NIfTI file .*bomb\.nii' would have"):
        _, available = enc.fit(items).encode(items)
    assert available.tolist() == [True, False]
    with pytest.raises(ValueError, match=r"spatial_size=\(512, 512, 512\) has 134,217,728 voxels"):
        ScanEncoder(spatial_size=(512, 512, 512)).fit([vol])
    with pytest.raises(ValueError, match=r"spatial_size=\(8, 8, 8\) has 512 voxels, above the "):
        read_scan(vol, spatial_size=(8, 8, 8), max_resampled_voxels=511)
    for pixdim in [(0, 1, 1), (1, 1), (1, float("nan"), 1), (True, 1, 1)]:
        with pytest.raises(ValueError, match="pixdim must be 3 positive finite spacings"):
            read_scan(vol, spatial_size=(8, 8, 8), pixdim=pixdim)
    with pytest.raises(ValueError, match="spatial_size must be 3 positive ints"):
        ScanEncoder(spatial_size=(8, 8, 0)).fit([vol])


def test_singular_nifti_affine_refused_from_the_header(tmp_path, no_decoding):
    import nibabel as nib

    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), None)
    img.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)  # a zero slice axis
    path = tmp_path / "flat.nii"
    nib.save(img, path)
    with pytest.raises(ReadError, match=r"flat\.nii' has a degenerate orientation"):
        read_scan(path, pixdim=(1, 1, 1), spatial_size=(4, 4, 4))


# -- degenerate DICOM orientation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"position": [0.0, 0.0, 0.0]}, "same_position"),
        ({"orientation": [1, 0, 0, 1, 0, 0]}, "collinear"),
        ({"orientation": [0, 0, 0, 0, 0, 0]}, "zero"),
    ],
)
def test_degenerate_dicom_orientation_is_a_read_error(tmp_path, kwargs, name):
    folder = _dicom_series(tmp_path / name, n_slices=3, **kwargs)
    with pytest.raises(ReadError, match=rf"DICOM series folder '.*{name}' has a degenerate"):
        read_scan(folder, spatial_size=(8, 8, 3))
    # The stored voxel grid is still usable when nothing needs the affine.
    vol = read_scan(folder, spatial_size=(8, 8, 3), orientation=None)
    assert vol.shape == (8, 8, 3) and np.isfinite(vol).all()


def test_degenerate_series_honours_on_error_missing(tmp_path):
    good = np.random.default_rng(0).random((8, 8, 8))
    bad = _dicom_series(tmp_path / "flat", n_slices=3, position=[0.0, 0.0, 0.0])
    items = pd.Series([good, str(bad)], name="ct")
    with pytest.warns(MissingItemsWarning, match=r"row 1: DICOM series folder .*flat' has a deg"):
        _, available = (
            ScanEncoder(spatial_size=(8, 8, 8), on_error="missing").fit(items).encode(items)
        )
    assert available.tolist() == [True, False]


# -- images --------------------------------------------------------------------------------


def test_image_pixel_limit_is_a_parameter_for_files_and_arrays(tmp_path, monkeypatch):
    from PIL import Image, ImageFile

    assert image_io.MAX_PIXELS == 50_000_000 and ImageEncoder().max_pixels == image_io.MAX_PIXELS
    with pytest.raises(ReadError, match=r"is 12x10 pixels, above the 100 pixel limit"):
        read_image(np.zeros((10, 12)), max_pixels=100)
    path = tmp_path / "wide.png"
    Image.new("L", (30, 20)).save(path)
    _forbid(monkeypatch, ImageFile.ImageFile, "load")
    with pytest.raises(ReadError, match=r"wide\.png' is 30x20 pixels, above the 599 pixel limit"):
        read_image(path, max_pixels=599)


def test_image_encoder_passes_max_pixels(tmp_path):
    images = pd.Series([np.zeros((4, 4)), np.zeros((40, 40))], name="xray")
    with pytest.warns(MissingItemsWarning, match=r"row 1: image item .* above the 100 pixel"):
        _, available = ImageEncoder(max_pixels=100, on_error="missing").fit(images).encode(images)
    assert available.tolist() == [True, False]


def test_complex_image_refused():
    with pytest.raises(ReadError, match=r"pixel values are complex"):
        read_image(np.ones((4, 4), np.complex128))


# -- images: one intensity rule for files and arrays, no silent zero rows -------------------


def _tiff(path, arr):
    from PIL import Image

    Image.fromarray(arr).save(path)
    return path


def test_int32_file_and_array_follow_the_same_rule(tmp_path):
    # Used to read as [0, .763, 1, 1] from the file (clipped at 65535) and as
    # [0, .25, .5, 1] from the array (scaled by its peak).
    arr = np.array([[0, 50_000, 100_000, 200_000]], dtype=np.int32)
    path = _tiff(tmp_path / "wide.tif", arr)
    for item, name in [(path, r"image file '.*wide\.tif'"), (arr, r"image item .*")]:
        with pytest.raises(
            ReadError,
            match=name + r": int32 pixel values \(from 0 to 200,000\) have no standard intensity "
            r"scale .* pass value_range=\(low, high\)",
        ):
            read_image(item)
    from_file = read_image(path, value_range=(0, 200_000))
    from_array = read_image(arr, value_range=(0, 200_000))
    np.testing.assert_allclose(from_file[0, :, 0], [0.0, 0.25, 0.5, 1.0])
    np.testing.assert_array_equal(from_file, from_array)


@pytest.mark.parametrize(
    ("arr", "expected"),
    [
        (np.array([[0, 1000, 65535]], np.uint16), [0.0, 1000 / 65535, 1.0]),
        (np.array([[0.0, 0.5, 2.0]], np.float32), [0.0, 0.25, 1.0]),
        (np.array([[0, 128, 255]], np.uint8), [0.0, 128 / 255, 1.0]),
    ],
)
def test_files_and_arrays_of_the_same_type_agree(tmp_path, arr, expected):
    path = _tiff(tmp_path / f"{arr.dtype.name}.tif", arr)
    np.testing.assert_allclose(read_image(arr)[0, :, 0], expected, rtol=1e-6)
    np.testing.assert_array_equal(read_image(path), read_image(arr))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64])
def test_integer_types_without_a_standard_scale_are_refused_not_clipped(dtype):
    values = [-5, 0, 100] if np.issubdtype(dtype, np.signedinteger) else [0, 7, 100]
    arr = np.array([values], dtype=dtype)
    with pytest.raises(
        ReadError, match=rf"{np.dtype(dtype).name} pixel values \(from {values[0]} to 100\)"
    ):
        read_image(arr)
    scaled = read_image(arr, value_range=(values[0], 100))
    np.testing.assert_allclose(scaled[0, :, 0], (np.array(values) - values[0]) / (100 - values[0]))


def test_negative_values_of_a_signed_file_are_not_clipped_silently(tmp_path):
    path = _tiff(tmp_path / "signed.tif", np.array([[-300, 0, 300]], np.int16))
    with pytest.raises(ReadError, match=r"signed\.tif': int32 pixel values \(from -300 to 300\)"):
        read_image(path)
    np.testing.assert_allclose(read_image(path, value_range=(-300, 300))[0, :, 0], [0, 0.5, 1])


@pytest.mark.parametrize("value_range", [(0, float("nan")), (1, 0), (0, 1, 2), ("a", "b")])
def test_malformed_value_range_refused_at_fit(value_range):
    with pytest.raises(ValueError, match="value_range must be \\(low, high\\)"):
        ImageEncoder(value_range=value_range).fit([np.zeros((4, 4), np.uint8)])


def _png(path, width, height, rows_bytes, depth=8, color=2, interlace=0):
    import struct
    import zlib

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, interlace)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows_bytes))
        + chunk(b"IEND", b"")
    )
    return path


def _rows(width, n_rows, rng):
    return b"".join(
        b"\x00" + rng.integers(1, 255, width * 3, dtype=np.uint8).tobytes() for _ in range(n_rows)
    )


def test_png_with_half_its_rows_is_refused_not_zero_filled(tmp_path, monkeypatch):
    from PIL import ImageFile

    rng = np.random.default_rng(0)
    half = _png(tmp_path / "half.png", 64, 64, _rows(64, 32, rng))
    whole = _png(tmp_path / "whole.png", 64, 64, _rows(64, 64, rng))
    assert read_image(whole).shape == (64, 64, 3) and read_image(whole).min() > 0
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # set by some other library
    with pytest.raises(
        ReadError,
        match=r"half\.png' is truncated: its compressed pixel data \(IDAT\) holds 6,176 of the "
        r"12,352 bytes its 64x64 header declares, so rows are missing",
    ):
        read_image(half)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored
    items = pd.Series([str(whole), str(half)], name="photo")
    with pytest.warns(MissingItemsWarning, match=r"row 1: image file .*half\.png' is truncated"):
        _, available = ImageEncoder(on_error="missing").fit(items).encode(items)
    assert available.tolist() == [True, False]


def test_png_cut_inside_its_pixel_data_is_refused(tmp_path):
    from PIL import Image

    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError, match=r"cut\.png'.*truncated"):
        read_image(path)


@pytest.mark.parametrize(("width", "height", "depth", "color"), [(13, 7, 8, 2), (9, 5, 1, 0)])
def test_interlaced_png_rows_are_counted_per_pass(tmp_path, width, height, depth, color):
    expected = image_io._png_row_bytes(width, height, depth, color, interlace=1)
    # Adam7 passes by hand for 13x7 RGB: widths 2,2,4,3,7,6,13 and rows 1,1,1,2,2,4,3.
    if (width, height) == (13, 7):
        assert expected == sum(
            r * (1 + w * 3) for w, r in [(2, 1), (2, 1), (4, 1), (3, 2), (7, 2), (6, 4), (13, 3)]
        )
    ok = _png(tmp_path / "ok.png", width, height, b"\x00" * expected, depth, color, 1)
    assert read_image(ok).shape[:2] == (height, width)
    short = _png(tmp_path / "short.png", width, height, b"\x00" * (expected - 1), depth, color, 1)
    with pytest.raises(ReadError, match=rf"short\.png' is truncated.*of the {expected:,} bytes"):
        read_image(short)


# -- text ----------------------------------------------------------------------------------


def test_invalid_utf8_bytes_name_the_byte_and_row():
    with pytest.raises(ReadError, match=r"not valid UTF-8: byte\(s\) b'\\xff' at position 3"):
        read_text(b"abc\xffdef")
    notes = pd.Series(["a fine note", b"caf\xe9 latin-1"], name="note")
    with pytest.raises(ReadError, match=r"row 1 of column 'note': text item .* not valid UTF-8"):
        TextEncoder().fit_transform(notes)


def test_valid_utf8_bytes_are_decoded_and_blank_bytes_missing():
    assert read_text("café".encode()) == "café"
    assert read_text(bytearray(b"ok")) == "ok"
    assert read_text(b"   ") is None


def test_unpaired_surrogates_refused():
    text = b"caf\xe9".decode("utf-8", errors="surrogateescape")
    with pytest.raises(ReadError, match=r"unpaired surrogate '\\udce9' at position 3"):
        read_text(text)


# -- MMSA feature pickles --------------------------------------------------------------------


def _mmsa_split(n, tag, rng):
    return {
        "text": rng.normal(size=(n, 6, 4)).astype(np.float32),
        "audio": rng.normal(size=(n, 5, 3)).astype(np.float32),
        "vision": rng.normal(size=(n, 5, 2)).astype(np.float32),
        "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
        "id": [f"{tag}_{i}" for i in range(n)],
        "audio_lengths": [3] * n,
        "vision_lengths": [5] * n,
    }


def _mmsa(path, edit=None):
    rng = np.random.default_rng(0)
    data = {s: _mmsa_split(n, s, rng) for s, n in (("train", 6), ("valid", 2), ("test", 3))}
    if edit is not None:
        edit(data)
    with open(path, "wb") as fh:
        pickle.dump(data, fh)
    return path


def test_mmsa_valid_file_loads(tmp_path):
    frame = load_mmsa_features(_mmsa(tmp_path / "ok.pkl")).frame
    assert len(frame) == 11 and frame["audio"][0].shape == (3, 3)
    assert frame["id"].is_unique and "row" not in frame


def test_mmsa_file_size_checked_before_opening(tmp_path, monkeypatch):
    path = _mmsa(tmp_path / "big.pkl")
    _forbid(monkeypatch, mmsa, "_RestrictedUnpickler")
    with pytest.raises(ValueError, match=r"big\.pkl' is .* bytes, above the max_bytes=1,000"):
        load_mmsa_features(path, max_bytes=1000)
    assert mmsa.MAX_BYTES == 16 * 2**30 and mmsa.MAX_ELEMENTS == 2**31


def test_mmsa_element_count_checked_while_unpickling(tmp_path):
    path = _mmsa(tmp_path / "many.pkl")
    with pytest.raises(ValueError, match=r"many\.pkl': an array of shape \(6, 6, 4\) \(144 elem"):
        load_mmsa_features(path, max_elements=100)


class _HugeReconstruct:
    """Pickles as numpy's own array rebuild call with a 10**12-element shape."""

    def __reduce__(self):
        return (np.ndarray.__reduce__(np.zeros(1))[0], (np.ndarray, (10**12,), b"b"))


@pytest.mark.parametrize(
    "bomb",
    [_HugeReconstruct(), np.ndarray((10**12,), dtype="V0")],
    ids=["reconstruct_shape", "zero_byte_items"],
)
def test_mmsa_array_bombs_refused_before_allocation(tmp_path, bomb):
    path = tmp_path / "bomb.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"train": {"audio": bomb}, "valid": {}, "test": {}}, fh)
    with pytest.raises(ValueError, match=r"1,000,000,000,000 elements.*above the max_elements"):
        load_mmsa_features(path)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-2, r"split 'valid' row 1: audio_lengths = -2 is negative"),
        (9, r"split 'valid' row 1: audio_lengths = 9 exceeds its 5 frames"),
        (2.5, r"split 'valid' row 1: audio_lengths = .*2\.5.* is not a whole number"),
    ],
)
def test_mmsa_bad_lengths_refused(tmp_path, value, message):
    def edit(data):
        data["valid"]["audio_lengths"] = [3, value]

    with pytest.raises(ValueError, match=message):
        load_mmsa_features(_mmsa(tmp_path / "len.pkl", edit))


def test_mmsa_duplicate_ids_with_conflicting_labels_refused(tmp_path):
    def edit(data):
        data["test"]["id"][2] = "train_4"
        data["test"]["regression_labels"][2] = 2.0
        data["train"]["regression_labels"][4] = -1.0

    with pytest.raises(
        ValueError,
        match=r"id 'train_4' occurs 2 times with different labels \(train row 4 \(score -1\), "
        r"test row 2 \(score 2\)\)",
    ):
        load_mmsa_features(_mmsa(tmp_path / "dup.pkl", edit))


def test_mmsa_duplicate_id_with_the_same_label_is_kept(tmp_path):
    def edit(data):
        data["test"]["id"][2] = "train_4"
        data["test"]["regression_labels"][2] = data["train"]["regression_labels"][4]

    frame = load_mmsa_features(_mmsa(tmp_path / "same.pkl", edit)).frame
    assert (frame["id"] == "train_4").sum() == 2


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["train"]["regression_labels"].__setitem__(3, np.nan),
            r"split 'train' 'regression_labels' is NaN or infinite at rows \[3\]",
        ),
        (
            lambda d: d["test"].__setitem__("vision", np.full((3, 5, 2), 1e308)),
            r"split 'test' row 0 'vision' holds features out of float32 range",
        ),
        (
            lambda d: d["train"].__setitem__("text", np.zeros((5, 6, 4), np.float32)),
            r"split 'train' 'text' has 5 rows but the split has 6 labels",
        ),
    ],
    ids=["nan_label", "overflow_feature", "row_count"],
)
def test_mmsa_content_errors_name_split_row_and_key(tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        load_mmsa_features(_mmsa(tmp_path / "bad.pkl", edit))


def test_mmsa_truncated_file_names_the_file(tmp_path):
    path = _mmsa(tmp_path / "cut.pkl")
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(pickle.UnpicklingError, match=r"cut\.pkl': .*truncated"):
        load_mmsa_features(path)


def test_mmsa_refused_class_names_the_file(tmp_path):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"train": os.system}, fh)
    with pytest.raises(pickle.UnpicklingError, match=r"evil\.pkl': refusing to load 'posix"):
        load_mmsa_features(path)


def test_fifo_as_the_data_half_of_a_nifti_pair_is_refused(tmp_path, deadline):
    import nibabel as nib

    nib.save(nib.Nifti1Pair(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / "pair.hdr")
    (tmp_path / "pair.img").unlink()
    os.mkfifo(tmp_path / "pair.img")
    with pytest.raises(ReadError, match=r"pair\.img' is a FIFO"):
        read_scan(tmp_path / "pair.hdr")
