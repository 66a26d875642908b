"""Image backend ``"descriptors"``: fixed features computed with torch, needing no weights."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval

from toolkit.encoders.backends.base import Backend
from toolkit.encoders.base import one_torch_thread

_WORK = 64  # working resolution of the descriptors


def _sobel(grey):
    """Sobel gradients (x, y) of (n, H, W) images, edges replicated, divided by 8.

    Written as element-wise sums of shifted copies rather than ``conv2d``: a convolution's
    summation order depends on the batch size (rounding differences of 6e-8), and the
    orientation bin of a near-flat gradient, hence a HOG cell's normalized histogram, can
    flip on such a difference (0.2 apart between one image alone and in a batch). Every
    element here is computed by the same operations in the same order, so an image's
    gradients are bit-identical whatever its batch.
    """
    import torch.nn.functional as F

    p = F.pad(grey[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    dx = p[:, :, 2:] - p[:, :, :-2]  # (n, H + 2, W)
    dy = p[:, 2:, :] - p[:, :-2, :]  # (n, H, W + 2)
    gx = (dx[:, :-2] + 2 * dx[:, 1:-1] + dx[:, 2:]) / 8
    gy = (dy[:, :, :-2] + 2 * dy[:, :, 1:-1] + dy[:, :, 2:]) / 8
    return gx, gy


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
    gx, gy = _sobel(grey[:, 0])
    mag = torch.sqrt(gx**2 + gy**2)
    ang = torch.remainder(torch.atan2(gy, gx), np.pi)
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


class Descriptors(Backend):
    """Grey pixels, colour histograms, HOG-like orientation histograms and global intensity,
    contrast and edge density (see ``ImageEncoder``)."""

    name = "descriptors"
    parameters = ("pixel_size", "hist_bins", "orientations", "cells", "n_jobs")
    constraints = {
        "pixel_size": [Interval(Integral, 1, _WORK, closed="both")],
        "hist_bins": [Interval(Integral, 2, 256, closed="both")],
        "orientations": [Interval(Integral, 2, 64, closed="both")],
        "cells": [Interval(Integral, 1, _WORK, closed="both")],
    }
    feature_prefix = "image_desc"

    def example(self, folder) -> dict:
        return {"pixel_size": 4, "cells": 2}

    def fit(self, encoder, decoded) -> None:
        encoder.n_features_out_ = (
            encoder.pixel_size**2
            + 3 * encoder.hist_bins
            + encoder.cells**2 * encoder.orientations
            + 3
        )

    def encode(self, encoder, batch: list) -> np.ndarray:
        with one_torch_thread():  # small tensor operations: see one_torch_thread
            return image_descriptors(
                batch, encoder.pixel_size, encoder.hist_bins, encoder.orientations, encoder.cells
            )
