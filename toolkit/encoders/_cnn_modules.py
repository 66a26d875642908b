"""The small convolutional network of the trainable encoders (imported only when one is
fitted or loaded; see :mod:`toolkit.encoders._cnn`)."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Standardize, ``len(widths)`` conv blocks, average pooling to a coarse grid, a linear
    head.

    Each block is a 3x3 convolution, group normalization (per sample, so the network
    behaves the same in training and inference however few rows it saw) and ReLU, followed
    by 2x2 max pooling while the map is at least 4 pixels on its shorter side (so 8x8
    inputs keep a spatial map through three blocks). The last map is averaged over a
    ``pool`` = (rows, columns) grid, which keeps coarse position (a quadrant of an image, a
    frequency band of a spectrogram) that global pooling would lose. The input is
    standardized by per-channel ``mean`` and ``std`` buffers (set from the training rows,
    saved with the weights). :meth:`embed` is the pooled feature vector of size
    ``widths[-1] * rows * columns`` (the input of the head).

    Parameters
    ----------
    in_channels : int
    widths : list of int
        Channels of each conv block.
    n_out : int
        Outputs of the head (classes, or 1 for regression).
    dropout : float
        Dropout before the head.
    pool : (int, int)
        Grid the last feature map is averaged over.
    """

    def __init__(
        self, in_channels: int, widths: list[int], n_out: int, dropout: float, pool: tuple
    ):
        super().__init__()
        self.pool = (int(pool[0]), int(pool[1]))
        self.register_buffer("mean", torch.zeros(in_channels))
        self.register_buffer("std", torch.ones(in_channels))
        blocks, prev = [], in_channels
        for width in widths:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(prev, width, kernel_size=3, padding=1, bias=False),
                    nn.GroupNorm(min(4, width) if width % min(4, width) == 0 else 1, width),
                    nn.ReLU(),
                )
            )
            prev = width
        self.blocks = nn.ModuleList(blocks)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(prev * self.pool[0] * self.pool[1], n_out)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (n, widths[-1] * rows * columns) of images ``x`` (n, C, H, W)."""
        x = (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
        for block in self.blocks:
            x = block(x)
            if min(x.shape[-2:]) >= 4:
                x = nn.functional.max_pool2d(x, 2)
        return nn.functional.adaptive_avg_pool2d(x, self.pool).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))


class CNNEnsemble(nn.Module):
    """Several :class:`SmallCNN` trained apart (``n_networks``): the features are theirs side
    by side, the head outputs their mean."""

    def __init__(self, members: list):
        super().__init__()
        self.members = nn.ModuleList(members)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m.embed(x) for m in self.members], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)
