"""Audio encoder: MFCC and prosody statistics by default; pretrained speech models by path
(frozen, or a local wav2vec 2.0 fine-tuned on the labels with ``fine_tune``)."""

from __future__ import annotations

from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.utils._param_validation import Interval

from toolkit.encoders._cnn import TRAINING_CONSTRAINTS, TrainableMixin
from toolkit.encoders._finetune import (
    FINE_TUNE_CONSTRAINTS,
    FineTuneMixin,
    check_fine_tune,
    depth_constraint,
)
from toolkit.encoders._torch import from_pretrained_checked
from toolkit.encoders.backends import AUDIO_BACKENDS
from toolkit.encoders.backends.hub import check_model_location, check_offline, hub_offline
from toolkit.encoders.backends.mfcc import (
    FEATURES_VERSION,
    audio_statistics,
    audio_statistics_batch,
)
from toolkit.encoders.base import AUTO_BATCH, BaseEncoder
from toolkit.exceptions import ReadError
from toolkit.io.audio import MAX_DECODED_BYTES, MAX_SAMPLE_RATE, MAX_SECONDS, read_audio

__all__ = ["AudioEncoder", "audio_statistics", "audio_statistics_batch"]


class AudioEncoder(FineTuneMixin, TrainableMixin, BaseEncoder):
    """Encode a column of audio clips (file paths or (waveform, rate) pairs).

    A bare waveform array (no rate) is refused (a ``ReadError`` naming the row): its rate
    cannot be known, and taking it to be ``sample_rate`` would be silently wrong for a clip
    recorded at another rate.

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
        few MB whatever the source rate. The ``"mfcc"`` statistics of a long clip (computed
        alone, not padded into a batch) work on bounded time chunks: they hold about 1.5x the
        waveform plus about 200 MB, so this limit bounds them too (measured above the
        loaded libraries and the waveform: 290 MB for 600 s at 16 kHz, 500 MB for 3,000 s;
        it was 560 MB and 1,970 MB before the chunks).
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
        **AUDIO_BACKENDS.constraints(),
        "model": [str, Path, None],
        "weights": [str, Path, None],
        "model_kwargs": [dict, None],
        "sample_rate": [Interval(Integral, 1000, MAX_SAMPLE_RATE, closed="both")],
        "device": [str, None],
        "max_seconds": [Interval(Real, 0, None, closed="neither")],
        "max_decoded_bytes": [Interval(Integral, 1, None, closed="left")],
        **TRAINING_CONSTRAINTS,
        **FINE_TUNE_CONSTRAINTS,
        "trainable_layers": depth_constraint(),
        "batch_size": AUTO_BATCH,
    }
    _cpu_batch_size = 32
    backends = AUDIO_BACKENDS
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

    def _target_rate(self) -> int:
        return getattr(self, "rate_", self.sample_rate)

    def masker(self):
        """``toolkit.explain.TimeSegments(n_segments=4, subdivide=4, fill="floor")``: the parts
        of a clip are 16 segments nested in 4, a masked one the clip's noise floor."""
        from toolkit.explain.parts import TimeSegments  # explain sits above the encoders

        return TimeSegments(n_segments=4, subdivide=4, fill="floor")

    def _read(self, item):
        if isinstance(item, np.ndarray):
            # read_audio would take the target rate as the clip's own: a clip recorded at
            # another rate would be encoded as if slowed down or sped up.
            raise ReadError(
                f"audio item is a bare waveform array of shape {item.shape} with no sample "
                f"rate (it would be taken to be at sample_rate={self._target_rate()} Hz, "
                "silently wrong for a clip recorded at another rate); pass (waveform, "
                "sample_rate) pairs, e.g. [(wave, 16000) for wave in waves]"
            )
        return read_audio(
            item,
            sample_rate=self._target_rate(),
            max_seconds=self.max_seconds,
            max_decoded_bytes=self.max_decoded_bytes,
        )

    def _fit(self, decoded) -> None:
        check_fine_tune(self)
        self.backend_object().fit(self, decoded)

    def _batches_clips(self) -> bool:
        """Whether forward passes take several clips: the transformers backend with a model
        that reports its frames per clip, on a GPU or with an integer ``batch_size`` (on
        the CPU "auto" embeds one clip per pass, as before "auto" existed)."""
        from toolkit.encoders._batching import AUTO, is_cuda

        return hasattr(self.model_, "_get_feat_extract_output_lengths") and (
            self.batch_size != AUTO or is_cuda(self.device_)
        )

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
            self._ft_load_extractor(check_model_location(self.model))

    def _ft_load_extractor(self, location) -> None:
        from transformers import AutoFeatureExtractor

        check_offline(location)  # no hub kernel (before fine-tuning and when loading)
        with hub_offline():
            self.feature_extractor_ = AutoFeatureExtractor.from_pretrained(
                location, local_files_only=True, trust_remote_code=False
            )
        self.rate_ = int(getattr(self.feature_extractor_, "sampling_rate", self.sample_rate))

    def _ft_network(self, n_out: int):
        """The local model as its audio-classification architecture, with a new head of
        ``n_out`` outputs (transformers' own initialization, from torch's random state)."""
        from transformers import AutoModelForAudioClassification
        from transformers.utils import logging as hf_logging

        location = check_model_location(self.model)
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "newly initialized head" is the intent here
        try:
            with hub_offline():
                net = AutoModelForAudioClassification.from_pretrained(
                    location, local_files_only=True, num_labels=int(n_out),
                    ignore_mismatched_sizes=True, trust_remote_code=False,
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
