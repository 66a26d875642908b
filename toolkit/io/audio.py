"""Audio reader: soundfile for decoding, torchaudio for resampling.

Resources are bounded before anything is decoded: a file's duration and sample rate come
from its header (``soundfile.info``) and are checked against ``max_seconds`` and
``max_sample_rate``; the file is then decoded in blocks that are mixed down to mono as they
arrive, so memory holds one mono float32 copy (4 bytes x seconds x rate) whatever the channel
count, and decoding stops if the data runs past what the header promised. Arrays given as
``(waveform, rate)`` get the same checks before they are converted.

Resampling goes through :func:`resample`, whose cost is bounded for every pair of rates
(see :data:`MAX_RESAMPLE_FACTOR`).

Array layout convention: a 1-D array is mono; a 2-D array is ``(frames, channels)`` as
soundfile returns it, or ``(channels, frames)`` as torchaudio returns it. The channel axis
is the one of length at most :data:`ARRAY_MAX_CHANNELS`; a shape where both axes (or
neither) could be the channel axis, such as (3, 8), is refused instead of guessed: mix it
down yourself and pass the 1-D mono waveform.

Integer waveforms are PCM and scaled by their type's full range: signed types are divided
by 2**(bits-1) (int16: /32768, int32: /2**31), unsigned types are centred first (uint8:
(x - 128) / 128). Complex, boolean and non-numeric waveforms are refused.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from toolkit._utils import describe_item
from toolkit.exceptions import ReadError
from toolkit.io._checks import as_finite_float32, check_real_dtype
from toolkit.io._paths import as_path, check_path

#: Longest clip accepted, in seconds (``max_seconds``); longer ones are refused before decoding.
MAX_SECONDS = 3600.0
#: Highest sample rate accepted, in Hz (``max_sample_rate``), for clips and target rates.
MAX_SAMPLE_RATE = 768_000
#: Largest up- or down-sampling factor :func:`resample` uses (``max_factor``). Rates whose
#: ratio, reduced, has a larger numerator or denominator (44,101 -> 16,000 Hz is 16000/44101)
#: are resampled by the closest ratio p/q with p, q <= this bound (relative rate error below
#: 1e-5 for common targets); the sinc kernel then holds at most about
#: ``MAX_RESAMPLE_FACTOR * (MAX_RESAMPLE_FACTOR + 16)`` values (~4 MB in float32).
MAX_RESAMPLE_FACTOR = 1024
#: Most channels a 2-D waveform array may have; it is how the channel axis is recognised.
ARRAY_MAX_CHANNELS = 32

_BLOCK_SAMPLES = 1 << 18  # samples (frames x channels) decoded at a time
_MAX_RATE_ERROR = 1e-3


def resample_factors(
    orig_sr: int, target_sr: int, max_factor: int = MAX_RESAMPLE_FACTOR
) -> tuple[int, int]:
    """The (down, up) integer factors that resample ``orig_sr`` to ``target_sr``.

    The exact reduced ratio ``target_sr / orig_sr`` when both its terms are at most
    ``max_factor``; otherwise its best rational approximation with both terms bounded
    (``Fraction.limit_denominator``), so the resampling kernel, of about
    ``up * (down + 16)`` values, stays bounded.

    Raises
    ------
    ValueError
        The ratio cannot be approximated within 0.1 % by factors up to ``max_factor``
        (the rates are more than ``max_factor`` apart).
    """
    ratio = Fraction(int(target_sr), int(orig_sr))
    if ratio.numerator <= max_factor and ratio.denominator <= max_factor:
        return ratio.denominator, ratio.numerator
    approx = (
        ratio.limit_denominator(max_factor)
        if ratio <= 1
        else 1 / (1 / ratio).limit_denominator(max_factor)
    )
    if approx == 0 or abs(float(approx / ratio) - 1.0) > _MAX_RATE_ERROR:
        raise ValueError(
            f"cannot resample from {orig_sr} Hz to {target_sr} Hz with factors up to "
            f"{max_factor}: the rates are too far apart; resample in two steps or choose a "
            "closer target rate"
        )
    return approx.denominator, approx.numerator


def resample(
    wave: np.ndarray, orig_sr: int, target_sr: int, *, max_factor: int = MAX_RESAMPLE_FACTOR
) -> np.ndarray:
    """Resample a mono float32 waveform with torchaudio (band-limited sinc interpolation).

    The rates are first reduced to the factors of :func:`resample_factors`, so the cost is
    bounded for awkward rates: torchaudio's kernel has ``up * (down + 2 * width)`` values
    and each output sample costs ``down + 2 * width`` multiply-adds, with ``up, down <=
    max_factor``. The result has ``ceil(len(wave) * up / down)`` samples.
    """
    if orig_sr == target_sr:
        return wave
    import torch
    import torchaudio.functional as AF

    down, up = resample_factors(orig_sr, target_sr, max_factor)
    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), down, up)
    return out.numpy()


def _check_rate(sr: Any, what: str, max_sample_rate: int, source: str) -> int:
    if isinstance(sr, (bool, np.bool_)) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ReadError(f"{what}: sample rate must be a positive integer, got {sr!r}")
    if sr > max_sample_rate:
        raise ReadError(
            f"{what}: {source} sample rate {int(sr):,} Hz is above the max_sample_rate="
            f"{max_sample_rate:,} Hz limit; resample it first or raise max_sample_rate"
        )
    return int(sr)


def _check_duration(frames: int, sr: int, what: str, max_seconds: float, source: str) -> None:
    if frames > max_seconds * sr:
        raise ReadError(
            f"{what} lasts {frames / sr:,.1f} s ({source}), longer than the max_seconds="
            f"{max_seconds:g} s limit; split it into shorter clips or raise max_seconds"
        )


def _decode_file(path, what: str, max_seconds: float, max_sample_rate: int):
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        raise ReadError(
            f"{what} could not be decoded as audio ({type(exc).__name__}: {exc}); "
            "check that it is a WAV, FLAC or OGG file and not truncated"
        ) from exc
    if info.samplerate <= 0:
        raise ReadError(f"{what}: its header declares sample rate {info.samplerate}; re-export it")
    sr = _check_rate(int(info.samplerate), what, max_sample_rate, "its header's")
    _check_duration(int(info.frames), sr, what, max_seconds, "from its header")
    limit = int(max_seconds * sr)
    dtype = "float64" if info.subtype == "DOUBLE" else "float32"
    chunks, total = [], 0
    try:
        with sf.SoundFile(str(path)) as fh:
            blocksize = max(1, _BLOCK_SAMPLES // max(fh.channels, 1))
            for block in fh.blocks(blocksize=blocksize, dtype=dtype, always_2d=True):
                total += len(block)
                if total > limit:
                    raise ReadError(
                        f"{what} decodes to more than max_seconds={max_seconds:g} s although "
                        f"its header says {info.frames / sr:,.1f} s; the file is corrupt"
                    )
                # soundfile gives (frames, channels): mix down per block (bounded memory);
                # dividing first cannot overflow.
                channels = block.shape[1]
                chunks.append(block[:, 0].copy() if channels == 1 else (block / channels).sum(1))
    except ReadError:
        raise
    except Exception as exc:
        raise ReadError(
            f"{what} could not be decoded as audio ({type(exc).__name__}: {exc}); "
            "check that it is a WAV, FLAC or OGG file and not truncated"
        ) from exc
    wave = np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)
    return wave, sr


def _channel_axis(wave: np.ndarray, what: str) -> int | None:
    """The channel axis of a waveform array (None when mono); refuses ambiguous shapes."""
    if wave.ndim == 1:
        return None
    if wave.ndim != 2:
        raise ReadError(
            f"{what}: expected a 1-D (mono) or 2-D (frames, channels) waveform, got "
            f"{wave.ndim} dimensions"
        )
    fits = [wave.shape[a] <= ARRAY_MAX_CHANNELS for a in (0, 1)]
    if fits[0] != fits[1]:
        return 0 if fits[0] else 1
    if all(fits):
        problem = (
            f"both axes of shape {wave.shape} could be the channel axis (at most "
            f"{ARRAY_MAX_CHANNELS} channels)"
        )
    else:
        problem = f"neither axis of shape {wave.shape} has at most {ARRAY_MAX_CHANNELS} channels"
    raise ReadError(
        f"{what}: {problem}, so the layout is ambiguous; mix it down yourself and pass the 1-D "
        "mono waveform, e.g. (wave.mean(axis=1), rate) for (frames, channels) data"
    )


def _pcm_to_float(wave: np.ndarray) -> np.ndarray:
    """Integer PCM scaled by the type's full range (unsigned types centred)."""
    info = np.iinfo(wave.dtype)
    half = 2.0 ** (info.bits - 1)
    x = wave.astype(np.float64 if info.bits > 16 else np.float32)
    if info.min == 0:
        x -= half
    x /= half
    return x


def _array_wave(item: Any, sample_rate, what: str, max_seconds: float, max_sample_rate: int):
    if isinstance(item, tuple):
        wave, sr = item
        sr = _check_rate(sr, what, max_sample_rate, "its")
    else:
        wave = item
        if sample_rate is None:
            raise ReadError(
                f"{what}: a bare waveform needs a sample rate; pass (waveform, sample_rate)"
            )
        sr = int(sample_rate)
    try:
        wave = np.asarray(wave)
    except (ValueError, TypeError) as exc:
        raise ReadError(
            f"{what}: the waveform is not a rectangular numeric array ({exc}); pass a 1-D "
            "array of samples or a 2-D (frames, channels) array"
        ) from exc
    check_real_dtype(wave, what, "samples")
    if wave.size == 0:
        raise ReadError(f"{what} holds no samples (zero-length audio)")
    axis = _channel_axis(wave, what)
    frames = wave.shape[0 if axis in (None, 1) else 1]
    _check_duration(int(frames), sr, what, max_seconds, f"{frames:,} frames at {sr:,} Hz")
    if wave.dtype.kind in "iu":
        wave = _pcm_to_float(wave)
    wave = as_finite_float32(wave, what, "samples")
    if axis is not None:
        wave = (wave / wave.shape[axis]).sum(axis=axis, dtype=np.float32)
    return wave, sr


def read_audio(
    item: Any,
    sample_rate: int | None = None,
    *,
    max_seconds: float = MAX_SECONDS,
    max_sample_rate: int = MAX_SAMPLE_RATE,
) -> tuple[np.ndarray, int]:
    """Read one audio item as a mono float32 waveform.

    Parameters
    ----------
    item : str, path-like, tuple (waveform, sample_rate) or ndarray
        A WAV/FLAC/OGG file, a ``(waveform, sample_rate)`` pair, or a bare waveform array
        (then ``sample_rate`` must be given and is taken as its rate). Multichannel audio
        is mixed down to mono; arrays follow the layout convention of this module's
        docstring ((frames, channels) or (channels, frames), ambiguous shapes refused).
        Integer arrays are PCM, scaled by their type's full range.
    sample_rate : int, optional
        Target rate; the waveform is resampled to it (see :func:`resample`).
    max_seconds : float, default=3600.0 (:data:`MAX_SECONDS`)
        Longest clip accepted; a file's duration is read from its header and checked
        before decoding.
    max_sample_rate : int, default=768000 (:data:`MAX_SAMPLE_RATE`)
        Highest sample rate accepted for the clip and for ``sample_rate``.

    Returns
    -------
    waveform : ndarray of shape (n_frames,), float32
    sample_rate : int

    Raises
    ------
    ReadError
        Naming the item: undecodable, FIFO/device, too long, too high a rate, ambiguous
        layout, complex/boolean/non-numeric samples, NaN or out-of-float32-range values.
    FileNotFoundError
        The path does not exist.
    """
    if sample_rate is not None and (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, (int, np.integer))
        or not 0 < sample_rate <= max_sample_rate
    ):
        raise ValueError(
            f"sample_rate must be a positive integer up to max_sample_rate={max_sample_rate:,}, "
            f"got {sample_rate!r}"
        )
    path = as_path(item)
    if path is not None:
        what = f"audio file '{path}'"
        check_path(path, "audio")
        wave, sr = _decode_file(path, what, max_seconds, max_sample_rate)
        wave = as_finite_float32(wave, what, "samples")
    elif (isinstance(item, tuple) and len(item) == 2) or isinstance(item, np.ndarray):
        what = f"audio item {describe_item(item)}"
        wave, sr = _array_wave(item, sample_rate, what, max_seconds, max_sample_rate)
    else:
        raise ReadError(
            f"audio item {describe_item(item)} of type {type(item).__name__} is not a path, "
            "(waveform, sample_rate) pair or array"
        )
    if wave.size == 0:
        raise ReadError(f"{what} holds no samples (zero-length audio)")
    if sample_rate is not None and sr != sample_rate:
        try:
            wave = resample(wave, sr, int(sample_rate))
        except ValueError as exc:
            raise ReadError(f"{what}: {exc}") from exc
        sr = int(sample_rate)
    return np.ascontiguousarray(wave, dtype=np.float32), sr
