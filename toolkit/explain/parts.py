"""Maskers of images, audio clips and scans: how one item is split into parts, coarse to
fine, and how a masked copy is put back together (for :func:`toolkit.explain.drill_down`).

A masker's ``split(item, encoder)`` gives :class:`Parts`: the item as the encoder reads it,
one label and one region per part, and optionally ``groups``, the coarse parts each fine
part belongs to (an Owen hierarchy: the 8 blocks of a scan, each split again into 8, so a
lesion is found among 64 parts; see :mod:`toolkit.explain.hierarchy`). ``mask(parts, keep)``
gives the item with the parts not kept replaced by the masker's baseline, and ``summary``
one number per part (mean intensity, RMS level).

The baseline a masked part takes decides what "without this part" means, and it was chosen
on the known-answer data of :func:`toolkit.datasets.localization.make_moving_regions`
(fitting seed 0, explained rows of seed 100; the tests use other seeds):

- scans, ``fill="blur"`` (the ScanEncoder's masker): a masked block takes a Gaussian blur of
  the volume itself (sigma: one fine block along each axis), so it keeps its surroundings'
  brightness and loses its local detail (a lesion), and the encoder's per-volume intensity
  scaling barely moves. The lesion's block ranked first in 7 of 10 positive rows with
  "blur" or the volume's mean, 5 of 10 with a constant 0 (64 blocks, 8 walks).
- images, ``fill="mean"`` (the ImageEncoder's masker): a masked cell takes the image's mean
  colour, close to its background. With the study's settings (16 cells in 4, 16 walks)
  the square's cell ranked first in 20 of 20 rows with "mean" or "blur", 19 with 0, and
  1 with 0.5: a mid-grey cell on a darker background is itself a bright square, and the
  walks' values drowned in its interactions (0.6 parts resolved per row; with exact
  values 0.5 also ranked the square first in 20 of 20).

Evidence as large as a coarse part is another matter: on images whose top-left quadrant
alone decides the label (tests/explain/test_drilldown.py), that quadrant's cells got
94-103% of the image value with 0.5, 63-67% with "mean" and 25-38% with "blur" (a blurred
bright quadrant stays bright); pass ``ImageGrid(..., fill=0.5)`` for such images. No single
baseline is right for both; the mean of the training images would be, and is not offered
yet (the fitted encoders keep no training items).
- clips, ``fill="floor"`` (the AudioEncoder's masker): a masked segment takes noise at the
  level of the clip's quietest segment (its background), seeded so that every call masks
  alike. Silence ("silence") is a change the MFCC statistics see everywhere: with it the
  burst's segment got 0.026 of a 0.39 clip value, no more than the others; with the
  floor 0.45.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np


@dataclass
class Parts:
    """One item split by a masker.

    Attributes
    ----------
    item : the item as the encoder reads it (text, (H, W, C) image, (waveform, rate), volume)
    labels : list of str
        One label per part.
    regions : list
        Where each part lies in ``item`` (word positions or array slices).
    restore : callable or None
        The encoder's ``restore_item``: a masked item back to the raw form the encoder
        reads (e.g. an image back to its ``value_range``); None keeps it as it is.
    names : list of str or None
        Names of the parts that reveal none of their content (``Clauses``: "a negated
        clause in sentence 2"); a text explanation's ``feature_names``. None: the labels.
    groups : list of lists of int or None
        The coarse parts: each a list of positions into ``labels`` (every part in exactly
        one group); None: no hierarchy (every part a player of its own).
    background : array or None
        What a masked part takes: the item fully masked (same shape as the item's array).
    """

    item: object
    labels: list
    regions: list = field(default_factory=list)
    restore: object = None
    names: list | None = None
    groups: list | None = None
    background: object = None


def positive_int(value, name: str) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


FILLS = ("mean", "blur")


def check_fill(fill, allowed: tuple[str, ...] = FILLS):
    if isinstance(fill, str) and fill in allowed:
        return fill
    if isinstance(fill, Real) and not isinstance(fill, bool) and 0.0 <= fill <= 1.0:
        return float(fill)
    raise ValueError(
        f"fill must be one of {allowed} or a number in [0, 1] (the encoder's intensity scale), "
        f"got {fill!r}"
    )


def cells(shape: tuple[int, ...], counts: tuple[int, ...], what: str) -> list[tuple[slice, ...]]:
    """Equal (to one pixel) slices splitting an array of ``shape`` into ``counts`` parts
    per axis, in C order."""
    for size, count in zip(shape, counts, strict=True):
        if size < count:
            raise ValueError(
                f"{what} of shape {shape} has fewer than {count} positions along an axis; use "
                "fewer parts"
            )
    edges = [
        np.linspace(0, size, count + 1).round().astype(int)
        for size, count in zip(shape, counts, strict=True)
    ]
    out = []
    for index in np.ndindex(*counts):
        out.append(tuple(slice(e[i], e[i + 1]) for e, i in zip(edges, index, strict=True)))
    return out


def grid_groups(coarse: tuple[int, ...], split: tuple[int, ...]) -> list[list[int]] | None:
    """The fine cells (C order over ``coarse * split`` per axis) of each coarse cell (C
    order over ``coarse``); None when nothing is split (a flat grid)."""
    if all(s == 1 for s in split):
        return None
    fine = tuple(c * s for c, s in zip(coarse, split, strict=True))
    groups: list[list[int]] = [[] for _ in range(math.prod(coarse))]
    for flat, index in enumerate(np.ndindex(*fine)):
        parent = tuple(i // s for i, s in zip(index, split, strict=True))
        groups[int(np.ravel_multi_index(parent, coarse))].append(flat)
    return groups


def _counts(value, n: int, name: str) -> tuple[int, ...]:
    """``n`` positive integers from an int (repeated) or a sequence of ``n``."""
    if isinstance(value, Integral) and not isinstance(value, bool):
        value = (value,) * n
    counts = tuple(value) if isinstance(value, tuple | list) else ()
    if len(counts) != n:
        raise ValueError(f"{name} must be {n} positive integers, got {value!r}")
    return tuple(positive_int(c, f"each of {name}") for c in counts)


def background(array: np.ndarray, fill, part_shape: tuple[float, ...]) -> np.ndarray:
    """The array fully masked: a constant, the array's mean, or its Gaussian blur with a
    sigma of one part along each axis (trailing axes beyond ``part_shape``, such as colour
    channels, are not blurred)."""
    fill = check_fill(fill)
    if fill == "blur":
        from scipy.ndimage import gaussian_filter

        sigma = tuple(part_shape) + (0,) * (array.ndim - len(part_shape))
        return gaussian_filter(array.astype(np.float64), sigma=sigma, mode="nearest").astype(
            array.dtype
        )
    if fill == "mean":
        if array.ndim == 3 and len(part_shape) == 2:  # an image: its mean colour
            return np.broadcast_to(array.reshape(-1, array.shape[2]).mean(axis=0), array.shape)
        return np.full_like(array, float(array.mean()))
    return np.full_like(array, fill)


def _masked(parts: Parts, keep) -> np.ndarray:
    array = parts.item[0] if isinstance(parts.item, tuple) else parts.item
    out = array.copy()
    for region, k in zip(parts.regions, keep, strict=True):
        if not k:
            out[region] = parts.background[region]
    return out


class ImageGrid:
    """Masker of an image modality: the parts are the cells of a grid, coarse to fine.

    The image is cut into ``rows`` x ``cols`` cells, and each cell again into ``subdivide``
    x ``subdivide`` (an Owen hierarchy: the coarse cells are groups of fine ones); the parts are
    the fine cells, labelled by their row and column in the fine grid (``"r0c3"``). A
    masked cell takes the baseline ``fill``.

    Parameters
    ----------
    rows, cols : int, default=4
        Coarse cells.
    subdivide : int, default=1
        Fine cells per coarse cell along each axis (1: no hierarchy).
    fill : float in [0, 1], "mean" or "blur", default=0.5
        The baseline, on the encoder's [0, 1] intensity scale (see the module docstring):
        a constant grey, the image's mean colour, or a blur of the image. A constant far
        from the images' background makes masked cells evidence of their own; "mean" and
        "blur" leak the brightness of evidence as large as a coarse cell. The encoder's
        own masker is ``ImageGrid(rows=2, cols=2, subdivide=2, fill="mean")``: 16 cells in
        4 groups.

    Examples
    --------
    >>> import numpy as np
    >>> from toolkit.explain import ImageGrid
    >>> grid = ImageGrid(rows=2, cols=2, fill=0.0)
    >>> parts = grid.split(np.ones((4, 4)), None)
    >>> parts.labels
    ['r0c0', 'r0c1', 'r1c0', 'r1c1']
    >>> grid.mask(parts, [True, False, False, False])[..., 0].tolist()
    [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    >>> ImageGrid(rows=2, cols=2, subdivide=2).split(np.ones((8, 8)), None).groups[0]
    [0, 1, 4, 5]
    """

    kind = "image"

    def __init__(self, rows=4, cols=4, subdivide=1, fill=0.5):
        self.rows = rows
        self.cols = cols
        self.subdivide = subdivide
        self.fill = fill

    def _grid(self) -> tuple[tuple[int, int], tuple[int, int]]:
        coarse = (positive_int(self.rows, "rows"), positive_int(self.cols, "cols"))
        s = positive_int(self.subdivide, "subdivide")
        return coarse, (s, s)

    @property
    def n_parts(self) -> int:
        coarse, split = self._grid()
        return math.prod(coarse) * math.prod(split)

    def split(self, item, encoder) -> Parts:
        """The image as the encoder reads it ((H, W, C) in [0, 1]), cut into grid cells."""
        from toolkit.io import read_image

        check_fill(self.fill)
        coarse, split = self._grid()
        image = read_image(item) if encoder is None else encoder.read_item(item)
        fine = (coarse[0] * split[0], coarse[1] * split[1])
        regions = cells(image.shape[:2], fine, "image")
        size = (image.shape[0] / fine[0], image.shape[1] / fine[1])
        return Parts(
            image,
            [f"r{r}c{c}" for r, c in np.ndindex(*fine)],
            regions,
            None if encoder is None else encoder.restore_item,
            groups=grid_groups(coarse, split),
            background=background(image, self.fill, size),
        )

    def mask(self, parts: Parts, keep) -> np.ndarray:
        """The image with the cells not kept set to the baseline, on the item's own scale."""
        out = _masked(parts, keep)
        if parts.restore is not None:  # back to the scale the encoder maps to [0, 1]
            out = parts.restore(out)
        return out

    def summary(self, parts: Parts) -> np.ndarray:
        return np.array([float(parts.item[cell].mean()) for cell in parts.regions])


class TimeSegments:
    """Masker of an audio modality: the parts are equal time segments, coarse to fine, and
    a masked segment is silent (zeros).

    Parameters
    ----------
    n_segments : int, default=8
        Coarse segments.
    subdivide : int, default=1
        Fine segments per coarse one (1: no hierarchy). The encoder's own masker is
        ``TimeSegments(n_segments=4, subdivide=4)``: 16 segments in 4 groups.

    Examples
    --------
    >>> import numpy as np
    >>> from toolkit.explain import TimeSegments
    >>> seg = TimeSegments(n_segments=2)
    >>> parts = seg.split((np.ones(8000, dtype="float32"), 8000), None)
    >>> parts.labels
    ['0.00-0.50 s', '0.50-1.00 s']
    >>> wave, rate = seg.mask(parts, [False, True])
    >>> float(wave[:4000].max()), float(wave[4000:].min()), rate
    (0.0, 1.0, 8000)
    """

    kind = "audio"

    def __init__(self, n_segments=8, subdivide=1, fill="silence"):
        self.n_segments = n_segments
        self.subdivide = subdivide
        self.fill = fill

    @property
    def n_parts(self) -> int:
        coarse, fine = self._grid()
        return coarse * fine

    def _grid(self) -> tuple[int, int]:
        return positive_int(self.n_segments, "n_segments"), positive_int(
            self.subdivide, "subdivide"
        )

    def split(self, item, encoder) -> Parts:
        """The clip read at the encoder's rate ((waveform, rate)), cut into segments."""
        from toolkit.io import read_audio

        coarse, split = self._grid()
        wave, rate = read_audio(item) if encoder is None else encoder.read_item(item)
        segments = cells(wave.shape, (coarse * split,), "audio clip")
        labels = [f"{s[0].start / rate:.2f}-{s[0].stop / rate:.2f} s" for s in segments]
        return Parts(
            (wave, rate),
            labels,
            segments,
            groups=grid_groups((coarse,), (split,)),
            background=self._background(wave, segments),
        )

    def _background(self, wave: np.ndarray, segments) -> np.ndarray:
        if self.fill == "silence":
            return np.zeros_like(wave)
        if self.fill == "floor":
            level = min(float(np.sqrt(np.mean(wave[s] ** 2))) for s in segments)
            noise = np.random.default_rng(0).standard_normal(len(wave))
            return (level * noise).astype(wave.dtype)
        raise ValueError(f"fill must be 'silence' or 'floor', got {self.fill!r}")

    def mask(self, parts: Parts, keep) -> tuple[np.ndarray, int]:
        """The (waveform, rate) pair with the segments not kept silenced."""
        return _masked(parts, keep), parts.item[1]

    def summary(self, parts: Parts) -> np.ndarray:
        wave = parts.item[0]
        return np.array([float(np.sqrt(np.mean(wave[s] ** 2))) for s in parts.regions])


class ScanBlocks:
    """Masker of a 3-D scan modality: the parts are blocks of the preprocessed volume,
    coarse to fine, and a masked block takes the baseline ``fill``.

    The volume is read and preprocessed as the encoder does (orientation, resizing to
    ``spatial_size``, intensity scaling to [0, 1]) and cut into a ``blocks`` grid, each
    block again into ``subdivide`` (an Owen hierarchy); the parts are the fine blocks,
    labelled by their position in the fine grid (``"z0y3x1"``). A masked volume is handed
    back to the encoder in the units it reads (``restore_item``: a fixed intensity window's
    units; with per-volume percentiles the [0, 1] volume itself, which they map (nearly) to
    itself).

    Parameters
    ----------
    blocks : tuple of 3 int, default=(2, 2, 2)
        Coarse blocks.
    subdivide : int or tuple of 3 int, default=1
        Fine blocks per coarse one along each axis (1: no hierarchy). The encoder's own
        masker is ``ScanBlocks((2, 2, 2), subdivide=2, fill="blur")``: 64 blocks in 8 groups.
    fill : float in [0, 1], "mean" or "blur", default=0.0
        0 is the background after the encoder's intensity scaling; "blur" a blur of the
        volume itself (see the module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> from toolkit.explain import ScanBlocks
    >>> parts = ScanBlocks().split(np.ones((4, 4, 4)), None)
    >>> parts.labels[:3], len(parts.labels)
    (['z0y0x0', 'z0y0x1', 'z0y1x0'], 8)
    >>> fine = ScanBlocks(subdivide=2).split(np.ones((8, 8, 8)), None)
    >>> len(fine.labels), len(fine.groups), fine.labels[-1]
    (64, 8, 'z3y3x3')
    """

    kind = "scan"

    def __init__(self, blocks=(2, 2, 2), subdivide=1, fill=0.0):
        self.blocks = blocks
        self.subdivide = subdivide
        self.fill = fill

    def _grid(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if isinstance(self.blocks, Integral) and not isinstance(self.blocks, bool):
            raise ValueError(f"blocks must be 3 positive integers, got {self.blocks!r}")
        return _counts(self.blocks, 3, "blocks"), _counts(self.subdivide, 3, "subdivide")

    @property
    def n_parts(self) -> int:
        coarse, split = self._grid()
        return math.prod(coarse) * math.prod(split)

    def split_item(self, volume: np.ndarray, restore=None) -> Parts:
        coarse, split = self._grid()
        fine = tuple(c * s for c, s in zip(coarse, split, strict=True))
        size = tuple(n / f for n, f in zip(volume.shape, fine, strict=True))
        return Parts(
            volume,
            [f"z{i}y{j}x{k}" for i, j, k in np.ndindex(*fine)],
            cells(volume.shape, fine, "scan volume"),
            restore,
            groups=grid_groups(coarse, split),
            background=background(volume, self.fill, size),
        )

    def split(self, item, encoder) -> Parts:
        """The preprocessed volume (spatial_size, [0, 1]), cut into blocks."""
        check_fill(self.fill)
        self._grid()
        if encoder is None:
            return self.split_item(np.asarray(item, dtype=np.float32))
        return self.split_item(encoder.read_item(item), encoder.restore_item)

    def mask(self, parts: Parts, keep) -> np.ndarray:
        """The volume with the blocks not kept set to the baseline, in the units the encoder
        reads (a fixed intensity window's: ``ScanEncoder.restore_item``)."""
        out = _masked(parts, keep)
        return out if parts.restore is None else parts.restore(out)

    def summary(self, parts: Parts) -> np.ndarray:
        return np.array([float(parts.item[b].mean()) for b in parts.regions])
