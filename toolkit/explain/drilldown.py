"""Drill-down inside one modality: Owen values of the parts of each item (words of a text,
cells of an image, time segments of a clip, blocks of a scan), nested under the modality's
Shapley value so that the parts add up to it exactly.

The game: the model's modalities are the top-level players (as in
:class:`~toolkit.explain.ModalityExplainer` with ``removal="missing"``) and the parts of one
modality's item are players inside it. A coalition keeps some other modalities and some
parts; the kept parts are put back together by a *masker* (the words kept, the other cells
filled, the other segments silent), the result is encoded by the modality's own fitted
encoder, and the model's output on those embeddings is the value. With no part kept the
modality is absent, and with every part kept the item is the original one, so the Owen
values of the parts add up, row by row, to the modality's Shapley value.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import clone, is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from toolkit.embeddings import Embeddings
from toolkit.explain.shapley import coalition_sizes, coalition_weights, exact_shapley
from toolkit.explain.value import value_function


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
    """

    item: object
    labels: list
    regions: list = field(default_factory=list)
    restore: object = None
    names: list | None = None


def _positive_int(value, name: str) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_fill(fill, allowed: tuple[str, ...]):
    if isinstance(fill, str) and fill in allowed:
        return fill
    if isinstance(fill, Real) and not isinstance(fill, bool) and 0.0 <= fill <= 1.0:
        return float(fill)
    raise ValueError(
        f"fill must be one of {allowed} or a number in [0, 1] (the encoder's intensity scale), "
        f"got {fill!r}"
    )


def _cells(shape: tuple[int, ...], counts: tuple[int, ...], what: str) -> list[tuple[slice, ...]]:
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


class Words:
    """Masker of a text modality: the parts are its whitespace-separated words, and masking
    a word removes it (the kept words are joined by single spaces). Works with any text
    encoder (TF-IDF or transformers): the text without the word is encoded again.

    Examples
    --------
    >>> from toolkit.explain import Words
    >>> parts = Words().split("a truly great film", None)
    >>> parts.labels
    ['a', 'truly', 'great', 'film']
    >>> Words().mask(parts, [True, False, True, True])
    'a great film'
    """

    kind = "text"
    n_parts = None  # varies with the text

    def split(self, item, encoder) -> Parts:
        """The words of one text item, read as ``encoder`` reads it (labels: the words)."""
        from toolkit.io import read_text

        text = (read_text(item) if encoder is None else encoder.read_item(item)) or ""
        words = re.findall(r"\S+", text)
        return Parts(text, list(words), list(range(len(words))))

    def mask(self, parts: Parts, keep) -> str:
        """The text with only the kept words, in their order."""
        return " ".join(w for w, k in zip(parts.labels, keep, strict=True) if k)

    def summary(self, parts: Parts) -> np.ndarray:
        return np.asarray(parts.labels, dtype=object)


class ImageGrid:
    """Masker of an image modality: the parts are the cells of a ``rows`` x ``cols`` grid
    and a masked cell takes the baseline fill.

    Parameters
    ----------
    rows, cols : int, default=4
    fill : float in [0, 1] or "mean", default=0.5
        The baseline a masked cell is filled with, on the encoder's [0, 1] intensity scale:
        a constant grey (0.5: mid-grey, 0: black), or ``"mean"``, the image's own mean
        colour. The mean carries the kept cells' brightness into the masked ones, so it
        leaks information: on images whose top-left quadrant alone decides the label, that
        quadrant's cells got 94-103% of the image value with 0.5 and 63-67% with "mean"
        (32 x 32 images, 300 training rows, early and late fusion); a black fill, far
        from every training image, gave 47-50%. Choose a fill close to the images'
        typical background.

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
    """

    kind = "image"

    def __init__(self, rows=4, cols=4, fill=0.5):
        self.rows = rows
        self.cols = cols
        self.fill = fill

    @property
    def n_parts(self) -> int:
        return _positive_int(self.rows, "rows") * _positive_int(self.cols, "cols")

    def split(self, item, encoder) -> Parts:
        """The image as the encoder reads it ((H, W, C) in [0, 1]), cut into grid cells."""
        from toolkit.io import read_image

        _check_fill(self.fill, ("mean",))
        image = read_image(item) if encoder is None else encoder.read_item(item)
        counts = (_positive_int(self.rows, "rows"), _positive_int(self.cols, "cols"))
        cells = _cells(image.shape[:2], counts, "image")
        labels = [f"r{r}c{c}" for r, c in np.ndindex(*counts)]
        return Parts(image, labels, cells, None if encoder is None else encoder.restore_item)

    def mask(self, parts: Parts, keep) -> np.ndarray:
        """The image with the cells not kept set to the fill, on the item's own scale."""
        image = parts.item
        fill = _check_fill(self.fill, ("mean",))
        value = image.reshape(-1, image.shape[2]).mean(axis=0) if fill == "mean" else fill
        out = image.copy()
        for cell, k in zip(parts.regions, keep, strict=True):
            if not k:
                out[cell] = value
        if parts.restore is not None:  # back to the scale the encoder maps to [0, 1]
            out = parts.restore(out)
        return out

    def summary(self, parts: Parts) -> np.ndarray:
        return np.array([float(parts.item[cell].mean()) for cell in parts.regions])


class TimeSegments:
    """Masker of an audio modality: the parts are ``n_segments`` equal time segments and a
    masked segment is silent (zeros).

    Parameters
    ----------
    n_segments : int, default=8

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

    def __init__(self, n_segments=8):
        self.n_segments = n_segments

    @property
    def n_parts(self) -> int:
        return _positive_int(self.n_segments, "n_segments")

    def split(self, item, encoder) -> Parts:
        """The clip read at the encoder's rate ((waveform, rate)), cut into segments."""
        from toolkit.io import read_audio

        wave, rate = read_audio(item) if encoder is None else encoder.read_item(item)
        segments = _cells(wave.shape, (self.n_parts,), "audio clip")
        labels = [f"{s[0].start / rate:.2f}-{s[0].stop / rate:.2f} s" for s in segments]
        return Parts((wave, rate), labels, segments)

    def mask(self, parts: Parts, keep) -> tuple[np.ndarray, int]:
        """The (waveform, rate) pair with the segments not kept silenced."""
        wave, rate = parts.item
        out = wave.copy()
        for segment, k in zip(parts.regions, keep, strict=True):
            if not k:
                out[segment] = 0.0
        return out, rate

    def summary(self, parts: Parts) -> np.ndarray:
        wave = parts.item[0]
        return np.array([float(np.sqrt(np.mean(wave[s] ** 2))) for s in parts.regions])


class ScanBlocks:
    """Masker of a 3-D scan modality: the parts are the blocks of a ``blocks`` grid over the
    preprocessed volume and a masked block takes the fill.

    The volume is read and preprocessed as the encoder does (orientation, resizing to
    ``spatial_size``, 1st/99th-percentile intensity scaling to [0, 1]); a masked volume is
    handed back to the encoder, which scales its intensities again.

    Parameters
    ----------
    blocks : tuple of 3 int, default=(2, 2, 2)
    fill : float in [0, 1] or "mean", default=0.0
        0 is the background after the encoder's intensity scaling.

    Examples
    --------
    >>> import numpy as np
    >>> from toolkit.explain import ScanBlocks
    >>> parts = ScanBlocks().split(np.ones((4, 4, 4)), None)
    >>> parts.labels[:3], len(parts.labels)
    (['z0y0x0', 'z0y0x1', 'z0y1x0'], 8)
    """

    kind = "scan"

    def __init__(self, blocks=(2, 2, 2), fill=0.0):
        self.blocks = blocks
        self.fill = fill

    def _counts(self) -> tuple[int, int, int]:
        blocks = tuple(self.blocks) if isinstance(self.blocks, tuple | list) else ()
        if len(blocks) != 3:
            raise ValueError(f"blocks must be 3 positive integers, got {self.blocks!r}")
        return tuple(_positive_int(b, "each of blocks") for b in blocks)

    @property
    def n_parts(self) -> int:
        return math.prod(self._counts())

    def split(self, item, encoder) -> Parts:
        """The preprocessed volume (spatial_size, [0, 1]), cut into blocks."""
        if encoder is None:
            volume = np.asarray(item, dtype=np.float32)
        else:
            volume = encoder.read_item(item)
        counts = self._counts()
        _check_fill(self.fill, ("mean",))
        blocks = _cells(volume.shape, counts, "scan volume")
        return Parts(volume, [f"z{i}y{j}x{k}" for i, j, k in np.ndindex(*counts)], blocks)

    def mask(self, parts: Parts, keep) -> np.ndarray:
        """The volume with the blocks not kept set to the fill."""
        volume = parts.item
        fill = _check_fill(self.fill, ("mean",))
        value = float(volume.mean()) if fill == "mean" else fill
        out = volume.copy()
        for block, k in zip(parts.regions, keep, strict=True):
            if not k:
                out[block] = value
        return out

    def summary(self, parts: Parts) -> np.ndarray:
        return np.array([float(parts.item[b].mean()) for b in parts.regions])


#: Largest ``max_parts``: an exact row costs 2^max_parts - 2 encoder calls.
MAX_EXACT_PARTS = 14


def drill_down_cost(n_parts: int, n_modalities: int, *, max_parts=10, n_permutations=64) -> dict:
    """Cost of :func:`drill_down` for one row: encoder calls and fusion evaluations.

    Exact (``n_parts <= max_parts``): 2^d - 2 masked items are encoded (the empty set is
    the absent modality and the full set the original item) and 2^(M-1) x 2^d rows go
    through the fusion. Sampled: at most ``n_permutations`` x (d - 1) items (prefixes shared
    between walks are encoded once) and 2^(M-1) times that plus 2 fusion rows.

    Examples
    --------
    >>> drill_down_cost(4, 3)
    {'exact': True, 'encoder_calls': 14, 'fusion_rows': 64}
    >>> drill_down_cost(16, 3)
    {'exact': False, 'encoder_calls': 960, 'fusion_rows': 3848}
    """
    d, M = int(n_parts), int(n_modalities)
    if d <= max_parts:
        return {
            "exact": True,
            "encoder_calls": max(2**d - 2, 0),
            "fusion_rows": 2 ** (M - 1) * 2**d,
        }
    n_perm = _n_permutations(n_permutations)
    calls = n_perm * (d - 1)
    return {"exact": False, "encoder_calls": calls, "fusion_rows": 2 ** (M - 1) * (calls + 2)}


def _n_permutations(n_permutations) -> int:
    n = _positive_int(n_permutations, "n_permutations")
    return max(4, n + n % 2)  # antithetic pairs, at least 2 of them for a standard error


def _encoder(model, modality: str, column):
    """The modality's fitted encoder, as a quiet shallow copy (the model is not changed)."""
    encoder = model.encoders_[modality]
    try:
        check_is_fitted(encoder, "n_features_out_")
        encoder = copy.copy(encoder)
    except NotFittedError:
        # fixed encoders of a model with a cache are fitted by the cache when needed
        encoder = clone(encoder).fit(column)
    if hasattr(encoder, "progress"):
        encoder.progress = False
    return encoder


def _column(model, X, modality: str):
    """The raw items of ``modality`` in ``X`` (one column)."""
    if isinstance(X, Embeddings):
        raise TypeError(
            "drill_down needs the raw rows (a DataFrame or dict of columns), not Embeddings: "
            "it masks parts of each raw item and encodes the result"
        )
    frame = pd.DataFrame(X) if isinstance(X, dict) else X
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"X must be a pandas DataFrame or dict of columns, got {type(X).__name__}")
    spec = {entry[0]: entry[2] for entry in (model.modalities or [])}
    cols = spec.get(modality)
    if isinstance(cols, list | tuple):
        if len(cols) != 1:
            raise ValueError(
                f"modality '{modality}' reads {len(cols)} columns {list(cols)}; drill-down "
                "splits one item per row (one column)"
            )
        cols = cols[0]
    if cols not in frame.columns:
        raise ValueError(f"X has no column '{cols}' for modality '{modality}'")
    return frame[cols]


def _walks(d: int, n_permutations: int, rng) -> np.ndarray:
    """Antithetic pairs of random orders of d parts, shape (P, d)."""
    orders = []
    for _ in range(_n_permutations(n_permutations) // 2):
        perm = rng.permutation(d)
        orders += [perm, perm[::-1]]
    return np.array(orders)


def _subsets(d: int, exact: bool, orders) -> np.ndarray:
    """The part subsets to value, as a boolean matrix (n_subsets, d): every subset in
    bitmask order (exact), or the distinct prefixes of the walks (sampled)."""
    if exact:
        return (np.arange(1 << d)[:, None] >> np.arange(d)) & 1 == 1
    prefixes = np.zeros((len(orders), d + 1, d), dtype=bool)
    for p, order in enumerate(orders):
        for k, part in enumerate(order):
            prefixes[p, k + 1 :, part] = True
    return np.unique(prefixes.reshape(-1, d), axis=0)


class _RowGame:
    """U(T): the modality-level Shapley weighting of v(S + (modality, T)) over the other
    modalities' coalitions S, for one row, valued on every subset T at once."""

    def __init__(self, model, emb: Embeddings, m: int, i: int, output):
        self.model, self.emb, self.m, self.i, self.output = model, emb, m, i, output

    def values(self, subsets: np.ndarray, block: np.ndarray, present: np.ndarray) -> np.ndarray:
        """U for each subset, shape (n_subsets[, n_classes]); row k of ``block`` and
        ``present`` is subset k's encoding."""
        emb, m, i = self.emb, self.m, self.i
        M = emb.n_modalities
        others = [j for j in range(M) if j != m]
        n_s, n_t = 1 << len(others), len(subsets)
        keep = np.ones((n_s, M), dtype=bool)
        for bit, j in enumerate(others):
            keep[:, j] = (np.arange(n_s) >> bit) & 1 == 1
        mask = np.repeat(keep & emb.mask[i], n_t, axis=0)
        mask[:, m] = np.tile(present, n_s)
        blocks = {
            name: (
                np.tile(block, (n_s, 1))
                if j == m
                else np.repeat(emb.blocks[name][i : i + 1], n_s * n_t, axis=0)
            )
            for j, name in enumerate(emb.names)
        }
        v = value_function(self.model, Embeddings(blocks, mask), output=self.output)
        V = v(np.ones(M, dtype=bool))
        V = V.reshape((n_s, n_t) + V.shape[1:])
        weights = coalition_weights(M)[coalition_sizes(len(others))]
        return np.tensordot(weights, V, axes=(0, 0))


def drill_down(
    model,
    X,
    modality: str,
    masker=None,
    *,
    output=None,
    max_parts: int = 10,
    n_permutations: int = 64,
    random_state=None,
):
    """Owen values of the parts of one modality's items (words, image cells, time segments,
    scan blocks), adding up to the modality's Shapley value.

    For each row the item is split into d parts by the ``masker``; every coalition of the
    other modalities is crossed with every subset of parts (the parts not in the subset
    are masked: words removed, cells filled, segments silenced, blocks filled), the masked
    item is encoded by the modality's fitted encoder, and the model's output is the value.
    The empty subset is the modality's absence and the full subset the original item, so
    ``values.sum(axis=1)`` equals ``model.explain(X).values[:, m]`` (``removal="missing"``).

    Cost per row (see :func:`drill_down_cost`): exact for d <= ``max_parts``, 2^d - 2 encoder
    calls; above it, ``n_permutations`` random orders of the parts (antithetic pairs) are
    walked from no part to all parts (at most ``n_permutations`` x (d - 1) encoder calls),
    the values still add up exactly to the modality's Shapley value, and ``error_std`` holds
    each part's standard error (the standard deviation of the antithetic-pair means over
    sqrt(pairs)); it is 0 for exactly computed rows. The model's other modalities cost
    2^(M-1) fusion rows per subset, evaluated in one batch per row.

    A tabular modality (``TabularEncoder``) is passed to
    :func:`~toolkit.explain.explain_features` (its columns are the parts, exactly, up to
    ``max_parts`` columns).

    Parameters
    ----------
    model : fitted MultimodalClassifier or MultimodalRegressor
        Fitted on raw data (its encoders re-encode the masked items).
    X : DataFrame or dict of columns
        The rows to explain.
    modality : str
        The modality to drill into.
    masker : Clauses, Words, ImageGrid, TimeSegments, ScanBlocks or None
        How the item is split and masked; None asks the modality's encoder for its own
        (``encoder.masker()``: ``Clauses()`` (clauses, negation scopes kept whole; see
        :mod:`toolkit.explain.text_parts`) for a TextEncoder, ``ImageGrid()`` (4 x 4 cells)
        for an ImageEncoder, ``TimeSegments()`` (8) for an AudioEncoder, ``ScanBlocks()``
        (2 x 2 x 2) for a ScanEncoder). Items are read with the encoder's ``read_item``.
    output : {"probability", "log_odds"} or None
        As for :class:`ModalityExplainer`.
    max_parts : int, default=10
        Rows with more parts are sampled (see above); at most 14 (16,382 encoder calls per
        exact row).
    n_permutations : int, default=64
        Orders walked per sampled row (rounded up to an even number, at least 4).
    random_state : int, RandomState or None
        Seeds the sampled orders.

    Returns
    -------
    shap.Explanation
        ``values``: (n_samples, d[, n_classes]) for images, audio and scans; for text an
        object array holding one (d_i[, n_classes]) array per row (shap's text layout), as
        are ``data`` (the parts' text: clauses, or words with ``Words()``) and
        ``feature_names`` (names that reveal no words, "a negated clause in sentence 2",
        from ``Clauses``; the words with ``Words()``). Image, audio and scan
        ``feature_names`` are the part labels (``"r0c1"``, ``"0.00-0.25 s"``,
        ``"z0y1x0"``) and ``data`` each part's mean intensity or RMS level.
        ``base_values`` = the model's output minus the modality's Shapley value (so
        ``base_values + values.sum`` is the output), ``error_std`` as above,
        ``display_data`` the items as read (text, (H, W, C) image, (waveform, rate),
        volume; None where the modality is absent, whose values are 0).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from toolkit import MultimodalClassifier, TabularEncoder, TextEncoder
    >>> from toolkit.explain import drill_down
    >>> rng = np.random.default_rng(0)
    >>> good = rng.random(60) > 0.5
    >>> df = pd.DataFrame({"note": np.where(good, "A good day, no rain.", "A bad day, no sun."),
    ...                    "lab": rng.normal(size=60)})
    >>> clf = MultimodalClassifier([("note", TextEncoder(n_components=2), "note"),
    ...                             ("lab", TabularEncoder(), ["lab"])], random_state=0)
    >>> clf = clf.fit(df, good.astype(int))
    >>> parts = drill_down(clf, df.iloc[:2], "note")
    >>> list(parts.data[0]), parts.values[0].shape
    (['A good day', 'no rain.'], (2,))
    >>> list(parts.feature_names[0])
    ['an affirmed clause (1 of 2) in sentence 1', 'a negated clause (2 of 2) in sentence 1']
    >>> bool(np.isclose(parts.values[0].sum(), clf.explain(df.iloc[:2]).values[0, 0]))
    True
    """
    import shap

    check_is_fitted(model, "fusion_")
    names = list(model.modality_names_)
    if modality not in names:
        raise KeyError(f"unknown modality '{modality}'; available: {names}")
    max_parts = _positive_int(max_parts, "max_parts")
    if max_parts > MAX_EXACT_PARTS:
        raise ValueError(
            f"max_parts={max_parts} would allow 2^{max_parts} - 2 encoder calls per row; at most "
            f"{MAX_EXACT_PARTS} is accepted (items with more parts are sampled: raise "
            "n_permutations for a smaller error)"
        )
    _n_permutations(n_permutations)
    encoders = getattr(model, "encoders_", None) or {}
    if modality not in encoders:
        raise ValueError(
            f"the model has no encoder for modality '{modality}' (it was fitted on precomputed "
            "Embeddings); drill-down re-encodes masked raw items, so fit the model on raw data "
            "or call fit_encoders first"
        )
    fitted = encoders[modality]
    encoder_class = type(fitted).__name__
    if masker is None and getattr(fitted, "parts_are_features", False):
        from toolkit.explain.features import explain_features

        return explain_features(model, X, modality, output=output, max_features=max_parts)
    own = fitted.masker() if callable(getattr(fitted, "masker", None)) else None
    if masker is None:
        if own is None:
            raise TypeError(
                f"modality '{modality}' is encoded by {encoder_class}, which has no drill-down "
                "(its masker() gives none); the text, image, audio and scan encoders and "
                "TabularEncoder have one"
            )
        masker = own
    elif own is None or getattr(masker, "kind", None) != own.kind:
        raise TypeError(
            f"{type(masker).__name__} splits {getattr(masker, 'kind', 'unknown')} items; "
            f"modality '{modality}' is encoded by {encoder_class}, which reads "
            f"{getattr(own, 'kind', 'no splittable')} items"
        )
    column = _column(model, X, modality)
    encoder = _encoder(model, modality, column)
    value = value_function(model, X, output=output)
    emb, m = value.embeddings, names.index(modality)
    full_output = value(np.ones(len(names), dtype=bool))
    rng = check_random_state(random_state)
    rows = [
        _explain_row(
            model,
            emb,
            m,
            i,
            column.iloc[i],
            masker,
            encoder,
            output,
            max_parts,
            n_permutations,
            rng,
        )
        if emb.mask[i, m]
        else None
        for i in range(emb.n_samples)
    ]
    return _explanation(shap, model, masker, rows, full_output)


def _explain_row(model, emb, m, i, item, masker, encoder, output, max_parts, n_permutations, rng):
    parts = masker.split(item, encoder)
    d = len(parts.labels)
    if d == 0:
        return {"parts": parts, "values": None}
    exact = d <= max_parts
    orders = None if exact else _walks(d, n_permutations, rng)
    subsets = _subsets(d, exact, orders)
    inner = [k for k in range(len(subsets)) if 0 < subsets[k].sum() < d]
    width = emb.blocks[emb.names[m]].shape[1]
    block = np.repeat(emb.blocks[emb.names[m]][i : i + 1], len(subsets), axis=0)
    present = subsets.any(axis=1)  # empty subset: the modality is absent
    if inner:
        encoded, ok = encoder.encode([masker.mask(parts, subsets[k]) for k in inner])
        if encoded.shape[1] != width:
            raise ValueError(
                f"the encoder of modality '{emb.names[m]}' returned {encoded.shape[1]} features "
                f"for masked items, the model was fitted on {width}"
            )
        block[inner] = encoded
        present[inner] = ok
    U = _RowGame(model, emb, m, i, output).values(subsets, block, present)
    if exact:
        return {
            "parts": parts,
            "values": exact_shapley(U, d),
            "error": np.zeros((d,) + U.shape[1:]),
        }
    index = {s.tobytes(): k for k, s in enumerate(subsets)}
    marginals = np.zeros((len(orders), d) + U.shape[1:])
    for p, order in enumerate(orders):
        kept = np.zeros(d, dtype=bool)
        previous = U[index[kept.tobytes()]]
        for part in order:
            kept[part] = True
            current = U[index[kept.tobytes()]]
            marginals[p, part] = current - previous
            previous = current
    pairs = marginals.reshape((len(orders) // 2, 2) + marginals.shape[1:]).mean(axis=1)
    error = pairs.std(axis=0, ddof=1) / np.sqrt(len(pairs))
    return {"parts": parts, "values": marginals.mean(axis=0), "error": error}


def _explanation(shap, model, masker, rows, full_output):
    n = len(rows)
    tail = full_output.shape[1:]
    output_names = [str(c) for c in model.classes_] if is_classifier(model) and tail else None
    display = np.empty(n, dtype=object)
    for i, row in enumerate(rows):
        display[i] = None if row is None else row["parts"].item
    if masker.n_parts is None:  # ragged: one array per row
        values, errors, data, names = (np.empty(n, dtype=object) for _ in range(4))
        for i, row in enumerate(rows):
            labels = [] if row is None else row["parts"].labels
            empty = np.zeros((len(labels),) + tail)
            has = row is not None and row["values"] is not None
            values[i] = row["values"] if has else empty
            errors[i] = row["error"] if has else empty
            data[i] = np.asarray(labels, dtype=object)
            named = None if row is None else row["parts"].names
            names[i] = data[i] if named is None else np.asarray(named, dtype=object)
        sums = np.array([v.sum(axis=0) for v in values]).reshape((n,) + tail)
        feature_names = names
    else:
        d = masker.n_parts
        values, errors = np.zeros((n, d) + tail), np.zeros((n, d) + tail)
        data, feature_names = np.full((n, d), np.nan), None
        for i, row in enumerate(rows):
            if row is None or row["values"] is None:
                continue
            values[i], errors[i] = row["values"], row["error"]
            data[i] = masker.summary(row["parts"])
            feature_names = row["parts"].labels
        if feature_names is None:  # no row has the modality: labels from the masker's grid
            feature_names = [f"part{k}" for k in range(d)]
        sums = values.sum(axis=1)
    return shap.Explanation(
        values=values,
        base_values=full_output - sums,
        data=data,
        display_data=display,
        feature_names=feature_names,
        output_names=output_names,
        error_std=errors,
    )
