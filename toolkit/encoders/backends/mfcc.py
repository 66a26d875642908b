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
#: 1: per-clip torchaudio MFCC and NCCF pitch tracker; 2: the batched computation below.
FEATURES_VERSION = 2

#: Padded samples (clips x longest clip) computed together; a longer clip goes alone.
_BATCH_SAMPLES = 1 << 22
_TOP_DB = 80.0  # dynamic range kept by the MFCC's dB conversion (torchaudio's MFCC default)
_PITCH_LOW, _PITCH_HIGH, _PITCH_SMOOTH = 60, 500, 30  # Hz, Hz, frames (10 ms) of median
_PITCH_FRAMES = 1 << 13  # pitch frames (all clips of a batch together) correlated at a time


def _reflect_index(length, pad: int, width: int):
    """(B, width) indices into each clip's samples, reflect-padded by ``pad`` at both ends
    (torch's ``mode="reflect"``), and the mask of positions inside the padded clip."""
    import torch

    j = torch.arange(width)[None] - pad  # position in the unpadded clip
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
    import torchaudio.functional as AF

    lengths0 = torch.tensor([len(w) for w in waves])
    length = lengths0.clamp(min=int(0.1 * sr))  # very short clips are zero-padded to 0.1 s
    b, width = len(waves), int(length.max())
    x = torch.zeros(b, width)
    for i, w in enumerate(waves):
        x[i, : len(w)] = torch.from_numpy(w)
    inside = torch.arange(width)[None] < lengths0[:, None]
    # Per-utterance level normalisation, in float64 so that a clip's values do not depend on
    # the padding of its batch (the pitch track's lag choice is sensitive to the last bit).
    x = x.double()
    x = (x - x.sum(1, keepdim=True) / lengths0[:, None]) * inside
    x = (x / (x.abs().amax(1, keepdim=True) + 1e-8)).float()

    # MFCC: torchaudio's MFCC (Hann window of 25 ms, hop 10 ms, centred frames with
    # reflection, power mel spectrogram, dB with a top of 80 dB below each clip's maximum).
    win, hop = int(0.025 * sr), int(0.010 * sr)
    n_fft = 1 << (win - 1).bit_length()
    pad = n_fft // 2
    idx, keep = _reflect_index(length, pad, width + 2 * pad)
    framed = x.gather(1, idx) * keep
    spec = AF.spectrogram(
        framed, pad=0, window=torch.hann_window(win), n_fft=n_fft, hop_length=hop,
        win_length=win, power=2.0, normalized=False, center=False,
    )  # fmt: skip
    n_mels = max(40, n_mfcc)
    fb = AF.melscale_fbanks(n_fft // 2 + 1, 0.0, float(sr // 2), n_mels, sr)
    mel_db = 10 * torch.log10((spec.transpose(1, 2) @ fb).clamp(min=1e-10))  # (B, T, mels)
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
    seg_means = (centred @ onehot) / seg_count[:, None].clamp(min=1)  # (B, C, S); empty: 0
    d1 = _deltas(mfcc, n_frames)
    d2 = _deltas(d1, n_frames)
    spectral = torch.cat(
        [
            seg_means.transpose(1, 2).reshape(b, -1),
            mfcc_std,
            _masked_std(d1, m, count)[0],
            _masked_std(d2, m, count)[0],
        ],
        dim=1,
    )

    # Prosody on 25 ms frames with a 10 ms hop (no centring).
    # Frame means by pooling (no (B, F, win) copy): energy, and zero crossings of the
    # frame's win - 1 sample pairs.
    pool = torch.nn.functional.avg_pool1d
    energy = pool(x.pow(2)[:, None], win, hop)[:, 0]  # (B, F)
    crossings = (x[:, 1:].sign() != x[:, :-1].sign()).float()
    zcr = pool(crossings[:, None], win - 1, hop)[:, 0]
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
    duration = lengths0.double() / sr
    prosody = torch.stack(
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
    return torch.cat([spectral, prosody], dim=1).numpy()


def audio_statistics(waves: list[np.ndarray], sr: int, n_mfcc: int, n_segments: int) -> np.ndarray:
    """Statistics of clips of any lengths (see :func:`audio_statistics_batch`), in batches of
    similar lengths holding at most about 4 million padded samples (a long clip alone), so
    memory stays near that of the longest clip; returned in input order."""
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
