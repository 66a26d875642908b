"""Audio encoder: MFCC and prosody statistics by default; pretrained speech models by path."""

from __future__ import annotations

from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from toolkit._utils import resolve_device
from toolkit.encoders._torch import apply_weights
from toolkit.encoders.base import BaseEncoder
from toolkit.encoders.text import _check_model_location
from toolkit.io.audio import MAX_DECODED_BYTES, MAX_SAMPLE_RATE, MAX_SECONDS, read_audio

_PROSODY = [
    "log_duration", "energy_mean_db", "energy_std_db", "energy_range_db", "voiced_ratio",
    "pitch_mean_log2", "pitch_std_log2", "pitch_range_log2", "zcr_mean", "zcr_std", "peak_rate",
]  # fmt: skip


def _frames(wave, win: int, hop: int):
    import torch

    if wave.shape[-1] < win:
        wave = torch.nn.functional.pad(wave, (0, win - wave.shape[-1]))
    return wave.unfold(-1, win, hop)


def audio_statistics(
    wave: np.ndarray, sr: int, n_mfcc: int, n_segments: int, mfcc_transform
) -> np.ndarray:
    """Utterance-level statistics of one mono waveform (see :class:`AudioEncoder`)."""
    import torch
    import torchaudio.functional as AF

    x = torch.from_numpy(wave)
    x = x - x.mean()
    x = x / (x.abs().max() + 1e-8)  # per-utterance level normalisation
    if len(x) < int(0.1 * sr):  # very short clips: zero-pad so every frame-based step has input
        x = torch.nn.functional.pad(x, (0, int(0.1 * sr) - len(x)))
    mfcc = mfcc_transform(x)  # (n_mfcc, T)
    if mfcc.shape[1] < n_segments:
        mfcc = mfcc.repeat(1, n_segments)
    centred = mfcc - mfcc.mean(dim=1, keepdim=True)  # cepstral mean normalisation
    seg_means = torch.cat([s.mean(dim=1) for s in torch.tensor_split(centred, n_segments, dim=1)])
    d1 = AF.compute_deltas(mfcc[None])[0]
    d2 = AF.compute_deltas(d1[None])[0]
    spectral = torch.cat([seg_means, mfcc.std(dim=1), d1.std(dim=1), d2.std(dim=1)])

    win, hop = int(0.025 * sr), int(0.010 * sr)
    frames = _frames(x, win, hop)
    energy_db = 10 * torch.log10(frames.pow(2).mean(dim=1) + 1e-10)
    voiced = energy_db > (energy_db.max() - 30.0)
    zcr = (frames[:, 1:].sign() != frames[:, :-1].sign()).float().mean(dim=1)
    # detect_pitch_frequency needs more frames than its median window (30 x 10 ms):
    # short clips are zero-padded for the pitch track only (padding frames are unvoiced).
    min_len = int(0.35 * sr)
    padded = torch.nn.functional.pad(x, (0, max(0, min_len - len(x))))
    pitch = AF.detect_pitch_frequency(
        padded[None], sr, frame_time=0.01, win_length=30, freq_low=60, freq_high=500
    )[0]
    n = min(len(pitch), len(voiced))
    p_voiced = pitch[:n][voiced[:n]]
    logp = torch.log2(p_voiced.clamp(min=1.0)) if p_voiced.numel() else torch.zeros(1)
    # Speaking-rate proxy: local energy maxima among voiced frames, per second.
    e = energy_db
    peaks = (
        ((e[1:-1] > e[:-2]) & (e[1:-1] >= e[2:]) & voiced[1:-1]).sum()
        if len(e) > 2
        else torch.tensor(0)
    )
    duration = len(wave) / sr
    prosody = torch.tensor(
        [
            np.log(duration + 1e-3),
            float(energy_db.mean()),
            float(energy_db.std()) if len(energy_db) > 1 else 0.0,
            float(energy_db.max() - energy_db.min()),
            float(voiced.float().mean()),
            float(logp.mean()),
            float(logp.std()) if logp.numel() > 1 else 0.0,
            float(torch.quantile(logp, 0.9) - torch.quantile(logp, 0.1))
            if logp.numel() > 1
            else 0.0,
            float(zcr.mean()),
            float(zcr.std()) if len(zcr) > 1 else 0.0,
            float(peaks) / max(duration, 1e-3),
        ]
    )
    return torch.cat([spectral, prosody]).numpy()


class AudioEncoder(BaseEncoder):
    """Encode a column of audio clips (file paths or (waveform, rate) pairs).

    Parameters
    ----------
    backend : {"mfcc", "transformers", "torchaudio"}, default="mfcc"
        ``"mfcc"`` (no weights): each clip is level-normalized, MFCCs are computed with
        torchaudio, and the block holds the cepstral-mean-normalized MFCC means over
        ``n_segments`` equal time segments, the standard deviations of the MFCCs and of
        their first and second deltas, plus prosody statistics (log duration, frame
        energy mean/std/range in dB, voiced-frame ratio, pitch mean/std/range in octaves
        over voiced frames, zero-crossing rate mean/std, energy-peak rate).
        ``"transformers"``: a ``transformers`` audio model (e.g. wav2vec 2.0, HuBERT) and
        its feature extractor from the local folder ``model``, mean-pooled over time.
        ``"torchaudio"``: the torchaudio model factory ``model`` (e.g. ``"wav2vec2_base"``)
        with the state dict in ``weights``; its last transformer layer, mean-pooled.
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
    batch_size : int, default=32
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
        few MB whatever the source rate; the ``"mfcc"`` statistics then peak at about 11x
        the waveform (measured: 420 MB for 600 s at 16 kHz, ~2.5 GB for 3600 s).

    Attributes
    ----------
    n_features_out_ : int

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
    _parameter_constraints = {
        **BaseEncoder._parameter_constraints,
        "backend": [StrOptions({"mfcc", "transformers", "torchaudio"})],
        "model": [str, Path, None],
        "weights": [str, Path, None],
        "model_kwargs": [dict, None],
        "sample_rate": [Interval(Integral, 1000, MAX_SAMPLE_RATE, closed="both")],
        "n_mfcc": [Interval(Integral, 2, 128, closed="both")],
        "n_segments": [Interval(Integral, 1, 20, closed="both")],
        "device": [str, None],
        "max_seconds": [Interval(Real, 0, None, closed="neither")],
        "max_decoded_bytes": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        backend="mfcc",
        model=None,
        weights=None,
        model_kwargs=None,
        sample_rate=16000,
        n_mfcc=20,
        n_segments=3,
        batch_size=32,
        device="auto",
        on_error="raise",
        progress=True,
        max_seconds=MAX_SECONDS,
        max_decoded_bytes=MAX_DECODED_BYTES,
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

        if self.backend == "mfcc":
            self.rate_ = int(self.sample_rate)
            self.n_features_out_ = self.n_mfcc * (self.n_segments + 3) + len(_PROSODY)
            return
        self.device_ = resolve_device(self.device)
        if self.backend == "transformers":
            from transformers import AutoFeatureExtractor, AutoModel

            location = _check_model_location(self.model)
            self.feature_extractor_ = AutoFeatureExtractor.from_pretrained(
                location, local_files_only=True
            )
            self.model_ = (
                AutoModel.from_pretrained(location, local_files_only=True).to(self.device_).eval()
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

    def _mfcc(self):
        import torchaudio

        sr = self.rate_
        win = int(0.025 * sr)
        n_fft = 1 << (win - 1).bit_length()
        return torchaudio.transforms.MFCC(
            sample_rate=sr,
            n_mfcc=self.n_mfcc,
            melkwargs={
                "n_fft": n_fft,
                "win_length": win,
                "hop_length": int(0.010 * sr),
                "n_mels": max(40, self.n_mfcc),
            },
        )

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
            transform = self._mfcc()
            return np.stack(
                [
                    audio_statistics(w, sr, self.n_mfcc, self.n_segments, transform)
                    for w, sr in clips
                ]
            )
        import torch

        # Clips are embedded one at a time: no padding, so pooling sees only real frames.
        with torch.inference_mode():
            return np.stack([self._embed_one(w) for w, _ in clips])
