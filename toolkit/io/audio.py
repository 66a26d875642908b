"""Audio reader: soundfile for decoding, torchaudio for resampling."""

from __future__ import annotations

from typing import Any

import numpy as np

from toolkit._utils import describe_item
from toolkit.exceptions import ReadError
from toolkit.io._paths import as_path, check_exists

#: Longest clip accepted, in seconds (longer ones are refused rather than exhausting memory).
MAX_SECONDS = 3600.0


def _to_mono(wave: np.ndarray, what: str) -> np.ndarray:
    if wave.ndim == 1:
        return wave
    if wave.ndim == 2:
        # soundfile gives (frames, channels); arrays may be (channels, frames).
        axis = 1 if wave.shape[0] > wave.shape[1] else 0
        return wave.mean(axis=axis)
    raise ReadError(
        f"{what}: expected a 1-D (mono) or 2-D (multichannel) waveform, got {wave.ndim} dimensions"
    )


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono float32 waveform with torchaudio (band-limited sinc interpolation)."""
    if orig_sr == target_sr:
        return wave
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), int(orig_sr), int(target_sr))
    return out.numpy()


def read_audio(item: Any, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read one audio item as a mono float32 waveform.

    Parameters
    ----------
    item : str, path-like, tuple (waveform, sample_rate) or ndarray
        A WAV/FLAC/OGG file, a ``(waveform, sample_rate)`` pair, or a bare waveform array
        (then ``sample_rate`` must be given and is taken as its rate). Multichannel audio
        is mixed down to mono.
    sample_rate : int, optional
        Target rate; the waveform is resampled to it with torchaudio.

    Returns
    -------
    waveform : ndarray of shape (n_frames,), float32
    sample_rate : int
    """
    path = as_path(item)
    if path is not None:
        what = f"audio file '{path}'"
        check_exists(path, "audio")
        if path.is_dir():
            raise ReadError(f"{what} is a folder, not an audio file")
        import soundfile as sf

        try:
            info = sf.info(str(path))
            if info.frames / max(info.samplerate, 1) > MAX_SECONDS:
                raise ReadError(
                    f"{what} lasts {info.frames / info.samplerate:.0f} s, longer than the "
                    f"{MAX_SECONDS:.0f} s limit; split it into shorter clips"
                )
            wave, sr = sf.read(str(path), dtype="float32", always_2d=False)
        except ReadError:
            raise
        except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError
            raise ReadError(
                f"{what} could not be decoded as audio ({type(exc).__name__}: {exc}); "
                "check that it is a WAV, FLAC or OGG file and not truncated"
            ) from exc
    elif isinstance(item, tuple) and len(item) == 2:
        wave, sr = item
        what = f"audio item {describe_item(item)}"
        wave = np.asarray(wave)
        if not isinstance(sr, (int, np.integer)) or sr <= 0:
            raise ReadError(f"{what}: sample rate must be a positive integer, got {sr!r}")
    elif isinstance(item, np.ndarray):
        what = f"audio item {describe_item(item)}"
        if sample_rate is None:
            raise ReadError(
                f"{what}: a bare waveform needs a sample rate; pass (waveform, sample_rate)"
            )
        wave, sr = item, sample_rate
    else:
        raise ReadError(
            f"audio item {describe_item(item)} of type {type(item).__name__} is not a path, "
            "(waveform, sample_rate) pair or array"
        )
    wave = np.asarray(wave)
    if not np.issubdtype(wave.dtype, np.number):
        raise ReadError(f"{what}: waveform has non-numeric dtype {wave.dtype}")
    if np.issubdtype(wave.dtype, np.integer):
        wave = wave.astype(np.float32) / float(np.iinfo(wave.dtype).max)
    wave = _to_mono(wave.astype(np.float32, copy=False), what)
    if wave.size == 0:
        raise ReadError(f"{what} holds no samples (zero-length audio)")
    if not np.all(np.isfinite(wave)):
        raise ReadError(f"{what} contains NaN or infinite samples")
    sr = int(sr)
    if sample_rate is not None and sr != sample_rate:
        wave = resample(wave, sr, int(sample_rate))
        sr = int(sample_rate)
    return np.ascontiguousarray(wave, dtype=np.float32), sr
