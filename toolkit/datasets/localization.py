"""``make_moving_regions``: SYNTHETIC known-answer data for drill-down explanations, where
the informative region of an item moves from row to row.

Each positive row carries its evidence somewhere else: a bright lesion at a random place
in a 3-D scan, a bright square at a random place in an image, a tone burst at a random
time in a clip; negative rows carry none. The true region of every row is returned, so a
drill-down (:func:`toolkit.explain.drill_down`) can be scored on whether its top part is
where the evidence is. A location map that is the same for every row scores at chance.

Modalities are made by the functions in :data:`REGION_MAKERS` (name -> maker); a maker
takes ``(labels, rng, options)`` and returns the column's items and the true region of
each row (None for a row without evidence). Adding a modality (a keyword at a random
position of a text, say) is one more maker in that table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.utils import Bunch, check_random_state

from toolkit.datasets._common import check_float, check_int


def _box(size: int, side: int, rng, ndim: int) -> tuple[slice, ...]:
    """A ``side``-wide box at a random place inside a ``size``-wide array."""
    starts = rng.randint(0, size - side + 1, size=ndim)
    return tuple(slice(int(s), int(s) + side) for s in starts)


def _scans(labels, rng, options: dict):
    """Volumes of faint noise; a positive row has a bright cube (a quarter of the side)."""
    size = options["scan_size"]
    side = max(size // 4, 1)
    items, regions = [], []
    for label in labels:
        volume = 0.3 + 0.1 * rng.standard_normal((size,) * 3)
        region = _box(size, side, rng, 3) if label else None
        if region is not None:
            volume[region] += options["contrast"]
        items.append(np.clip(volume, 0.0, 1.0).astype(np.float32))
        regions.append(region)
    return items, regions


def _images(labels, rng, options: dict):
    """Grey images of faint noise; a positive row has a bright square (a quarter of the side)."""
    size = options["image_size"]
    side = max(size // 4, 1)
    items, regions = [], []
    for label in labels:
        image = 0.3 + 0.1 * rng.standard_normal((size, size))
        region = _box(size, side, rng, 2) if label else None
        if region is not None:
            image[region] += options["contrast"]
        items.append(np.clip(image, 0.0, 1.0).astype(np.float32))
        regions.append(region)
    return items, regions


def _clips(labels, rng, options: dict):
    """Clips of faint noise; a positive row has a 440 Hz tone burst lasting an eighth of the
    clip at a random time. The region is the burst's slice of samples."""
    rate = options["sample_rate"]
    n = int(round(rate * options["duration"]))
    burst = max(n // 8, 1)
    t = np.arange(burst) / rate
    tone = options["contrast"] * np.sin(2 * np.pi * 440.0 * t) * np.hanning(burst)
    items, regions = [], []
    for label in labels:
        wave = 0.02 * rng.standard_normal(n)
        region = None
        if label:
            start = int(rng.randint(0, n - burst + 1))
            region = (slice(start, start + burst),)
            wave[region] += tone
        items.append((wave.astype(np.float32), rate))
        regions.append(region)
    return items, regions


#: Modality name -> maker ``(labels, rng, options) -> (items, regions)``.
REGION_MAKERS = {"scan": _scans, "image": _images, "audio": _clips}


def make_moving_regions(
    n_samples: int = 40,
    *,
    modalities: tuple[str, ...] = ("scan", "image", "audio"),
    prevalence: float = 0.5,
    contrast: float = 0.6,
    scan_size: int = 12,
    image_size: int = 16,
    duration: float = 0.5,
    sample_rate: int = 8000,
    random_state=None,
):
    """Generate SYNTHETIC rows whose evidence sits at a different place in every row.

    Parameters
    ----------
    n_samples : int, default=40
        Rows, >= 2.
    modalities : tuple of str, default=("scan", "image", "audio")
        Columns to make, names in :data:`REGION_MAKERS`; each positive row has evidence in
        every one of them (each alone decides the label).
    prevalence : float, default=0.5
        Share of positive rows, in (0, 1); at least one row of each class.
    contrast : float, default=0.6
        Brightness of a lesion or square above the background (0.3), amplitude of a burst
        (the noise has standard deviation 0.1, or 0.02 for clips).
    scan_size, image_size : int, default=12, 16
        Side of the volumes and images (>= 4); the lesion and the square are a quarter of
        it wide.
    duration : float, default=0.5
        Seconds per clip; the burst lasts an eighth of it.
    sample_rate : int, default=8000
    random_state : int, RandomState or None

    Returns
    -------
    Bunch with ``frame`` (one column per modality: (s, s, s) float32 volumes in [0, 1],
    (s, s) float32 images in [0, 1], (waveform, rate) pairs), ``target`` (0/1 ints),
    ``regions`` (modality -> one region per row: a tuple of slices into the item's array,
    the samples of the burst for clips; None for negative rows) and ``modalities``
    (the column names).

    Examples
    --------
    >>> from toolkit.datasets.localization import make_moving_regions
    >>> data = make_moving_regions(6, modalities=("image",), random_state=0)
    >>> data.frame["image"][0].shape, int(data.target.sum())
    ((16, 16), 3)
    >>> [r is None for r in data.regions["image"]] == list(data.target == 0)
    True
    """
    n = check_int("n_samples", n_samples, low=2)
    unknown = [m for m in modalities if m not in REGION_MAKERS]
    if unknown or not modalities:
        raise ValueError(
            f"unknown modalities {unknown or list(modalities)}; choose from {list(REGION_MAKERS)}"
        )
    share = check_float("prevalence", prevalence, low=0.0, high=1.0, low_open=True, high_open=True)
    options = {
        "contrast": check_float("contrast", contrast, low=0.0, low_open=True),
        "scan_size": check_int("scan_size", scan_size, low=4),
        "image_size": check_int("image_size", image_size, low=4),
        "duration": check_float("duration", duration, low=0.0, low_open=True),
        "sample_rate": check_int("sample_rate", sample_rate, low=1000),
    }
    rng = check_random_state(random_state)
    n_pos = min(max(int(round(share * n)), 1), n - 1)
    labels = np.zeros(n, dtype=int)
    labels[rng.permutation(n)[:n_pos]] = 1
    frame, regions = {}, {}
    for name in modalities:
        frame[name], regions[name] = REGION_MAKERS[name](labels, rng, options)
    return Bunch(
        frame=pd.DataFrame(frame),
        target=labels,
        regions=regions,
        modalities=list(modalities),
    )
