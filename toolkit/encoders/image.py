"""Image encoder: fixed torch descriptors by default; torchvision backbones with user weights."""

from __future__ import annotations

from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from toolkit._utils import resolve_device
from toolkit.encoders._torch import apply_weights, penultimate
from toolkit.encoders.base import BaseEncoder, one_torch_thread
from toolkit.io.image import MAX_PIXELS, _value_range, read_image

_WORK = 64  # working resolution of the descriptors


def image_descriptors(
    images: list[np.ndarray], pixel_size: int, hist_bins: int, orientations: int, cells: int
):
    """Fixed descriptors of a batch of (H, W, C) float images in [0, 1].

    Returns (n, pixel_size**2 + 3 * hist_bins + cells**2 * orientations + 3) float32:
    grey pixels at ``pixel_size`` resolution, per-channel colour histograms, cell-wise
    histograms of gradient orientation weighted by magnitude (HOG-like, L2 per cell),
    and global mean, contrast and edge density.
    """
    import torch
    import torch.nn.functional as F

    tensors = []
    for img in images:
        t = torch.from_numpy(img).permute(2, 0, 1)[None]  # (1, C, H, W)
        if t.shape[1] == 1:
            t = t.expand(1, 3, *t.shape[2:])
        t = F.interpolate(
            t, size=(_WORK, _WORK), mode="bilinear", antialias=True, align_corners=False
        )
        tensors.append(t)
    rgb = torch.cat(tensors).clamp(0, 1)  # (n, 3, W, W)
    n = rgb.shape[0]
    grey = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])[:, None]
    pixels = F.adaptive_avg_pool2d(grey, pixel_size).reshape(n, -1)
    # Colour histograms.
    idx = (rgb * hist_bins).long().clamp(max=hist_bins - 1).reshape(n, 3, -1)
    hist = torch.zeros(n, 3, hist_bins).scatter_add_(
        2, idx, torch.ones_like(idx, dtype=torch.float32)
    )
    hist = (hist / idx.shape[-1]).reshape(n, -1)
    # Gradient orientation histograms.
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])[None, None] / 8
    gx = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kx)
    gy = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kx.transpose(2, 3))
    mag = torch.sqrt(gx**2 + gy**2)[:, 0]
    ang = torch.remainder(torch.atan2(gy, gx)[:, 0], np.pi)
    obin = (ang / np.pi * orientations).long().clamp(max=orientations - 1)
    cell = _WORK // cells
    rows = torch.arange(_WORK) // cell
    cell_id = (rows[:, None] * cells + rows[None, :]).clamp(max=cells * cells - 1)
    flat = (cell_id[None] * orientations + obin).reshape(n, -1)
    hog = torch.zeros(n, cells * cells * orientations).scatter_add_(1, flat, mag.reshape(n, -1))
    hog = hog.reshape(n, cells * cells, orientations)
    hog = (hog / (hog.norm(dim=2, keepdim=True) + 1e-3)).reshape(n, -1)
    stats = torch.stack(
        [grey.mean(dim=(1, 2, 3)), grey.std(dim=(1, 2, 3)), (mag > 0.05).float().mean(dim=(1, 2))],
        dim=1,
    )
    return torch.cat([pixels, hist, hog, stats], dim=1).numpy()


class ImageEncoder(BaseEncoder):
    """Encode a column of images (file paths or arrays) as a dense float32 block.

    Parameters
    ----------
    backend : {"descriptors", "torchvision"}, default="descriptors"
        ``"descriptors"``: fixed features computed with torch, needing no weights: grey
        pixels resized to ``pixel_size``², per-channel colour histograms, HOG-like
        gradient-orientation histograms on a ``cells`` x ``cells`` grid, and global
        intensity, contrast and edge density. ``"torchvision"``: the torchvision
        architecture ``model`` (e.g. ``"resnet18"``) with the state dict in ``weights``;
        features are the input of its last Linear layer (penultimate features).
    model : str, default=None
        torchvision architecture name (``torchvision.models.get_model``).
    weights : str or path, default=None
        State dict file (``.pt``/``.pth`` or ``.safetensors``) for the torchvision backend.
    pixel_size, hist_bins, orientations, cells : int
        Descriptor sizes (16, 8, 9, 4 by default: 256 + 24 + 144 + 3 = 427 features).
    input_size : int, default=224
        Side length images are resized to for the torchvision backend.
    value_range : (low, high), optional
        Intensity range mapped to [0, 1], for files and arrays alike (see
        ``toolkit.io.read_image``). Without it uint8/uint16 images are divided by their full
        range and other integer types (signed, or wider than 16 bits such as an int32 TIFF)
        are refused (a ``ReadError``) rather than guessed.
    batch_size : int, default=64
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
        Pretrained backends refuse it (their network is batched on one device).

    Attributes
    ----------
    n_features_out_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from toolkit import ImageEncoder
    >>> images = [np.random.default_rng(0).random((8, 8)), None]
    >>> ImageEncoder().fit_transform(images).shape
    (2, 427)
    """

    modality = "image"
    _threaded_reads = True
    _parameter_constraints = {
        **BaseEncoder._parameter_constraints,
        "backend": [StrOptions({"descriptors", "torchvision"})],
        "model": [str, None],
        "weights": [str, Path, None],
        "pixel_size": [Interval(Integral, 1, _WORK, closed="both")],
        "hist_bins": [Interval(Integral, 2, 256, closed="both")],
        "orientations": [Interval(Integral, 2, 64, closed="both")],
        "cells": [Interval(Integral, 1, _WORK, closed="both")],
        "input_size": [Interval(Integral, 8, None, closed="left")],
        "value_range": [tuple, list, None],
        "device": [str, None],
        "max_pixels": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        backend="descriptors",
        model=None,
        weights=None,
        pixel_size=16,
        hist_bins=8,
        orientations=9,
        cells=4,
        input_size=224,
        value_range=None,
        batch_size=64,
        device="auto",
        on_error="raise",
        progress=True,
        max_pixels=MAX_PIXELS,
        n_jobs=None,
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

    def _feature_prefix(self) -> str:
        return "image_desc" if self.backend == "descriptors" else "image_emb"

    def _read(self, item):
        return read_image(item, value_range=self.value_range, max_pixels=self.max_pixels)

    def build_network(self):
        """The bare torchvision network of ``model``, without weights, on the current device.

        Built from the encoder's own parameters only (nothing is loaded or downloaded), so
        it can be built under ``with torch.device("meta"):`` to compare its state-dict
        shapes with a weights file. Raises ``ValueError`` for other backends.

        Returns
        -------
        torch.nn.Module
        """
        if self.backend != "torchvision":
            raise ValueError(
                f"ImageEncoder(backend={self.backend!r}) has no network: build_network needs "
                "backend='torchvision'"
            )
        import torchvision

        if self.model is None:
            raise ValueError(
                "backend='torchvision' needs model=<architecture name>, e.g. 'resnet18'"
            )
        try:
            return torchvision.models.get_model(self.model, weights=None)
        except ValueError as exc:
            raise ValueError(f"unknown torchvision architecture '{self.model}': {exc}") from exc

    def _fit(self, decoded) -> None:
        if self.value_range is not None:
            _value_range(self.value_range)  # a malformed range fails here, not per item
        if self.backend == "descriptors":
            self.n_features_out_ = (
                self.pixel_size**2 + 3 * self.hist_bins + self.cells**2 * self.orientations + 3
            )
            return
        import torch

        net = self.build_network()
        if self.weights is None:
            raise ValueError(
                "backend='torchvision' needs weights=<state dict file>; nothing is downloaded"
            )
        apply_weights(net, self.weights)
        self.device_ = resolve_device(self.device)
        self.model_ = net.to(self.device_).eval()
        with torch.inference_mode():
            probe = penultimate(
                self.model_,
                torch.zeros(1, 3, self.input_size, self.input_size, device=self.device_),
            )
        self.n_features_out_ = int(probe.shape[1])

    def _encode_batch(self, images: list[np.ndarray]) -> np.ndarray:
        if self.backend == "descriptors":
            with one_torch_thread():  # small tensor operations: see one_torch_thread
                return image_descriptors(
                    images, self.pixel_size, self.hist_bins, self.orientations, self.cells
                )
        import torch
        import torch.nn.functional as F

        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        batch = []
        for img in images:
            t = torch.from_numpy(img).permute(2, 0, 1)[None]
            if t.shape[1] == 1:
                t = t.expand(1, 3, *t.shape[2:])
            size = (self.input_size, self.input_size)
            batch.append(
                F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)
            )
        x = ((torch.cat(batch) - mean) / std).to(self.device_)
        with torch.inference_mode():
            return penultimate(self.model_, x).float().cpu().numpy()
