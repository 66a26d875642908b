"""Audio backend ``"mfcc"``: MFCC and prosody statistics computed as batched tensor
operations, needing no weights (see ``AudioEncoder``)."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval

from toolkit.encoders.backends.base import Backend
from toolkit.encoders.base import one_torch_thread

_PROSODY = [
    "log_duration", "energy_mean_db", "energy_std_db", "energy_range_db", "voiced_ratio",
    "pitch_mean_log2", "pitch_std_log2", "pitch_range_log2", "zcr_mean", "zcr_std", "peak_rate",
]  # fmt: skip


#: Version of the default ("mfcc") statistics; part of the cache key (toolkit.cache), so a
#: cache written by an older definition is never served for the current one.
#: 1: per-clip torchaudio MFCC and NCCF pitch tracker; 2: the batched computation below;
#: 3: level normalization per clip in float64 blocks, spectrogram in bounded time chunks.
FEATURES_VERSION = 3

#: Padded samples (clips x longest clip) computed together; a longer clip goes alone.
_BATCH_SAMPLES = 1 << 22
_TOP_DB = 80.0  # dynamic range kept by the MFCC's dB conversion (torchaudio's MFCC default)
_PITCH_LOW, _PITCH_HIGH, _PITCH_SMOOTH = 60, 500, 30  # Hz, Hz, frames (10 ms) of median
_PITCH_FRAMES = 1 << 13  # pitch frames (all clips of a batch together) correlated at a time
_STFT_FRAMES = 1 << 12  # spectrogram frames (all clips of a batch together) at a time
_NORM_BLOCK = 1 << 16  # samples level-normalized (in float64) at a time


def _reflect_index(length, pad: int, start: int, stop: int):
    """(B, stop - start) indices into each clip's samples for positions ``start:stop`` of
    the clip reflect-padded by ``pad`` at both ends (torch's ``mode="reflect"``), and the
    mask of positions inside the padded clip."""
    import torch

    j = torch.arange(start, stop)[None] - pad  # position in the unpadded clip
    n = length[:, None]
    idx = torch.where(j < 0, -j, torch.where(j >= n, 2 * (n - 1) - j, j))
    inside = j < n + pad
    return idx.clamp(0, int(length.max()) - 1) * inside, inside


def _masked_std(x, mask, count):
    """Unbiased std over the last axis where ``mask`` (0 where fewer than 2 values)."""
    import torch

    mean = (x * mask).sum(-1) / count.clamp(min=1)
    var = (((x - mean[..., None]) * mask) ** 2).sum(-1) / (count - 1).clamp(min=1)
    return torch.where(count > 1, var.sqrt(), torch.zeros_like(var)), mean


def _deltas(c, n_frames):
    """torchaudio's ``compute_deltas`` (window 5, edge frames replicated) of (B, C, T) frames,
    each clip replicating its own last frame rather than reading the padding."""
    import torch

    t = torch.arange(c.shape[-1])[None]
    last = (n_frames - 1)[:, None]
    out = torch.zeros_like(c)
    for k in (1, 2):
        ahead = torch.minimum(t + k, last).expand(c.shape[0], -1)
        behind = (t - k).clamp(min=0).expand(c.shape[0], -1)
        gather = lambda i: c.gather(2, i[:, None].expand(-1, c.shape[1], -1))  # noqa: E731
        out = out + k * (gather(ahead) - gather(behind))
    return out / 10.0


def _pitch_track(x, length, sr: int):
    """Pitch (Hz) of a batch of clips (B, L) on 10 ms frames, and the mask of each clip's
    frames: torchaudio's ``detect_pitch_frequency`` (60-500 Hz, 30-frame median), batched.

    Each clip is taken at least 0.35 s long (zero-padded, so that the median has frames to
    work on, as before). The normalized cross-correlation of every frame with its lags (the
    same frames, normalization and preference for the shorter of two near-equal peaks as
    torchaudio) is computed with FFTs for all frames of all clips at once; the median over
    frames t-14 .. t+15 (frame 0 repeated before the start) is kept for the frames whose
    window lies inside the clip, as torchaudio keeps them, so padding never enters.
    """
    import math

    import torch

    fs = int(math.ceil(sr * 0.01))
    lags = int(math.ceil(sr / _PITCH_LOW))
    length = length.clamp(min=int(0.35 * sr))
    n_frames = torch.div(length + fs - 1, fs, rounding_mode="floor")
    nf = int(n_frames.max())
    padded = torch.nn.functional.pad(x, (0, nf * fs + lags - x.shape[1]))
    windows = padded.unfold(1, fs + lags, fs)[:, :nf]  # (B, nf, fs + lags), a view
    size = 1 << (fs + lags - 1).bit_length()
    lag_min = int(math.ceil(sr / _PITCH_HIGH))
    eps = 1e-9
    step = max(1, _PITCH_FRAMES // len(x))  # frames per step: bounded memory on long clips
    lag = torch.empty(len(x), nf, dtype=torch.long)
    for start in range(0, nf, step):
        win = windows[:, start : start + step]
        head = win[..., :fs]
        spec = torch.fft.rfft(win, size) * torch.fft.rfft(head, size).conj()
        corr = torch.fft.irfft(spec, size)[..., 1 : lags + 1]  # lag 1 .. lags
        cum = torch.nn.functional.pad((win**2).cumsum(-1), (1, 0))
        tail_energy = (cum[..., fs + 1 : fs + lags + 1] - cum[..., 1 : lags + 1]).clamp(min=0)
        head_energy = head.pow(2).sum(-1, keepdim=True)
        nccf = corr / (eps + head_energy.sqrt()) ** 2 / (eps + tail_energy.sqrt()) ** 2
        # Where either side is all zeros (padding) the correlation is exactly 0, as summed
        # directly; the FFT's rounding noise there would be amplified by 1 / eps**2.
        nccf = torch.where((head_energy > 0) & (tail_energy > 0), nccf, 0.0)
        best_v, best_i = nccf[..., lag_min:].max(-1)
        half_v, half_i = nccf[..., lag_min : lags // 2].max(-1)
        prefer_half = half_v > 0.99 * best_v
        lag[:, start : start + step] = torch.where(prefer_half, half_i, best_i) + lag_min + 1
    half = (_PITCH_SMOOTH - 1) // 2
    lag = torch.cat([lag[:, :1].expand(-1, half), lag], dim=1)
    smooth = lag.unfold(1, _PITCH_SMOOTH, 1).median(-1).values  # (B, nf + half - 29)
    valid = torch.arange(smooth.shape[1])[None] < (n_frames - (_PITCH_SMOOTH - 1 - half))[:, None]
    return sr / (1e-9 + smooth.float()), valid


def _level_normalized(wave: np.ndarray) -> np.ndarray:
    """A clip less its mean, divided by its peak (+1e-8), as float32.

    Each clip alone, in float64 blocks of ``_NORM_BLOCK`` samples: its values never depend
    on its batch (the pitch track's lag choice is sensitive to the last bit), and the
    float64 work costs one block, not 8 bytes per sample of the clip.
    """
    n = len(wave)
    blocks = range(0, n, _NORM_BLOCK)
    total = sum(float(np.sum(wave[i : i + _NORM_BLOCK], dtype=np.float64)) for i in blocks)
    mean = total / n
    peak = max(
        float(np.max(np.abs(wave[i : i + _NORM_BLOCK].astype(np.float64) - mean))) for i in blocks
    )
    out = np.empty(n, dtype=np.float32)
    for i in blocks:
        out[i : i + _NORM_BLOCK] = (wave[i : i + _NORM_BLOCK].astype(np.float64) - mean) / (
            peak + 1e-8
        )
    return out


def _energy_zcr(x, win: int, hop: int):
    """Mean power of each ``win``-sample frame (hop ``hop``, no centring) and its zero-
    crossing rate over its ``win - 1`` sample pairs, as (B, F) frame means by pooling.

    Computed for at most ``_STFT_FRAMES`` frames at a time (each frame from its own
    samples, so the values are those of one pass): the squared samples and the crossings
    of a whole long clip would cost 17 bytes per sample at once.
    """
    import torch

    pool = torch.nn.functional.avg_pool1d
    n_out = (x.shape[1] - win) // hop + 1
    energy, zcr = torch.empty(len(x), n_out), torch.empty(len(x), n_out)
    step = max(1, _STFT_FRAMES // len(x))
    for f0 in range(0, n_out, step):
        f1 = min(n_out, f0 + step)
        seg = x[:, f0 * hop : (f1 - 1) * hop + win]
        energy[:, f0:f1] = pool(seg.pow(2)[:, None], win, hop)[:, 0]
        crossings = (seg[:, 1:].sign() != seg[:, :-1].sign()).float()
        zcr[:, f0:f1] = pool(crossings[:, None], win - 1, hop)[:, 0]
    return energy, zcr


def _mel_db(x, length, sr: int, win: int, hop: int, n_mels: int):
    """(B, T, n_mels) power mel spectrogram in dB of centred, reflect-padded frames.

    Computed for at most ``_STFT_FRAMES`` frames (all clips together) at a time: the
    framed samples and the complex spectrum cost about 30 bytes per sample of the clip,
    which for a 3,000 s clip at 16 kHz was 5 GB at once; the result holds 4 * n_mels bytes
    per frame (a 1/4 of the waveform's size at 16 kHz with 40 mel bands).
    """
    import torch
    import torchaudio.functional as AF

    n_fft = 1 << (win - 1).bit_length()
    pad = n_fft // 2
    t_max = 1 + (x.shape[1] + 2 * pad - n_fft) // hop
    window = torch.hann_window(win)
    fb = AF.melscale_fbanks(n_fft // 2 + 1, 0.0, float(sr // 2), n_mels, sr)
    out = torch.empty(len(x), t_max, n_mels)
    step = max(1, _STFT_FRAMES // len(x))
    for t0 in range(0, t_max, step):
        t1 = min(t_max, t0 + step)
        idx, keep = _reflect_index(length, pad, t0 * hop, (t1 - 1) * hop + n_fft)
        spec = AF.spectrogram(
            x.gather(1, idx) * keep, pad=0, window=window, n_fft=n_fft, hop_length=hop,
            win_length=win, power=2.0, normalized=False, center=False,
        )  # fmt: skip
        out[:, t0:t1] = 10 * torch.log10((spec.transpose(1, 2) @ fb).clamp(min=1e-10))
    return out


def _padded_batch(waves: list[np.ndarray], sr: int):
    """(lengths, padded lengths, (B, longest) tensor) of the level-normalized clips,
    zero-padded to the longest; very short clips count as 0.1 s long."""
    import torch

    lengths0 = torch.tensor([len(w) for w in waves])
    length = lengths0.clamp(min=int(0.1 * sr))  # very short clips are zero-padded to 0.1 s
    b, width = len(waves), int(length.max())
    x = torch.zeros(b, width)
    for i, w in enumerate(waves):
        x[i, : len(w)] = torch.from_numpy(_level_normalized(w))
    return lengths0, length, x


def _segment_means(centred, n_frames, n_segments: int, m):
    """(B, C, S) means of each clip's valid frames (mask ``m``, (B, 1, T)) in ``n_segments``
    segments split as torch.tensor_split; an empty segment's mean is 0."""
    import torch

    t_max = centred.shape[2]
    # Segments as torch.tensor_split: the first T % S segments hold one frame more.
    q, r = torch.div(n_frames, n_segments, rounding_mode="floor"), n_frames % n_segments
    t = torch.arange(t_max)[None]
    cut = r[:, None] * (q[:, None] + 1)
    seg = torch.where(
        t < cut, t // (q[:, None] + 1), r[:, None] + (t - cut) // q[:, None].clamp(min=1)
    )
    onehot = (
        torch.nn.functional.one_hot(seg.clamp(0, n_segments - 1), n_segments) * m[:, 0, :, None]
    )
    seg_count = onehot.sum(1)  # (B, S)
    return (centred @ onehot) / seg_count[:, None].clamp(min=1)  # (B, C, S); empty: 0


def _spectral_statistics(x, length, sr: int, win: int, hop: int, n_mfcc: int, n_segments: int):
    """(B, n_mfcc * (n_segments + 3)): segment means of the mean-normalized MFCCs, and the
    standard deviations of the MFCCs and of their first and second deltas."""
    import torch
    import torchaudio.functional as AF

    # MFCC: torchaudio's MFCC (Hann window of 25 ms, hop 10 ms, centred frames with
    # reflection, power mel spectrogram, dB with a top of 80 dB below each clip's maximum).
    b = len(x)
    n_mels = max(40, n_mfcc)
    mel_db = _mel_db(x, length, sr, win, hop, n_mels)  # (B, T, mels)
    n_frames = 1 + torch.div(length, hop, rounding_mode="floor")
    t_max = mel_db.shape[1]
    valid = torch.arange(t_max)[None] < n_frames[:, None]  # (B, T)
    top = mel_db.masked_fill(~valid[..., None], -torch.inf).amax(dim=(1, 2))
    mel_db = torch.maximum(mel_db, (top - _TOP_DB)[:, None, None])
    mfcc = (mel_db @ AF.create_dct(n_mfcc, n_mels, "ortho")).transpose(1, 2)  # (B, C, T)
    m = valid[:, None].float()
    count = n_frames[:, None].float()
    mfcc_std, mfcc_mean = _masked_std(mfcc, m, count)
    centred = mfcc - mfcc_mean[..., None]  # cepstral mean normalisation
    seg_means = _segment_means(centred, n_frames, n_segments, m)
    d1 = _deltas(mfcc, n_frames)
    d2 = _deltas(d1, n_frames)
    return torch.cat(
        [
            seg_means.transpose(1, 2).reshape(b, -1),
            mfcc_std,
            _masked_std(d1, m, count)[0],
            _masked_std(d2, m, count)[0],
        ],
        dim=1,
    )


def _prosody_statistics(x, length, lengths0, sr: int, win: int, hop: int):
    """(B, 11) prosody statistics, in the order of ``_PROSODY``."""
    import torch

    # Prosody on 25 ms frames with a 10 ms hop (no centring).
    # Frame means by pooling (no (B, F, win) copy): energy, and zero crossings of the
    # frame's win - 1 sample pairs.
    energy, zcr = _energy_zcr(x, win, hop)  # (B, F) each
    n_energy = 1 + torch.div(length - win, hop, rounding_mode="floor")
    ev = torch.arange(energy.shape[1])[None] < n_energy[:, None]
    evf = ev.float()
    ecount = n_energy.float()
    energy_db = 10 * torch.log10(energy + 1e-10)
    e_max = energy_db.masked_fill(~ev, -torch.inf).amax(1)
    e_min = energy_db.masked_fill(~ev, torch.inf).amin(1)
    voiced = (energy_db > (e_max - 30.0)[:, None]) & ev
    e_std, e_mean = _masked_std(energy_db, evf, ecount)
    z_std, z_mean = _masked_std(zcr, evf, ecount)
    # Speaking-rate proxy: local energy maxima among voiced frames, per second.
    e = energy_db
    inner = torch.zeros_like(voiced)
    inner[:, 1:-1] = (e[:, 1:-1] > e[:, :-2]) & (e[:, 1:-1] >= e[:, 2:])
    inner &= voiced & (torch.arange(e.shape[1])[None] < (n_energy - 1)[:, None])
    peaks = inner.sum(1).float()

    p_mean, p_std, p_range = _pitch_statistics(x, length, sr, voiced)
    duration = lengths0.double() / sr
    return torch.stack(
        [
            torch.log(duration + 1e-3).float(),
            (energy_db * evf).sum(1) / ecount,
            e_std,
            e_max - e_min,
            (voiced.float().sum(1) / ecount),
            p_mean,
            p_std,
            p_range,
            z_mean,
            z_std,
            torch.where(n_energy > 2, peaks, torch.zeros_like(peaks))
            / duration.clamp(min=1e-3).float(),
        ],
        dim=1,
    )


def _pitch_statistics(x, length, sr: int, voiced):
    """(mean, std, 10-90% range) of log2 pitch over the frames both voiced and pitched."""
    import torch

    pitch, pv = _pitch_track(x, length, sr)
    n = min(pitch.shape[1], voiced.shape[1])
    use = voiced[:, :n] & pv[:, :n]
    logp = torch.where(use, torch.log2(pitch[:, :n].clamp(min=1.0)), 0.0)
    pcount = use.sum(1).float()
    p_std, p_mean = _masked_std(logp, use.float(), pcount)
    quant = torch.nanquantile(
        torch.where(use, logp, torch.nan), torch.tensor([0.1, 0.9]), dim=1
    )  # (2, B); NaN where no voiced frame
    p_range = torch.where(pcount > 1, quant[1] - quant[0], torch.zeros_like(pcount))
    return p_mean, p_std, p_range


def audio_statistics_batch(
    waves: list[np.ndarray], sr: int, n_mfcc: int, n_segments: int
) -> np.ndarray:
    """Utterance-level statistics of mono waveforms at rate ``sr``, computed together.

    The clips are zero-padded to the longest and every step runs on the whole batch; each
    clip's frames beyond its own end are masked out of every statistic (the MFCC frames at
    its end see its own reflection, as alone), so a clip gets the same features in any batch
    (to float32 rounding, about 1e-5 relative). See :class:`AudioEncoder` for the features.

    Returns
    -------
    ndarray of shape (len(waves), n_mfcc * (n_segments + 3) + 11), float32
    """
    import torch

    lengths0, length, x = _padded_batch(waves, sr)
    win, hop = int(0.025 * sr), int(0.010 * sr)
    spectral = _spectral_statistics(x, length, sr, win, hop, n_mfcc, n_segments)
    prosody = _prosody_statistics(x, length, lengths0, sr, win, hop)
    return torch.cat([spectral, prosody], dim=1).numpy()


def audio_statistics(waves: list[np.ndarray], sr: int, n_mfcc: int, n_segments: int) -> np.ndarray:
    """Statistics of clips of any lengths (see :func:`audio_statistics_batch`), in batches of
    similar lengths holding at most about 4 million padded samples (a long clip alone), so
    memory stays near that of the longest clip; returned in input order.

    The work per sample is bounded: the spectrogram, frame energies and pitch correlations
    run on bounded time chunks, so a clip costs about 6 bytes per sample (1.5x its float32
    waveform) plus about 200 MB of chunks, whatever its duration (measured: 290 MB for 600 s
    at 16 kHz, 500 MB for 3,000 s; 560 and 1,970 MB before the chunks)."""
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    out = np.empty((len(waves), n_mfcc * (n_segments + 3) + len(_PROSODY)), dtype=np.float32)
    start = 0
    with one_torch_thread():
        while start < len(order):
            stop = start + 1
            while (
                stop < len(order) and (stop - start + 1) * len(waves[order[stop]]) <= _BATCH_SAMPLES
            ):
                stop += 1
            rows = order[start:stop]
            out[rows] = audio_statistics_batch([waves[i] for i in rows], sr, n_mfcc, n_segments)
            start = stop
    return out


class Mfcc(Backend):
    """Cepstral-mean-normalized MFCC means over ``n_segments`` segments, MFCC and delta
    deviations and prosody statistics of each clip, at ``sample_rate``."""

    name = "mfcc"
    parameters = ("sample_rate", "n_mfcc", "n_segments", "n_jobs")
    constraints = {
        "n_mfcc": [Interval(Integral, 2, 128, closed="both")],
        "n_segments": [Interval(Integral, 1, 20, closed="both")],
    }
    feature_prefix = "audio_stat"

    def feature_names(self, encoder) -> list[str]:
        n_mfcc, n_segments = encoder.n_mfcc, encoder.n_segments
        names = [f"mfcc{c}_seg{s}" for s in range(n_segments) for c in range(n_mfcc)]
        names += [f"mfcc{c}_std" for c in range(n_mfcc)]
        names += [f"dmfcc{c}_std" for c in range(n_mfcc)]
        names += [f"ddmfcc{c}_std" for c in range(n_mfcc)]
        return names + _PROSODY

    def example(self, folder) -> dict:
        return {"n_mfcc": 8, "n_segments": 2}

    def fit(self, encoder, decoded) -> None:
        encoder.rate_ = int(encoder.sample_rate)
        encoder.n_features_out_ = encoder.n_mfcc * (encoder.n_segments + 3) + len(_PROSODY)

    def encode(self, encoder, batch: list) -> np.ndarray:
        # Every clip was read at the encoder's rate (read_audio resamples).
        return audio_statistics(
            [w for w, _ in batch], encoder.rate_, encoder.n_mfcc, encoder.n_segments
        )
