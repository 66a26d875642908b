"""Audio reader: soundfile for decoding, a streaming torchaudio sinc kernel for resampling.

Resources are bounded before anything is decoded: a file's duration and sample rate come
from its header (``soundfile.info``) and are checked against ``max_seconds`` and
``max_sample_rate``, and the size of the waveform that will be returned (4 bytes per sample
at the returned rate) against ``max_decoded_bytes``. The file is then decoded in blocks of
about 2**18 samples; each block is checked (NaN, float32 range), mixed down to mono and
resampled as it arrives, and written into the output array, which is allocated once. Peak
memory is therefore the returned waveform plus a few MB, whatever the source rate, channel
count or compression ratio (a 0.4 MB FLAC of 600 s of 192 kHz silence read at 16 kHz holds
38 MB, not the 460 MB of its source-rate samples); decoding time grows with the source
samples (at most ``max_seconds`` x ``max_sample_rate``). Decoding stops if the data runs past
what the header promised, and a file that ends before it is refused as truncated, never read
as a shorter clip: a WAV whose ``data`` chunk is cut (libsndfile shortens it to the bytes
present) is found from the chunk's declared size before decoding, other files by counting the
decoded frames. Arrays given as ``(waveform, rate)`` get the same checks before
they are converted, and are converted block by block the same way.

Resampling goes through :class:`Resampler` (and :func:`resample`), whose cost is bounded for
every pair of rates (see :data:`MAX_RESAMPLE_FACTOR`); rates that cannot be related by
bounded factors (a 7 Hz file read at 16 kHz) are refused with a ``ReadError``.

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

from collections.abc import Iterator
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
#: Largest waveform returned, in bytes (``max_decoded_bytes``): 4 bytes per sample at the
#: returned rate (the target ``sample_rate``, else the clip's own), computed from the header
#: (or the array's shape) and checked before decoding. 512 MiB holds 3600 s at 37 kHz; the
#: reader's peak memory is this waveform plus a few MB (see the module docstring).
MAX_DECODED_BYTES = 512 * 2**20
#: Largest up- or down-sampling factor :func:`resample` uses (``max_factor``). Rates whose
#: ratio, reduced, has a larger numerator or denominator (44,101 -> 16,000 Hz is 16000/44101)
#: are resampled by the closest ratio p/q with p, q <= this bound (relative rate error below
#: 1e-5 for common targets); the sinc kernel then holds at most about
#: ``MAX_RESAMPLE_FACTOR * (MAX_RESAMPLE_FACTOR + 16)`` values (~4 MB in float32).
MAX_RESAMPLE_FACTOR = 1024
#: Most channels a 2-D waveform array may have; it is how the channel axis is recognised.
ARRAY_MAX_CHANNELS = 32

_BLOCK_SAMPLES = 1 << 18  # samples (frames x channels) decoded at a time
_MAX_WAV_CHUNKS = 64  # RIFF chunks looked through for a WAV's data chunk
_RESAMPLE_WORK = 1 << 18  # window values (kernel positions x kernel size) resampled at a time
_MAX_RATE_ERROR = 1e-3
_BYTES_PER_SAMPLE = 4  # float32


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def resample_factors(
    orig_sr: int, target_sr: int, max_factor: int = MAX_RESAMPLE_FACTOR
) -> tuple[int, int]:
    """The (down, up) integer factors that resample ``orig_sr`` to ``target_sr``.

    The exact reduced ratio ``target_sr / orig_sr`` when both its terms are at most
    ``max_factor``; otherwise its best rational approximation with both terms bounded
    (``Fraction.limit_denominator`` of the ratio taken at most 1, then inverted back), so
    the resampling kernel, of about ``up * (down + 16)`` values, stays bounded.

    Raises
    ------
    ValueError
        A rate or ``max_factor`` is not a positive integer, or the ratio cannot be
        approximated within 0.1 % by factors up to ``max_factor`` (the rates are more than
        ``max_factor`` apart, e.g. 7 Hz -> 16,000 Hz).
    """
    orig = _positive_int(orig_sr, "orig_sr")
    target = _positive_int(target_sr, "target_sr")
    max_factor = _positive_int(max_factor, "max_factor")
    ratio = Fraction(target, orig)
    if ratio.numerator <= max_factor and ratio.denominator <= max_factor:
        return ratio.denominator, ratio.numerator
    # Approximate the ratio taken at most 1: its denominator bounds both of its terms.
    small = min(ratio, 1 / ratio)
    approx = small.limit_denominator(max_factor)
    if approx == 0 or abs(float(approx / small) - 1.0) > _MAX_RATE_ERROR:
        raise ValueError(
            f"cannot resample from {orig} Hz to {target} Hz with factors up to "
            f"{max_factor}: the rates are too far apart; resample in two steps or choose a "
            "closer target rate"
        )
    if ratio > 1:
        approx = 1 / approx
    return approx.denominator, approx.numerator


class Resampler:
    """Band-limited sinc resampling of a mono float32 stream, fed block by block.

    Uses torchaudio's kernel (``torchaudio.transforms.Resample(down, up)``: Hann-windowed
    sinc, 6 zero crossings, rolloff 0.99) with the factors of :func:`resample_factors`, and
    gives the same samples as ``torchaudio.functional.resample`` on the whole waveform, but
    holds only the kernel (``up * (down + 2 * width)`` values) and one block at a time.

    Parameters
    ----------
    orig_sr, target_sr : int
    max_factor : int, default=1024 (:data:`MAX_RESAMPLE_FACTOR`)

    Examples
    --------
    >>> import numpy as np
    >>> r = Resampler(8000, 16000)
    >>> parts = [r.feed(np.ones(300, np.float32)), r.feed(np.ones(200, np.float32)), r.finish()]
    >>> sum(len(p) for p in parts)
    1000
    """

    def __init__(self, orig_sr: int, target_sr: int, *, max_factor: int = MAX_RESAMPLE_FACTOR):
        import torchaudio

        self.down, self.up = resample_factors(orig_sr, target_sr, max_factor)
        transform = torchaudio.transforms.Resample(self.down, self.up)
        self.identity = self.down == self.up
        self.kernel = None if self.identity else transform.kernel  # (up, 1, down + 2 * width)
        # (down + 2 * width, up) float32: output sample up * k + j is windows[k] @ taps[:, j].
        self._taps = None if self.identity else self.kernel[:, 0].T.numpy().astype(np.float32)
        self.width = 0 if self.identity else int(transform.width)
        self._buf = np.zeros(self.width, dtype=np.float32)  # the leading zero padding
        self._start = 0  # padded index of _buf[0]
        self._step = 0  # next kernel position (output samples up * step onwards)
        self._n_in = 0
        self._n_out = 0

    def output_length(self, n_in: int) -> int:
        """Samples produced for ``n_in`` input samples: ``ceil(n_in * up / down)``."""
        return -(-int(n_in) * self.up // self.down)

    def feed(self, wave: np.ndarray) -> np.ndarray:
        """Resample the next block; returns the output samples it completes."""
        wave = np.asarray(wave, dtype=np.float32)
        self._n_in += len(wave)
        if self.identity:
            self._n_out += len(wave)
            return wave
        self._buf = np.concatenate([self._buf, wave])
        return self._run()

    def finish(self) -> np.ndarray:
        """The remaining output samples (the trailing zero padding is applied here)."""
        if self.identity:
            return np.zeros(0, dtype=np.float32)
        self._buf = np.concatenate([self._buf, np.zeros(self.width + self.down, np.float32)])
        out = self._run()
        keep = self.output_length(self._n_in) - (self._n_out - len(out))
        self._n_out = self.output_length(self._n_in)
        self._buf = np.zeros(0, dtype=np.float32)
        return out[: max(keep, 0)]

    def _run(self) -> np.ndarray:
        size = self.kernel.shape[-1]
        end = (self._start + len(self._buf) - size) // self.down + 1  # kernel positions that fit
        if end <= self._step:
            return np.zeros(0, dtype=np.float32)
        lo = self._step * self.down - self._start
        hi = (end - 1) * self.down + size - self._start
        # The strided convolution as windows @ kernel in numpy, a bounded number of kernel
        # positions at a time. (torch's conv1d gives the same samples but, through oneDNN,
        # compiles a kernel for every new input length: ~10 ms per clip of varying length.)
        windows = np.lib.stride_tricks.sliding_window_view(self._buf[lo:hi], size)[:: self.down]
        taps = self._taps
        step = max(1, _RESAMPLE_WORK // size)
        out = np.concatenate(
            [windows[i : i + step] @ taps for i in range(0, len(windows), step)]
        ).reshape(-1)
        self._buf = self._buf[end * self.down - self._start :].copy()
        self._start = end * self.down
        self._step = end
        self._n_out += len(out)
        return out


def resample(
    wave: np.ndarray, orig_sr: int, target_sr: int, *, max_factor: int = MAX_RESAMPLE_FACTOR
) -> np.ndarray:
    """Resample a mono float32 waveform (band-limited sinc interpolation, see :class:`Resampler`).

    The rates are first reduced to the factors of :func:`resample_factors`, so the cost is
    bounded for awkward rates: the kernel has ``up * (down + 2 * width)`` values and each
    output sample costs ``down + 2 * width`` multiply-adds, with ``up, down <= max_factor``.
    The waveform is processed in blocks, so memory holds the result plus one block. The
    result has ``ceil(len(wave) * up / down)`` samples.
    """
    if orig_sr == target_sr:
        return wave
    resampler = Resampler(orig_sr, target_sr, max_factor=max_factor)
    out = np.empty(resampler.output_length(len(wave)), dtype=np.float32)
    filled = 0
    parts = (
        resampler.feed(wave[i : i + _BLOCK_SAMPLES]) for i in range(0, len(wave), _BLOCK_SAMPLES)
    )
    for part in (*parts, resampler.finish()):
        out[filled : filled + len(part)] = part
        filled += len(part)
    return out


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


def _decode_error(what: str, exc: Exception) -> ReadError:
    return ReadError(
        f"{what} could not be decoded as audio ({type(exc).__name__}: {exc}); "
        "check that it is a WAV, FLAC or OGG file and not truncated"
    )


def _wav_declared_bytes(path, file_size: int) -> tuple[int, int, int] | None:
    """(declared data bytes, bytes present after the data chunk's start, block align) of a
    RIFF/RIFX WAVE file, or None for other files and streamed WAVs of unknown length.

    libsndfile shortens a ``data`` chunk that runs past the end of the file to what is
    there, so a truncated WAV reads as a shorter clip; the chunk's own size says otherwise.
    """
    import struct

    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        order = "<" if head[:4] == b"RIFF" else ">"
        align = None
        for _ in range(_MAX_WAV_CHUNKS):
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            kind, size = chunk[:4], struct.unpack(order + "I", chunk[4:])[0]
            if kind == b"fmt ":
                fmt = fh.read(min(size, 16))
                if len(fmt) >= 14:
                    align = struct.unpack(order + "H", fmt[12:14])[0]
                fh.seek(size + (size & 1) - len(fmt), 1)
            elif kind == b"data":
                if size in (0, 0xFFFFFFFF) or not align:  # length left to the reader
                    return None
                return size, file_size - fh.tell(), align
            else:
                fh.seek(size + (size & 1), 1)
    return None


def _check_wav_complete(path, what: str, file_size: int, frames: int, sr: int) -> None:
    """Refuse a WAV whose data chunk is cut: fewer frames present than its header declares."""
    declared = _wav_declared_bytes(path, file_size)
    if declared is None:
        return
    size, present, align = declared
    if present < size and frames < size // align:
        raise ReadError(
            f"{what} is truncated: its header declares {size // align:,} frames "
            f"({size // align / sr:,.2f} s) of audio data but the file holds only {frames:,} "
            f"({frames / sr:,.2f} s); it would be read as a shorter clip; re-export or "
            "re-copy the file"
        )


def _file_header(path, what: str, max_seconds: float, max_sample_rate: int, file_size: int):
    """(frames, rate, dtype, whether frames is exact) from the header, with the duration
    and rate checked (and a WAV's data chunk against the file's size)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        raise _decode_error(what, exc) from exc
    if info.samplerate <= 0:
        raise ReadError(f"{what}: its header declares sample rate {info.samplerate}; re-export it")
    sr = _check_rate(int(info.samplerate), what, max_sample_rate, "its header's")
    _check_duration(int(info.frames), sr, what, max_seconds, "from its header")
    if info.format == "WAV":
        _check_wav_complete(path, what, file_size, int(info.frames), sr)
    dtype = "float64" if info.subtype == "DOUBLE" else "float32"
    # MPEG headers may only estimate their length; the others state it exactly.
    return int(info.frames), sr, dtype, info.format != "MPEG"


def _file_blocks(path, what: str, header: tuple, max_seconds: float):
    """(frames, channels) blocks of a file, stopping if it runs past ``max_seconds``, and
    refusing one that ends before the frames its header declares (when they are exact)."""
    import soundfile as sf

    frames, sr, dtype, exact = header
    limit, total = int(max_seconds * sr), 0
    try:
        with sf.SoundFile(str(path)) as fh:
            blocksize = max(1, _BLOCK_SAMPLES // max(fh.channels, 1))
            for block in fh.blocks(blocksize=blocksize, dtype=dtype, always_2d=True):
                total += len(block)
                if total > limit:
                    raise ReadError(
                        f"{what} decodes to more than max_seconds={max_seconds:g} s although "
                        f"its header says {frames / sr:,.1f} s; the file is corrupt"
                    )
                yield block
    except ReadError:
        raise
    except Exception as exc:
        raise _decode_error(what, exc) from exc
    if exact and total < frames:
        raise ReadError(
            f"{what} is truncated: its header declares {frames:,} frames ({frames / sr:,.2f} "
            f"s) but only {total:,} could be decoded; re-export or re-copy the file"
        )


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


def _array_source(item: Any, sample_rate, what: str, max_seconds: float, max_sample_rate: int):
    """(frames, rate, blocks) of a waveform array; blocks are (frames, channels) views."""
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
    frames = int(wave.shape[1 if axis == 0 else 0])
    _check_duration(frames, sr, what, max_seconds, f"{frames:,} frames at {sr:,} Hz")
    framed = wave[:, None] if axis is None else wave.T if axis == 0 else wave
    step = max(1, _BLOCK_SAMPLES // framed.shape[1])
    return frames, sr, (framed[i : i + step] for i in range(0, frames, step))


def _mono_float32(block: np.ndarray, what: str, offset: int) -> np.ndarray:
    """One (frames, channels) block as checked mono float32 (``offset``: its first frame)."""
    if block.dtype.kind in "iu":
        block = _pcm_to_float(block)
    block = as_finite_float32(block, what, "samples", offset=offset, copy=False)
    channels = block.shape[1]
    # Dividing first cannot overflow.
    return block[:, 0] if channels == 1 else (block / channels).sum(axis=1, dtype=np.float32)


def _decoded_size_error(what: str, samples: int, rate: int, limit: int, source: str):
    return ReadError(
        f"{what} decodes to {samples * _BYTES_PER_SAMPLE / 2**20:,.1f} MiB of float32 samples "
        f"at {rate:,} Hz ({source}), above the max_decoded_bytes={limit:,} limit; split it into "
        "shorter clips, read it at a lower sample_rate, or raise max_decoded_bytes"
    )


def _stream(blocks: Iterator[np.ndarray], frames: int, sr: int, target, what: str, limit: int):
    """Check, mix down and resample ``blocks`` into one float32 array allocated once."""
    rate = sr if target is None else int(target)
    try:
        resampler = Resampler(sr, rate) if rate != sr else None
    except ValueError as exc:
        raise ReadError(f"{what}: {exc}") from exc
    expected = resampler.output_length(frames) if resampler else frames
    if expected * _BYTES_PER_SAMPLE > limit:
        raise _decoded_size_error(what, expected, rate, limit, "from its header or shape")
    out = np.empty(expected, dtype=np.float32)
    filled = offset = 0

    def put(part: np.ndarray) -> None:
        nonlocal out, filled
        if filled + len(part) > len(out):  # more data than the header promised
            if (filled + len(part)) * _BYTES_PER_SAMPLE > limit:
                raise _decoded_size_error(what, filled + len(part), rate, limit, "as decoded")
            grown = np.empty(max(2 * len(out), filled + len(part)), dtype=np.float32)
            grown[:filled] = out[:filled]
            out = grown
        out[filled : filled + len(part)] = part
        filled += len(part)

    for block in blocks:
        mono = _mono_float32(block, what, offset)
        offset += len(block)
        put(resampler.feed(mono) if resampler else mono)
    if resampler:
        put(resampler.finish())
    return out[:filled], rate


def _check_target_rate(sample_rate, max_sample_rate: int) -> None:
    """``sample_rate`` is None or an integer in (0, max_sample_rate]; else ValueError."""
    if sample_rate is not None and (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, (int, np.integer))
        or not 0 < sample_rate <= max_sample_rate
    ):
        raise ValueError(
            f"sample_rate must be a positive integer up to max_sample_rate={max_sample_rate:,}, "
            f"got {sample_rate!r}"
        )


def read_audio(
    item: Any,
    sample_rate: int | None = None,
    *,
    max_seconds: float = MAX_SECONDS,
    max_sample_rate: int = MAX_SAMPLE_RATE,
    max_decoded_bytes: int = MAX_DECODED_BYTES,
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
        Target rate; the waveform is resampled to it block by block (see
        :class:`Resampler`).
    max_seconds : float, default=3600.0 (:data:`MAX_SECONDS`)
        Longest clip accepted; a file's duration is read from its header and checked
        before decoding.
    max_sample_rate : int, default=768000 (:data:`MAX_SAMPLE_RATE`)
        Highest sample rate accepted for the clip and for ``sample_rate``.
    max_decoded_bytes : int, default=512 MiB (:data:`MAX_DECODED_BYTES`)
        Largest waveform returned (4 bytes per sample at the returned rate), computed from
        the header or shape and checked before decoding. Peak memory is about this much
        plus a few MB.

    Returns
    -------
    waveform : ndarray of shape (n_frames,), float32
    sample_rate : int

    Raises
    ------
    ReadError
        Naming the item: undecodable, truncated (fewer frames than its header declares),
        FIFO/device, too long, too high a rate, too large
        once decoded, rates too far apart to resample, ambiguous layout,
        complex/boolean/non-numeric samples, NaN or out-of-float32-range values.
    FileNotFoundError
        The path does not exist.
    """
    _check_target_rate(sample_rate, max_sample_rate)
    _positive_int(max_decoded_bytes, "max_decoded_bytes")
    path = as_path(item)
    if path is not None:
        what = f"audio file '{path}'"
        size = check_path(path, "audio").st_size
        header = _file_header(path, what, max_seconds, max_sample_rate, size)
        frames, sr = header[:2]
        blocks = _file_blocks(path, what, header, max_seconds)
    elif (isinstance(item, tuple) and len(item) == 2) or isinstance(item, np.ndarray):
        what = f"audio item {describe_item(item)}"
        frames, sr, blocks = _array_source(item, sample_rate, what, max_seconds, max_sample_rate)
    else:
        raise ReadError(
            f"audio item {describe_item(item)} of type {type(item).__name__} is not a path, "
            "(waveform, sample_rate) pair or array"
        )
    wave, sr = _stream(blocks, frames, sr, sample_rate, what, max_decoded_bytes)
    if wave.size == 0:
        raise ReadError(f"{what} holds no samples (zero-length audio)")
    return wave, sr
