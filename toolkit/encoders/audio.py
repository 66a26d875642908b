"""Audio encoder: MFCC and prosody statistics by default; pretrained speech models by path
(frozen, or a local wav2vec 2.0 fine-tuned on the labels with ``fine_tune``)."""

from __future__ import annotations

from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from toolkit._utils import resolve_device
from toolkit.encoders._cnn import TRAINING_CONSTRAINTS, TrainableMixin
from toolkit.encoders._finetune import (
    FINE_TUNE_CONSTRAINTS,
    FineTuneMixin,
    check_fine_tune,
    depth_constraint,
)
from toolkit.encoders._torch import apply_weights, from_pretrained_checked
from toolkit.encoders.base import AUTO_BATCH, BaseEncoder, one_torch_thread
from toolkit.encoders.text import _check_model_location
from toolkit.io.audio import MAX_DECODED_BYTES, MAX_SAMPLE_RATE, MAX_SECONDS, read_audio

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


class AudioEncoder(FineTuneMixin, TrainableMixin, BaseEncoder):
    """Encode a column of audio clips (file paths or (waveform, rate) pairs).

    Parameters
    ----------
    backend : {"mfcc", "transformers", "torchaudio"}, default="mfcc"
        ``"mfcc"`` (no weights): each clip is level-normalized, MFCCs are computed as
        torchaudio's ``MFCC`` does, and the block holds the cepstral-mean-normalized MFCC means over
        ``n_segments`` equal time segments, the standard deviations of the MFCCs and of
        their first and second deltas, plus prosody statistics (log duration, frame
        energy mean/std/range in dB, voiced-frame ratio, pitch mean/std/range in octaves
        over voiced frames, zero-crossing rate mean/std, energy-peak rate). Pitch is the
        normalized cross-correlation tracker of torchaudio's ``detect_pitch_frequency``
        (60-500 Hz, 30-frame median). The clips of a chunk are padded and computed together
        as tensor operations on one torch thread (:func:`audio_statistics`), with every
        statistic masked to each clip's own frames, so a clip's features do not depend on
        its batch beyond float32 rounding (about 1e-5).
        ``"transformers"``: a ``transformers`` audio model (e.g. wav2vec 2.0, HuBERT) and
        its feature extractor from the local folder ``model``, mean-pooled over time; with
        ``fine_tune`` its top layers are fine-tuned on the labels (below).
        ``"torchaudio"``: the torchaudio model factory ``model`` (e.g. ``"wav2vec2_base"``)
        with the state dict in ``weights``; its last transformer layer, mean-pooled.
        ``"cnn"``: a small CNN trained from scratch on the labels inside ``fit(X, y)`` (a
        *supervised* encoder) on log-mel spectrograms: each clip (at ``sample_rate``) is
        cut or zero-padded at its end to ``duration`` seconds, turned into ``n_mels``
        mel bands (25 ms windows, 10 ms hop) on a log scale, standardized on the training
        rows, and passed through ``len(widths)`` blocks of 3x3 convolution, group
        normalization, ReLU and 2x2 max pooling, averaged over time in four frequency
        bands, and a linear head; the features are the pooled vector (``4 * widths[-1]``
        values). Training as in
        :class:`~toolkit.ImageEncoder`'s cnn backend: AdamW, early stopping on
        ``validation_fraction`` of the rows (whole groups when ``fit`` gets ``groups``),
        seeded by ``random_state``, bfloat16 autocast on a GPU.
    model : str or path, default=None
    weights : str or path, default=None
    model_kwargs : dict, default=None
        Keyword arguments of the torchaudio model factory (e.g. a small configuration
        of ``wav2vec2_model``).
    sample_rate : int, default=16000
        Clips are resampled to this rate (pretrained backends use their model's rate), at
        most 768,000 (``toolkit.io.audio.MAX_SAMPLE_RATE``).
    n_mfcc : int, default=20
    n_segments : int, default=3
    batch_size : int or "auto", default="auto"
        Clips decoded and held at once (and per training step of the cnn backend). With
        the transformers backend also the clips per forward pass, length-sorted: padded
        with an attention mask (pooling over each clip's own frames) for models whose
        feature encoder is layer-normalized (``config.feat_extract_norm == "layer"``), and
        only clips of equal length together otherwise (zero padding would change a
        group-normalized model's output). ``"auto"``: on a CUDA device, forward passes
        of up to 2**22 padded samples (``toolkit.encoders._batching``), prepared in a
        background thread while the device runs the previous one; on the CPU one clip
        per forward pass, 32 clips at once.
    device : str, default="auto"
    on_error : {"raise", "missing"}, default="raise"
    progress : bool, default=True
    max_seconds : float, default=3600.0
        Longest clip accepted (``toolkit.io.audio.MAX_SECONDS``); a file's duration is read
        from its header and longer clips are refused before decoding (a ``ReadError``:
        with ``on_error="missing"`` the row is marked missing).
    max_decoded_bytes : int, default=512 MiB
        Largest decoded waveform accepted, 4 bytes per sample at the encoder's rate
        (``toolkit.io.audio.MAX_DECODED_BYTES``), computed from the header (or the array's
        shape) and checked before decoding (a ``ReadError``, like ``max_seconds``). Files
        are decoded and resampled block by block, so reading holds this waveform plus a
        few MB whatever the source rate; the ``"mfcc"`` statistics of a long clip (computed
        alone, not padded into a batch) then peak at about 14x the waveform (measured: 520
        MB above the loaded libraries for 600 s at 16 kHz).
    n_jobs : int, default=None
        Worker processes (joblib) that read and encode chunks of ``batch_size`` items in
        parallel with the weights-free default backend; None or 1 encodes in this process
        (whatever ``joblib.parallel_config`` is active, so folds run in parallel by a study
        do not start workers of their own), -1 uses every CPU. The blocks are identical to
        a serial run, bit for bit (the same chunks are encoded the same way); starting the
        workers (which import torch) costs seconds, so it pays on thousands of items.
        Pretrained and trained backends refuse it (their network is batched on one device).
    n_mels : int, default=40
        Mel bands of the cnn backend's spectrograms.
    duration : float, default=None
        Seconds each clip is cut or padded to for the cnn backend; None: the 95th
        percentile of the training clips' durations.
    widths, max_epochs, patience, learning_rate, weight_decay, dropout, \
validation_fraction, n_networks, random_state, verbose
        Network and training of the cnn backend, as in :class:`~toolkit.ImageEncoder`
        (defaults (16, 32, 64), 60, 8, 3e-3, 1e-4, 0.1, 0.15, 1, None, False); the training
        parameters also apply to ``fine_tune``.
    fine_tune : bool or "top", default=False
        transformers backend: ``True`` or ``"top"`` fine-tunes the local model on the labels
        inside ``fit(X, y)`` (a *supervised* encoder, cross-fitted by the estimators): it is
        loaded as transformers' audio-classification model of its architecture (e.g.
        ``Wav2Vec2ForSequenceClassification``: a projection of the hidden states,
        mean-pooled over time, and a new linear head with one output per class, or one for
        a float target), and the top ``trainable_layers`` transformer layers, the
        projection and the head are trained; the convolutional feature encoder and the
        lower layers stay as loaded (eval mode, no SpecAugment masking or layer drop).
        Each clip is a forward pass of its own (no padding), in training as in encoding.
        The features are the pooled projection (the head's input); ``encode_scores``
        gives the head's outputs. Saved with ``save_pretrained`` (safetensors).
    trainable_layers : int, default=2
        Top transformer layers fine-tuned (0: the projection and head alone);
        ``trainable_blocks_`` names the modules trained.

    Attributes
    ----------
    n_features_out_ : int
    history_ : list of dict
        cnn backend: per epoch, ``train_loss`` and (with validation rows) ``valid_loss``.
    network_spec_ : dict
        cnn backend: the network's description (checked against saved weights on load).

    Examples
    --------
    >>> import numpy as np
    >>> from toolkit import AudioEncoder
    >>> t = np.arange(8000) / 8000
    >>> clip = (np.sin(2 * np.pi * 220 * t).astype("float32"), 8000)
    >>> AudioEncoder().fit_transform([clip, None]).shape
    (2, 131)
    """

    modality = "audio"
    _threaded_reads = True
    _cnn_pool = (4, 1)  # four frequency bands, averaged over time
    #: Version of the default statistics, part of the cache key (see ``toolkit.cache``).
    features_version = FEATURES_VERSION
    _parameter_constraints = {
        **BaseEncoder._parameter_constraints,
        "backend": [StrOptions({"mfcc", "transformers", "torchaudio", "cnn"})],
        "model": [str, Path, None],
        "weights": [str, Path, None],
        "model_kwargs": [dict, None],
        "sample_rate": [Interval(Integral, 1000, MAX_SAMPLE_RATE, closed="both")],
        "n_mfcc": [Interval(Integral, 2, 128, closed="both")],
        "n_segments": [Interval(Integral, 1, 20, closed="both")],
        "device": [str, None],
        "max_seconds": [Interval(Real, 0, None, closed="neither")],
        "max_decoded_bytes": [Interval(Integral, 1, None, closed="left")],
        "n_mels": [Interval(Integral, 4, 256, closed="both")],
        "duration": [Interval(Real, 0.05, MAX_SECONDS, closed="both"), None],
        **TRAINING_CONSTRAINTS,
        **FINE_TUNE_CONSTRAINTS,
        "trainable_layers": depth_constraint(),
        "batch_size": AUTO_BATCH,
    }
    _cpu_batch_size = 32
    _fine_tune_backend = "transformers"
    _depth_param = "trainable_layers"

    def __init__(
        self,
        backend="mfcc",
        model=None,
        weights=None,
        model_kwargs=None,
        sample_rate=16000,
        n_mfcc=20,
        n_segments=3,
        batch_size="auto",
        device="auto",
        on_error="raise",
        progress=True,
        max_seconds=MAX_SECONDS,
        max_decoded_bytes=MAX_DECODED_BYTES,
        n_jobs=None,
        n_mels=40,
        duration=None,
        widths=(16, 32, 64),
        max_epochs=60,
        patience=8,
        learning_rate=3e-3,
        weight_decay=1e-4,
        dropout=0.1,
        validation_fraction=0.15,
        n_networks=1,
        random_state=None,
        verbose=False,
        fine_tune=False,
        trainable_layers=2,
    ):
        self.backend = backend
        self.model = model
        self.weights = weights
        self.model_kwargs = model_kwargs
        self.sample_rate = sample_rate
        self.n_mfcc = n_mfcc
        self.n_segments = n_segments
        self.batch_size = batch_size
        self.device = device
        self.on_error = on_error
        self.progress = progress
        self.max_seconds = max_seconds
        self.max_decoded_bytes = max_decoded_bytes
        self.n_jobs = n_jobs
        self.n_mels = n_mels
        self.duration = duration
        self.widths = widths
        self.max_epochs = max_epochs
        self.patience = patience
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.validation_fraction = validation_fraction
        self.n_networks = n_networks
        self.random_state = random_state
        self.verbose = verbose
        self.fine_tune = fine_tune
        self.trainable_layers = trainable_layers

    def _feature_prefix(self) -> str:
        return "audio_stat" if self.backend == "mfcc" else "audio_emb"

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Named statistics for the default backend, ``audio_emb{i}`` otherwise."""
        if self.backend != "mfcc":
            return super().get_feature_names_out(input_features)
        names = [f"mfcc{c}_seg{s}" for s in range(self.n_segments) for c in range(self.n_mfcc)]
        names += [f"mfcc{c}_std" for c in range(self.n_mfcc)]
        names += [f"dmfcc{c}_std" for c in range(self.n_mfcc)]
        names += [f"ddmfcc{c}_std" for c in range(self.n_mfcc)]
        return np.asarray(names + _PROSODY, dtype=object)

    def _target_rate(self) -> int:
        return getattr(self, "rate_", self.sample_rate)

    def _read(self, item):
        return read_audio(
            item,
            sample_rate=self._target_rate(),
            max_seconds=self.max_seconds,
            max_decoded_bytes=self.max_decoded_bytes,
        )

    def build_network(self):
        """The bare torchaudio network ``model(**model_kwargs)``, without weights.

        Built from the encoder's own parameters only (nothing is loaded or downloaded) on
        the current default device, so it can be built under ``with torch.device("meta"):``
        to compare its state-dict shapes with a weights file. Raises ``ValueError`` for the
        other backends (``"transformers"`` folders are described by their own config).

        Returns
        -------
        torch.nn.Module
        """
        if self.backend == "cnn":
            return super().build_network()
        if self.backend != "torchaudio":
            raise ValueError(
                f"AudioEncoder(backend={self.backend!r}) has no network built from parameters: "
                "build_network needs backend='torchaudio'"
            )
        import torchaudio

        if not self.model or not hasattr(torchaudio.models, str(self.model)):
            raise ValueError(
                f"backend='torchaudio' needs model=<torchaudio.models factory name> such as "
                f"'wav2vec2_base' or 'hubert_base', got {self.model!r}"
            )
        return getattr(torchaudio.models, str(self.model))(**(self.model_kwargs or {}))

    def _fit(self, decoded) -> None:
        import torch

        check_fine_tune(self)
        if self.backend == "mfcc":
            self.rate_ = int(self.sample_rate)
            self.n_features_out_ = self.n_mfcc * (self.n_segments + 3) + len(_PROSODY)
            return
        if self.backend == "cnn":
            raise ValueError("AudioEncoder(backend='cnn') is fitted by fit(X, y)")
        self.device_ = resolve_device(self.device)
        if self.backend == "transformers":
            from transformers import AutoFeatureExtractor, AutoModel

            location = _check_model_location(self.model)
            self.feature_extractor_ = AutoFeatureExtractor.from_pretrained(
                location, local_files_only=True
            )
            self.model_ = (
                from_pretrained_checked(
                    AutoModel, location, strict=getattr(self, "_restoring", False)
                )
                .to(self.device_)
                .eval()
            )
            self.rate_ = int(getattr(self.feature_extractor_, "sampling_rate", self.sample_rate))
        else:
            net = self.build_network()
            if self.weights is None:
                raise ValueError(
                    "backend='torchaudio' needs weights=<state dict file>; nothing is downloaded"
                )
            apply_weights(net, self.weights)
            self.model_ = net.to(self.device_).eval()
            self.rate_ = int(self.sample_rate)
        with torch.inference_mode():
            probe = self._embed_one(np.zeros(self.rate_, dtype=np.float32))
        self.n_features_out_ = int(probe.shape[0])

    def _embed_one(self, wave: np.ndarray) -> np.ndarray:
        import torch

        if self.backend == "transformers":
            inputs = self.feature_extractor_(wave, sampling_rate=self.rate_, return_tensors="pt")
            inputs = {k: v.to(self.device_) for k, v in inputs.items()}
            hidden = self.model_(**inputs).last_hidden_state
        else:
            x = torch.from_numpy(wave)[None].to(self.device_)
            hidden = self.model_.extract_features(x)[0][-1]
        return hidden.mean(dim=1)[0].float().cpu().numpy()

    def _encode_batch(self, clips) -> np.ndarray:
        if self.backend == "mfcc":
            # Every clip was read at the encoder's rate (read_audio resamples).
            return audio_statistics([w for w, _ in clips], self.rate_, self.n_mfcc, self.n_segments)
        if self.backend == "cnn":
            return self._cnn_embed(clips)
        if self._fine_tuning():
            return self._ft_embed([w for w, _ in clips])
        if self._batches_clips():
            return self._embed_batched([w for w, _ in clips])
        import torch

        # Clips are embedded one at a time: no padding, so pooling sees only real frames.
        with torch.inference_mode():
            return np.stack([self._embed_one(w) for w, _ in clips])

    def _batches_clips(self) -> bool:
        """Whether forward passes take several clips: the transformers backend with a model
        that reports its frames per clip, on a GPU or with an integer ``batch_size`` (on
        the CPU "auto" embeds one clip per pass, as before "auto" existed)."""
        from toolkit.encoders._batching import AUTO, is_cuda

        return (
            self.backend == "transformers"
            and hasattr(self.model_, "_get_feat_extract_output_lengths")
            and (self.batch_size != AUTO or is_cuda(self.device_))
        )

    def _check_item(self, clip) -> None:
        # A clip shorter than the transformers model's feature encoder gives no frame: the
        # model refuses it alone, and a padded batch would pool nothing (zeros).
        frames_of = getattr(getattr(self, "model_", None), "_get_feat_extract_output_lengths", None)
        if self.backend != "transformers" or frames_of is None:
            return
        import torch

        if int(frames_of(torch.tensor(len(clip[0])))) < 1:
            from toolkit.exceptions import ReadError

            raise ReadError(
                f"clip of {len(clip[0])} samples at {self.rate_} Hz is shorter than the "
                "model's feature encoder reads for one frame; pad or drop such clips"
            )

    def _auto_cost(self):
        # Chunks of the budget's worth of one-second clips (forward passes are planned on
        # the clips' actual lengths in _embed_batched).
        return ("samples", self._target_rate()) if self.backend == "transformers" else None

    def _embed_batched(self, waves: list[np.ndarray]) -> np.ndarray:
        """Transformers backend: length-sorted forward passes (see ``batch_size``), mean-
        pooled over each clip's own frames; the next pass's inputs are prepared (feature
        extractor, pinned) in a background thread on a GPU."""
        import torch

        from toolkit.encoders._batching import (
            AUTO,
            Prefetcher,
            fixed_batches,
            gpu_budget,
            is_cuda,
            plan_batches,
            to_device,
        )

        lengths = np.asarray([len(w) for w in waves], dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")
        budget = gpu_budget(self.device_, "samples") if self.batch_size == AUTO else None
        if budget is not None:
            plan = plan_batches(lengths[order], budget)
        else:
            plan = fixed_batches(len(order), self._batch_items())
        masked = getattr(self.model_.config, "feat_extract_norm", None) == "layer"
        rows = []
        for b in plan:
            idx = order[b]
            if masked:
                rows.append(idx)
            else:  # equal lengths only: padding would change a group-normalized model
                cuts = np.flatnonzero(np.diff(lengths[idx])) + 1
                rows.extend(np.split(idx, cuts))

        def prepare(idx):
            inputs = self.feature_extractor_(
                [waves[i] for i in idx], sampling_rate=self.rate_, padding=True,
                return_attention_mask=True, return_tensors="pt",
            )  # fmt: skip
            inputs = dict(inputs)
            if not masked:
                inputs.pop("attention_mask", None)
            return inputs, torch.as_tensor(lengths[idx])

        cuda = is_cuda(self.device_)
        outputs = []
        with torch.inference_mode():
            for inputs, n in Prefetcher(
                rows,
                prepare,
                names=[f"clips of batch {k} ({len(r)} clips)" for k, r in enumerate(rows)],
                threaded=cuda,
                pin_memory=cuda,
            ):
                hidden = self.model_(**to_device(inputs, self.device_)).last_hidden_state
                frames = self.model_._get_feat_extract_output_lengths(n).to(hidden.device)
                keep = torch.arange(hidden.shape[1], device=hidden.device)[None] < frames[:, None]
                keep = keep.unsqueeze(-1).to(hidden.dtype)
                outputs.append((hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0))
        out = np.empty((len(waves), outputs[0].shape[1]), dtype=np.float32)
        out[np.concatenate(rows)] = torch.cat(outputs).float().cpu().numpy()
        return out

    # -- fine-tuning (FineTuneMixin) ------------------------------------------------------

    def _check_trainable(self) -> None:
        super()._check_trainable()
        if self._fine_tuning():  # the model's rate, before the training clips are read
            self._ft_load_extractor(_check_model_location(self.model))

    def _ft_load_extractor(self, location) -> None:
        from transformers import AutoFeatureExtractor

        self.feature_extractor_ = AutoFeatureExtractor.from_pretrained(
            location, local_files_only=True
        )
        self.rate_ = int(getattr(self.feature_extractor_, "sampling_rate", self.sample_rate))

    def _ft_network(self, n_out: int):
        """The local model as its audio-classification architecture, with a new head of
        ``n_out`` outputs (transformers' own initialization, from torch's random state)."""
        from transformers import AutoModelForAudioClassification
        from transformers.utils import logging as hf_logging

        location = _check_model_location(self.model)
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "newly initialized head" is the intent here
        try:
            net = AutoModelForAudioClassification.from_pretrained(
                location, local_files_only=True, num_labels=int(n_out),
                ignore_mismatched_sizes=True,
            )  # fmt: skip
        except ValueError as exc:
            raise ValueError(
                f"AudioEncoder(fine_tune={self.fine_tune!r}): the model in '{location}' has no "
                f"audio-classification architecture in transformers ({exc})"
            ) from exc
        finally:
            hf_logging.set_verbosity(level)
        return net

    def _ft_blocks(self, net) -> list[str]:
        prefix = f"{net.base_model_prefix}.encoder.layers"
        try:
            layers = net.get_submodule(prefix)
        except AttributeError as exc:
            raise ValueError(
                f"AudioEncoder(fine_tune={self.fine_tune!r}): {type(net).__name__} has no "
                f"transformer layers at '{prefix}' to fine-tune"
            ) from exc
        return [f"{prefix}.{i}" for i in range(len(layers))]

    def _ft_head(self, net) -> list[str]:
        head = [name for name in ("projector", "classifier") if hasattr(net, name)]
        if getattr(net.config, "do_stable_layer_norm", False):
            # pre-norm layers end with the encoder's layer norm, above the top layer
            head.insert(0, f"{net.base_model_prefix}.encoder.layer_norm")
        return head

    def _ft_inputs(self, clips) -> list:
        return [
            self.feature_extractor_(w, sampling_rate=self.rate_, return_tensors="pt")[
                "input_values"
            ]
            for w, _ in clips
        ]

    def _ft_forward(self, net, inputs, idx):
        import torch

        return torch.cat([net(inputs[i].to(self.device_)).logits for i in idx.tolist()])

    def _ft_embed(self, waves: list[np.ndarray]) -> np.ndarray:
        """Fine-tuned model: each clip's head input (or, in ``encode_scores``, its output)."""
        import torch

        from toolkit.encoders._torch import penultimate

        out = []
        with torch.inference_mode():
            for w in waves:
                x = self.feature_extractor_(w, sampling_rate=self.rate_, return_tensors="pt")
                x = x["input_values"].to(self.device_)
                out.append(penultimate(self.model_, x)[0].float().cpu().numpy())
        return np.stack(out)

    def _ft_load_folder(self, location) -> None:
        """Load a saved fine-tuned model (``save_pretrained`` folder) on the CPU."""
        from transformers import AutoModelForAudioClassification

        self._ft_load_extractor(location)
        net = from_pretrained_checked(AutoModelForAudioClassification, location, strict=True)
        self.model_ = net.eval().requires_grad_(False)

    def _cnn_prepare(self, clips) -> None:
        """Fitted input settings of the cnn backend: rate and clip length in samples."""
        self.rate_ = int(self.sample_rate)
        if self.duration is not None:
            self.n_samples_ = max(1, int(round(self.duration * self.rate_)))
        else:
            lengths = [len(w) for w, _ in clips]
            self.n_samples_ = max(int(0.05 * self.rate_), int(np.percentile(lengths, 95)))

    def _cnn_inputs(self, clips):
        """Log-mel spectrograms (n, 1, n_mels, frames) of clips cut or padded to n_samples_."""
        import torch
        import torchaudio

        waves = torch.zeros(len(clips), self.n_samples_)
        for k, (wave, _) in enumerate(clips):
            part = torch.from_numpy(np.asarray(wave[: self.n_samples_], dtype=np.float32))
            waves[k, : len(part)] = part
        win = max(8, int(round(0.025 * self.rate_)))
        mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=self.rate_,
            n_fft=1 << (win - 1).bit_length(),
            win_length=win,
            hop_length=max(1, int(round(0.010 * self.rate_))),
            n_mels=self.n_mels,
        )
        return torch.log(mel(waves) + 1e-6)[:, None]
