"""n_jobs (joblib worker processes) and the reader thread pool: identical to serial encoding."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit import AudioEncoder, ImageEncoder, ScanEncoder
from toolkit.encoders.base import MissingItemsWarning
from toolkit.io._threads import map_in_threads


def _clip(seconds, seed, sr=8000):
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    wave = 0.5 * np.sin(2 * np.pi * (150 + 50 * seed) * t) + 0.02 * rng.normal(size=t.size)
    return wave.astype(np.float32)


@pytest.fixture
def wav_files(tmp_path):
    import soundfile as sf

    paths = []
    for i, seconds in enumerate([0.3, 1.1, 0.05, 0.7, 0.4, 0.9, 0.2]):
        path = tmp_path / f"clip{i}.wav"
        sf.write(path, _clip(seconds, i), 8000)
        paths.append(str(path))
    return paths


def _same_bits(a, b):
    assert a[0].dtype == b[0].dtype and a[0].shape == b[0].shape
    assert a[0].tobytes() == b[0].tobytes()  # bit for bit, NaN rows included
    np.testing.assert_array_equal(a[1], b[1])


def test_parallel_and_serial_blocks_are_identical(wav_files):
    audio = [*wav_files[:3], None, (_clip(0.6, 9), 8000), *wav_files[3:]]
    rng = np.random.default_rng(0)
    images = [rng.random((12 + i % 5, 10, 3)) for i in range(11)] + [None]
    volumes = [rng.gamma(2.0, size=(10, 12, 9) if i % 2 else (8, 8, 8)) for i in range(5)]
    cases = [
        (AudioEncoder, {"batch_size": 2}, audio),
        (ImageEncoder, {"batch_size": 4}, images),
        (ScanEncoder, {"batch_size": 2, "spatial_size": (8, 8, 8)}, volumes),
    ]
    for cls, params, items in cases:
        serial = cls(progress=False, **params).fit(items).encode(items)
        parallel = cls(progress=False, n_jobs=2, **params).fit(items).encode(items)
        assert serial[1].sum() == sum(it is not None for it in items)
        _same_bits(serial, parallel)


def test_parallel_errors_name_the_row_and_missing_rows_match(wav_files, tmp_path):
    items = [wav_files[0], wav_files[1], str(tmp_path / "absent.wav"), wav_files[2]]
    enc = AudioEncoder(batch_size=2, n_jobs=2, progress=False).fit(items[:1])
    with pytest.raises(FileNotFoundError, match=r"row 2 of the column: .*absent\.wav"):
        enc.transform(items)
    lenient = AudioEncoder(batch_size=2, n_jobs=2, on_error="missing", progress=False)
    with pytest.warns(MissingItemsWarning, match=r"1 unreadable audio item.*row 2: .*absent"):
        block, available = lenient.fit(items[:1]).encode(items)
    assert available.tolist() == [True, True, False, True]
    assert np.isnan(block[2]).all() and np.isfinite(block[available]).all()


def test_threaded_reads_raise_the_first_bad_row(wav_files, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    items = [wav_files[0], str(bad), wav_files[1], str(tmp_path / "absent.wav")]
    # One chunk of four items, read by the thread pool: row 1 is reported, as serially.
    with pytest.raises(Exception, match=r"row 1 of the column: audio file '.*bad\.wav'"):
        AudioEncoder(batch_size=8, progress=False).fit(items[:1]).transform(items)


def test_map_in_threads_keeps_order_and_outcomes():
    out = map_in_threads(lambda v: 1 / v, [1, 2, 0, 4, 5], threads=3)
    assert [ok for ok, _ in out] == [True, True, False, True, True]
    assert [v for ok, v in out if ok] == [1.0, 0.5, 0.25, 0.2]
    assert isinstance(out[2][1], ZeroDivisionError)
    assert map_in_threads(str, [], threads=4) == []


def test_n_jobs_is_validated_and_refused_for_network_backends():
    from sklearn.utils._param_validation import InvalidParameterError

    vol = np.zeros((4, 4, 4))
    with pytest.raises(InvalidParameterError, match="n_jobs"):
        ScanEncoder(n_jobs=0).fit([vol])
    with pytest.raises(ValueError, match=r"n_jobs=2\) parallelizes the weights-free default"):
        ScanEncoder(backend="monai", model="DenseNet121", weights="w.pt", n_jobs=2).fit([vol])
    with pytest.raises(ValueError, match="backend='torchvision' batches its network"):
        ImageEncoder(backend="torchvision", model="resnet18", n_jobs=-1).fit([np.zeros((4, 4))])
