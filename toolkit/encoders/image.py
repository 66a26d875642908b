"""Image encoder: fixed torch descriptors by default; torchvision backbones with user weights
(frozen, or fine-tuned on the labels with ``fine_tune``); a small CNN trained on the labels
(``backend="cnn"``)."""

from __future__ import annotations

from numbers import Integral
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
from toolkit.encoders.backends import IMAGE_BACKENDS
from toolkit.encoders.backends.descriptors import image_descriptors
from toolkit.encoders.backends.torchvision_backbone import imagenet_inputs
from toolkit.encoders.base import AUTO_BATCH, BaseEncoder
from toolkit.io.image import MAX_PIXELS, check_value_range, read_image

__all__ = ["ImageEncoder", "image_descriptors"]
_CNN_SIZES = (16, 64)  # side lengths the CNN backend resizes images to by default


class ImageEncoder(FineTuneMixin, TrainableMixin, BaseEncoder):
    """Encode a column of images (file paths or arrays) as a dense float32 block.

    Parameters
    ----------
    backend : {"descriptors", "torchvision", "cnn"}, default="descriptors"
        ``"descriptors"``: fixed features computed with torch, needing no weights: grey
        pixels resized to ``pixel_size``², per-channel colour histograms, HOG-like
        gradient-orientation histograms on a ``cells`` x ``cells`` grid, and global
        intensity, contrast and edge density. ``"torchvision"``: the torchvision
        architecture ``model`` (e.g. ``"resnet18"``) with the state dict in ``weights``;
        features are the input of its last Linear layer (penultimate features); with
        ``fine_tune`` that network is fine-tuned on the labels (below).
        ``"cnn"``: a small CNN trained from scratch on the labels inside ``fit(X, y)``
        (a *supervised* encoder, sized for small images, 8x8 to 64x64): images are resized
        to ``input_size``, grey unless a training image has colour, standardized per
        channel on the training rows, and passed through ``len(widths)`` blocks of 3x3
        convolution, group normalization, ReLU and 2x2 max pooling, averaged over the
        four quadrants, and a linear head; the features are the pooled vector
        (``4 * widths[-1]`` values).
        Training: AdamW on the cross-entropy (classes) or squared error (float targets),
        mini-batches of ``batch_size``, early stopping with the best epoch's weights on
        ``validation_fraction`` of the rows (whole groups when ``fit`` gets ``groups``;
        no validation below 20 rows, the training loss is then monitored), seeded by
        ``random_state`` (identical features on CPU for the same seed and data), bfloat16
        autocast on a GPU.
    model : str, default=None
        torchvision architecture name (``torchvision.models.get_model``).
    weights : str or path, default=None
        State dict file (``.pt``/``.pth`` or ``.safetensors``) for the torchvision backend
        (nothing is downloaded).
    pixel_size, hist_bins, orientations, cells : int
        Descriptor sizes (16, 8, 9, 4 by default: 256 + 24 + 144 + 3 = 427 features).
    input_size : int, default=None
        Side length images are resized to: 224 by default for the torchvision backend;
        for the cnn backend, by default the largest side among the training images,
        clipped to [16, 64] (smaller images are upsampled: 8x8 digits at 16x16 gave
        the network room for three conv blocks before pooling and lifted AV-Digits image
        accuracy from about 0.93 to 0.95, see docs/benchmarks.md).
    value_range : (low, high), optional
        Intensity range mapped to [0, 1], for files and arrays alike (see
        ``toolkit.io.read_image``). Without it uint8/uint16 images are divided by their full
        range and other integer types (signed, or wider than 16 bits such as an int32 TIFF)
        are refused (a ``ReadError``) rather than guessed.
    batch_size : int or "auto", default="auto"
        Images per batch (and per training step of the cnn backend). ``"auto"``: with the
        torchvision backend on a CUDA device, as many as fit a budget of 2**24 input
        pixels (334 images at 224 x 224; ``toolkit.encoders._batching``), the next batch
        read and resized in a background thread while the device runs the current one;
        otherwise 64.
    device : str, default="auto"
    on_error : {"raise", "missing"}, default="raise"
    progress : bool, default=True
    max_pixels : int, default=50_000_000
        Largest image accepted, height x width (``toolkit.io.image.MAX_PIXELS``), checked
        before decoding files and before converting arrays (a ``ReadError``: with
        ``on_error="missing"`` the row is marked missing).
    n_jobs : int, default=None
        Worker processes (joblib) that read and encode chunks of ``batch_size`` items in
        parallel with the weights-free default backend; None or 1 encodes in this process
        (whatever ``joblib.parallel_config`` is active, so folds run in parallel by a study
        do not start workers of their own), -1 uses every CPU. The blocks are identical to
        a serial run, bit for bit (the same chunks are encoded the same way); starting the
        workers (which import torch) costs seconds, so it pays on thousands of items.
        Pretrained and trained backends refuse it (their network is batched on one device).
    widths : tuple of int, default=(16, 32, 64)
        Channels of the cnn backend's conv blocks (1 to 6 blocks).
    max_epochs : int, default=60
    patience : int, default=8
        Epochs without a lower validation loss before the cnn backend stops.
    learning_rate : float, default=3e-3
    weight_decay : float, default=1e-4
    dropout : float, default=0.1
        Dropout before the cnn backend's head.
    validation_fraction : float, default=0.15
        Share of the training rows held out for early stopping (cnn backend).
    n_networks : int, default=1
        cnn backend: networks trained apart (each with its own validation split,
        initialization and shuffling, seeded from ``random_state``) and averaged: the
        head outputs (``encode_scores``) are their mean, the features theirs side by side
        (``n_networks * 4 * widths[-1]`` values). Training takes ``n_networks`` times as
        long; on AV-Digits averaging lifted image accuracy by about 2 points (see
        docs/benchmarks.md). ``history_`` then tags each epoch with its ``network``, and
        ``best_epoch_`` / ``n_epochs_`` are lists, one per network.
    random_state : int, RandomState or None, default=None
        Seed of the cnn backend's initialization, shuffling and validation split
        (estimators set it from their own ``random_state``).
    verbose : bool, default=False
        Show a per-epoch progress bar (with the losses) when training, on a terminal.
    model_kwargs : dict, default=None
        Keyword arguments of the torchvision architecture (e.g. ``{"width_mult": 0.5}`` for
        a MobileNet), as the weights were saved with.
    fine_tune : bool or "top", default=False
        torchvision backend: ``True`` or ``"top"`` fine-tunes the network on the labels inside
        ``fit(X, y)`` (a *supervised* encoder, cross-fitted by the estimators): its last
        Linear layer is replaced by a new head (one output per class, or one for a float
        target), and the head and the top ``trainable_blocks`` blocks of the backbone are
        trained, every other parameter and batch-norm statistic kept as loaded (those
        blocks run in eval mode). Training as for the cnn backend (AdamW with
        ``learning_rate`` and ``weight_decay``, ``batch_size``, early stopping on
        ``validation_fraction`` of the rows, whole groups with ``groups``, ``max_epochs``,
        ``patience``, ``random_state``, ``verbose``; bfloat16 autocast on a GPU). The
        features stay the head's input; ``encode_scores`` gives the head's outputs.
    augment_shift : int, default=0
        cnn backend: each training image is shifted by a random whole number of pixels,
        up to this many in each direction (zero padding), drawn anew every epoch from
        ``random_state``; 0 trains on the images as they are. Validation and encoding use
        the images unshifted. (On AV-Digits' noisy 8x8 digits a 1-pixel shift lowered
        accuracy, see docs/benchmarks.md; it is meant for larger images.)
    trainable_blocks : int, default=2
        Backbone blocks fine-tuned below the head, counted from the top (0: the head
        alone). Blocks are the network's modules in order, plain ``Sequential`` stages
        opened into their blocks (a ResNet's residual blocks, a MobileNet's inverted
        residuals); ``trainable_blocks_`` names those trained.

    Attributes
    ----------
    n_features_out_ : int
    history_ : list of dict
        cnn backend: per epoch, ``train_loss`` and (with validation rows) ``valid_loss``.
    best_epoch_, n_epochs_ : int
        cnn backend: the epoch whose weights are kept, and the epochs run.
    network_spec_ : dict
        cnn backend: the network's description (checked against saved weights on load).
    trainable_blocks_ : list of str
        fine_tune: the modules trained (top blocks, then the head).
    n_outputs_ : int
        fine_tune: outputs of the new head.

    Examples
    --------
    >>> import numpy as np
    >>> from toolkit import ImageEncoder
    >>> images = [np.random.default_rng(0).random((8, 8)), None]
    >>> ImageEncoder().fit_transform(images).shape
    (2, 427)

    A CNN trained on the labels (here: which half of the image is bright):

    >>> rng = np.random.default_rng(0)
    >>> imgs = [rng.random((8, 8)) * 0.3 for _ in range(40)]
    >>> for i, img in enumerate(imgs):
    ...     img[: 4 if i % 2 else 8, : 8 if i % 2 else 4] += 0.7
    >>> enc = ImageEncoder(backend="cnn", widths=(4, 8), max_epochs=3, random_state=0)
    >>> enc.fit(imgs, y=[i % 2 for i in range(40)]).transform(imgs).shape
    (40, 32)
    """

    modality = "image"
    #: Version of what the encoder computes, part of the cache key (``toolkit.cache``).
    #: 1: EXIF orientation applied to files; descriptor gradients independent of the batch.
    features_version = 1
    _threaded_reads = True
    backends = IMAGE_BACKENDS
    _parameter_constraints = {
        **BaseEncoder._parameter_constraints,
        **IMAGE_BACKENDS.constraints(),
        "model": [str, None],
        "model_kwargs": [dict, None],
        **FINE_TUNE_CONSTRAINTS,
        "trainable_blocks": depth_constraint(),
        "weights": [str, Path, None],
        "value_range": [tuple, list, None],
        "device": [str, None],
        "max_pixels": [Interval(Integral, 1, None, closed="left")],
        **TRAINING_CONSTRAINTS,
        "batch_size": AUTO_BATCH,
    }
    _cpu_batch_size = 64

    def __init__(
        self,
        backend="descriptors",
        model=None,
        weights=None,
        pixel_size=16,
        hist_bins=8,
        orientations=9,
        cells=4,
        input_size=None,
        value_range=None,
        batch_size="auto",
        device="auto",
        on_error="raise",
        progress=True,
        max_pixels=MAX_PIXELS,
        n_jobs=None,
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
        model_kwargs=None,
        fine_tune=False,
        trainable_blocks=2,
        augment_shift=0,
    ):
        self.backend = backend
        self.model = model
        self.weights = weights
        self.pixel_size = pixel_size
        self.hist_bins = hist_bins
        self.orientations = orientations
        self.cells = cells
        self.input_size = input_size
        self.value_range = value_range
        self.batch_size = batch_size
        self.device = device
        self.on_error = on_error
        self.progress = progress
        self.max_pixels = max_pixels
        self.n_jobs = n_jobs
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
        self.model_kwargs = model_kwargs
        self.fine_tune = fine_tune
        self.trainable_blocks = trainable_blocks
        self.augment_shift = augment_shift

    def _read(self, item):
        return read_image(item, value_range=self.value_range, max_pixels=self.max_pixels)

    def masker(self):
        """``toolkit.explain.ImageGrid(rows=2, cols=2, subdivide=2, fill="mean")``: the parts of
        an image are 16 cells nested in 4 quadrants, a masked cell the image's mean colour."""
        from toolkit.explain.parts import ImageGrid  # explain sits above the encoders

        return ImageGrid(rows=2, cols=2, subdivide=2, fill="mean")

    def restore_item(self, item: np.ndarray) -> np.ndarray:
        """A read (H, W, C) image in [0, 1] mapped back to ``value_range`` (which reading
        maps to [0, 1] again); unchanged without one."""
        if self.value_range is None:
            return item
        lo, hi = map(float, self.value_range)
        return item.astype(np.float64) * (hi - lo) + lo

    def _fit(self, decoded) -> None:
        check_fine_tune(self)
        if self.value_range is not None:
            check_value_range(self.value_range)  # a malformed range fails here, not per item
        self.backend_object().fit(self, decoded)

    # -- fine-tuning (FineTuneMixin) ------------------------------------------------------

    def _ft_network(self, n_out: int):
        """The torchvision network with the state dict of ``weights`` and a new head."""
        if self.value_range is not None:
            check_value_range(self.value_range)
        return self.backend_object().fine_tune_network(self, n_out)

    def _ft_inputs(self, images: list):
        """The training images as one (n, 3, side, side) tensor, as encoding prepares them."""
        import torch

        if not all(isinstance(img, torch.Tensor) for img in images):
            images = imagenet_inputs(images, self.backend_object().side(self))
        return torch.stack(images)

    def _ft_forward(self, net, x, idx):
        return net(x[idx.cpu()].to(self.device_))

    def _cnn_prepare(self, images: list[np.ndarray]) -> None:
        """Fitted input settings of the cnn backend: channels and side length."""
        if self.value_range is not None:
            check_value_range(self.value_range)
        self.in_channels_ = 3 if any(img.shape[2] >= 3 for img in images) else 1
        if self.input_size is not None:
            self.input_size_ = int(self.input_size)
        else:
            largest = max(max(img.shape[:2]) for img in images)
            self.input_size_ = int(np.clip(largest, *_CNN_SIZES))

    def _cnn_augment(self, x, generator):
        """Each image of a training batch shifted by up to ``augment_shift`` pixels (rows and
        columns drawn independently, zero padding)."""
        import torch
        import torch.nn.functional as F

        s = int(self.augment_shift)
        if s == 0:
            return x
        n, _, h, w = x.shape
        dy, dx = torch.randint(0, 2 * s + 1, (2, n), generator=generator, device=x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]
        padded = F.pad(x, (s, s, s, s)).permute(0, 2, 3, 1)  # (n, H + 2s, W + 2s, C)
        picked = padded[torch.arange(n, device=x.device)[:, None, None], rows, cols]
        return picked.permute(0, 3, 1, 2).contiguous()

    def _cnn_inputs(self, images: list[np.ndarray]):
        """Images as a float32 tensor (n, in_channels_, input_size_, input_size_): resized
        with antialiasing; grey images repeated to RGB, or colour ones reduced to grey
        (luminance), to match the training images."""
        import torch
        import torch.nn.functional as F

        side = self.input_size_
        out = torch.empty(len(images), self.in_channels_, side, side)
        for k, img in enumerate(images):
            t = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1)[None]
            if t.shape[1] == 3 and self.in_channels_ == 1:
                t = (0.299 * t[:, 0] + 0.587 * t[:, 1] + 0.114 * t[:, 2])[:, None]
            elif t.shape[1] == 1 and self.in_channels_ == 3:
                t = t.expand(1, 3, *t.shape[2:])
            if t.shape[2:] != (side, side):
                t = F.interpolate(
                    t, size=(side, side), mode="bilinear", antialias=True, align_corners=False
                )
            out[k] = t[0]
        return out
