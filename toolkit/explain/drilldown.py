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
import re

import numpy as np
import pandas as pd
from sklearn.base import clone, is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from toolkit.embeddings import Embeddings
from toolkit.explain import hierarchy
from toolkit.explain.parts import ImageGrid, Parts, ScanBlocks, TimeSegments, positive_int
from toolkit.explain.shapley import coalition_sizes, coalition_weights
from toolkit.explain.value import value_function

__all__ = [
    "ImageGrid",
    "MAX_EXACT_PARTS",
    "Parts",
    "ScanBlocks",
    "TimeSegments",
    "Words",
    "drill_down",
    "drill_down_cost",
    "rank_parts",
]


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


#: Largest ``max_parts``: an exact row costs 2^max_parts - 2 encoder calls.
MAX_EXACT_PARTS = 14


def drill_down_cost(
    n_parts: int, n_modalities: int, *, groups=None, max_parts=10, n_permutations=64
) -> dict:
    """Cost of :func:`drill_down` for one row: encoder calls and fusion evaluations.

    ``groups``: the sizes of the coarse parts the d parts are nested in (an Owen
    hierarchy, e.g. ``[8] * 8`` for a scan's 8 blocks each split into 8); None: one group.
    Exact when the subsets with at most one group partly kept, less the empty and the full
    one (:func:`toolkit.explain.hierarchy.exact_cost`; 2^d - 2 without groups), number at
    most 2^max_parts - 2: that many masked items are encoded, and 2^(M-1) fusion rows per
    subset. Sampled: at most ``n_permutations`` x (d - 1) items (walks that keep the groups
    together; prefixes shared between walks are encoded once) and 2^(M-1) times that plus
    2 fusion rows.

    Examples
    --------
    >>> drill_down_cost(4, 3)
    {'exact': True, 'encoder_calls': 14, 'fusion_rows': 64}
    >>> drill_down_cost(16, 3)
    {'exact': False, 'encoder_calls': 960, 'fusion_rows': 3848}
    >>> drill_down_cost(16, 3, groups=[4, 4, 4, 4])  # 4 groups of 4: exact
    {'exact': True, 'encoder_calls': 462, 'fusion_rows': 1856}
    >>> drill_down_cost(64, 2, groups=[8] * 8, n_permutations=4)  # a scan's 64 blocks
    {'exact': False, 'encoder_calls': 252, 'fusion_rows': 508}
    """
    d, M = int(n_parts), int(n_modalities)
    sizes = [d] if groups is None else [int(g) for g in groups]
    if sum(sizes) != d:
        raise ValueError(f"the group sizes {sizes} do not add up to the {d} parts")
    budget = 2 ** positive_int(max_parts, "max_parts") - 2
    exact = hierarchy.exact_cost(sizes)
    if exact <= budget:
        return {
            "exact": True,
            "encoder_calls": max(exact, 0),
            "fusion_rows": 2 ** (M - 1) * (exact + 2),
        }
    calls = _n_permutations(n_permutations) * (d - 1)
    return {"exact": False, "encoder_calls": calls, "fusion_rows": 2 ** (M - 1) * (calls + 2)}


def _n_permutations(n_permutations) -> int:
    n = positive_int(n_permutations, "n_permutations")
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


def _max_parts(max_parts) -> int:
    """``max_parts`` as an int, refused above :data:`MAX_EXACT_PARTS`."""
    max_parts = positive_int(max_parts, "max_parts")
    if max_parts > MAX_EXACT_PARTS:
        raise ValueError(
            f"max_parts={max_parts} would allow 2^{max_parts} - 2 encoder calls per row; at most "
            f"{MAX_EXACT_PARTS} is accepted (items with more parts are sampled: raise "
            "n_permutations for a smaller error)"
        )
    return max_parts


def _checked_masker(fitted, masker, modality: str):
    """The masker to use: the encoder's own when ``masker`` is None, else ``masker`` if it
    splits the kind of items the encoder reads."""
    encoder_class = type(fitted).__name__
    own = fitted.masker() if callable(getattr(fitted, "masker", None)) else None
    if masker is None:
        if own is None:
            raise TypeError(
                f"modality '{modality}' is encoded by {encoder_class}, which has no drill-down "
                "(its masker() gives none); the text, image, audio and scan encoders and "
                "TabularEncoder have one"
            )
        return own
    if own is None or getattr(masker, "kind", None) != own.kind:
        raise TypeError(
            f"{type(masker).__name__} splits {getattr(masker, 'kind', 'unknown')} items; "
            f"modality '{modality}' is encoded by {encoder_class}, which reads "
            f"{getattr(own, 'kind', 'no splittable')} items"
        )
    return masker


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

    Parts may be nested in coarse groups (an Owen hierarchy, the masker's ``groups``: a
    scan's 64 blocks in its 8 coarse blocks, an image's 16 cells in its 4 quadrants); a
    part's value is then its Owen value (:mod:`toolkit.explain.hierarchy`), and the parts
    of a group add up to the group's value in the coarse game. Cost per row (see
    :func:`drill_down_cost`): exact when the subsets the values need (2^d without groups)
    number at most 2^max_parts; otherwise ``n_permutations`` random orders of the parts
    that keep the groups together (antithetic pairs) are walked from no part to all parts
    (at most ``n_permutations`` x (d - 1) encoder calls), the values still add up exactly
    to the modality's Shapley value, and ``error_std`` holds each part's standard error
    (the standard deviation of the antithetic-pair means over sqrt(pairs)); it is 0 for
    exactly computed rows. A part is ``resolved`` when its interval (``lower_bounds`` to
    ``upper_bounds``: value +- t_{0.975, pairs - 1} x s.e.) excludes 0, or, computed
    exactly, when its value is not 0; :func:`rank_parts` ranks resolved parts first. The
    model's other modalities cost 2^(M-1) fusion rows per subset, evaluated in one batch
    per row.

    A tabular modality (``TabularEncoder``) is passed to
    :func:`~toolkit.explain.explain_features` (its columns are the parts, exactly, up to
    ``max_parts`` columns; a column left out takes background rows' values, and the
    explanation's ``presence_values`` hold what having the modality at all carries).

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
        :mod:`toolkit.explain.text_parts`) for a TextEncoder, 16 blurred cells in 4
        quadrants for an ImageEncoder, 16 segments in 4 masked to the noise floor for an
        AudioEncoder, 64 blurred blocks in 2 x 2 x 2 for a ScanEncoder; see
        :mod:`toolkit.explain.parts`). Items are read with the encoder's ``read_item``.
    output : {"probability", "log_odds"} or None
        As for :class:`ModalityExplainer`.
    max_parts : int, default=10
        Rows whose exact values need more than 2^max_parts subsets are sampled (see
        above); at most 14 (16,382 encoder calls per exact row).
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
        ``base_values + values.sum`` is the output), ``error_std``, ``lower_bounds`` and
        ``upper_bounds`` as above, ``display_data`` the items as read (text, (H, W, C)
        image, (waveform, rate), volume; None where the modality is absent, whose values
        are 0). Per-row attributes shap has no field for (not kept when the explanation is
        sliced): ``resolved`` (bool, shaped as ``values``), ``groups`` (each row's coarse
        groups, lists of part positions; None for an absent row), ``exact`` (bool per
        row) and ``encoder_calls`` (masked items encoded per row).

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
    max_parts = _max_parts(max_parts)
    _n_permutations(n_permutations)
    encoders = getattr(model, "encoders_", None) or {}
    if modality not in encoders:
        raise ValueError(
            f"the model has no encoder for modality '{modality}' (it was fitted on precomputed "
            "Embeddings); drill-down re-encodes masked raw items, so fit the model on raw data "
            "or call fit_encoders first"
        )
    fitted = encoders[modality]
    if masker is None and getattr(fitted, "parts_are_features", False):
        from toolkit.explain.features import explain_features

        return explain_features(model, X, modality, output=output, max_features=max_parts)
    masker = _checked_masker(fitted, masker, modality)
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


def _plan(parts: Parts, max_parts: int, n_permutations: int, rng) -> dict:
    """What one row values: every subset exact Owen values need, or the prefixes of walks
    that keep groups together."""
    d = len(parts.labels)
    groups = hierarchy.check_groups(parts.groups, d)
    if hierarchy.exact_cost([len(g) for g in groups]) <= 2**max_parts - 2:
        return {"groups": groups, "subsets": hierarchy.exact_subsets(groups, d), "orders": None}
    orders = hierarchy.group_orders(groups, _n_permutations(n_permutations) // 2, rng)
    return {"groups": groups, "subsets": hierarchy.walk_subsets(orders), "orders": orders}


def _explain_row(model, emb, m, i, item, masker, encoder, output, max_parts, n_permutations, rng):
    parts = masker.split(item, encoder)
    d = len(parts.labels)
    if d == 0:
        return {"parts": parts, "values": None}
    plan = _plan(parts, max_parts, n_permutations, rng)
    subsets, groups, orders = plan["subsets"], plan["groups"], plan["orders"]
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
    index = hierarchy.index_of(subsets)
    row = {"parts": parts, "groups": groups, "calls": len(inner)}
    if orders is None:
        values = hierarchy.exact_owen(U, index, groups, d)
        return {**row, "values": values, "error": np.zeros_like(values), "n_pairs": None}
    marginals = hierarchy.walk_marginals(U, index, orders)
    values, error = hierarchy.pair_estimate(marginals)
    return {**row, "values": values, "error": error, "n_pairs": len(orders) // 2}


def rank_parts(explanation, row: int = 0, class_index: int | None = None) -> np.ndarray:
    """Part positions of one row of a drill-down, resolved material parts first (their
    interval excludes 0 and they carry >= 1% of the row's total |value|), each set by
    decreasing |value|: a part whose value may be noise, or is negligible, never ranks
    above one that is resolved and matters (:func:`toolkit.explain.hierarchy.rank`).

    ``class_index``: the class position for a multi-class explanation (default: the
    class with the row's highest output).

    Examples
    --------
    >>> import numpy as np, shap
    >>> e = shap.Explanation(values=np.array([[0.5, -0.2, 0.1]]))
    >>> e.resolved = np.array([[False, True, True]])
    >>> rank_parts(e, 0).tolist()
    [1, 2, 0]
    """
    values = np.asarray(explanation.values[row], dtype=float)
    done = getattr(explanation, "resolved", None)
    done = np.ones(values.shape, dtype=bool) if done is None else np.asarray(done[row], bool)
    if values.ndim == 2:
        k = class_index
        if k is None:
            k = int(np.argmax(np.asarray(explanation.base_values[row]) + values.sum(axis=0)))
        values, done = values[:, k], done[:, k]
    return hierarchy.rank(values, done)


def _explanation(shap, model, masker, rows, full_output):
    n = len(rows)
    tail = full_output.shape[1:]
    output_names = [str(c) for c in model.classes_] if is_classifier(model) and tail else None
    display = np.empty(n, dtype=object)
    for i, row in enumerate(rows):
        display[i] = None if row is None else row["parts"].item
    has = [row is not None and row["values"] is not None for row in rows]
    if masker.n_parts is None:  # ragged: one array per row
        values, errors, data, names = (np.empty(n, dtype=object) for _ in range(4))
        for i, row in enumerate(rows):
            labels = [] if row is None else row["parts"].labels
            empty = np.zeros((len(labels),) + tail)
            values[i] = row["values"] if has[i] else empty
            errors[i] = row["error"] if has[i] else empty
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
            if not has[i]:
                continue
            values[i], errors[i] = row["values"], row["error"]
            data[i] = masker.summary(row["parts"])
            feature_names = row["parts"].labels
        if feature_names is None:  # no row has the modality: labels from the masker's grid
            feature_names = [f"part{k}" for k in range(d)]
        sums = values.sum(axis=1)
    out = shap.Explanation(
        values=values,
        base_values=full_output - sums,
        data=data,
        display_data=display,
        feature_names=feature_names,
        output_names=output_names,
        error_std=errors,
        **_bounds(rows, has, values, errors),
    )
    _annotate(out, rows, has, values, errors)
    return out


def _half_widths(rows, has, errors) -> list:
    """Per row, t x s.e. (0 for exact rows and rows without the modality)."""
    out = []
    for i, row in enumerate(rows):
        sampled = has[i] and row["n_pairs"] is not None
        t = hierarchy.t_quantile(row["n_pairs"]) if sampled else 0.0
        out.append(t * np.asarray(errors[i], dtype=float))
    return out


def _bounds(rows, has, values, errors) -> dict:
    widths = _half_widths(rows, has, errors)
    if values.dtype == object:
        lower, upper = np.empty(len(rows), dtype=object), np.empty(len(rows), dtype=object)
        for i in range(len(rows)):
            lower[i], upper[i] = values[i] - widths[i], values[i] + widths[i]
        return {"lower_bounds": lower, "upper_bounds": upper}
    width = np.stack(widths) if widths else np.zeros_like(values)
    return {"lower_bounds": values - width, "upper_bounds": values + width}


def _annotate(explanation, rows, has, values, errors) -> None:
    """Per-row extras shap's Explanation has no field for (dropped when it is sliced):
    ``resolved`` (the part's interval excludes 0), ``groups`` (the coarse parts),
    ``exact`` and ``encoder_calls``."""
    n = len(rows)
    resolved = np.empty(n, dtype=object) if values.dtype == object else np.zeros(values.shape, bool)
    for i, row in enumerate(rows):
        pairs = row["n_pairs"] if has[i] else None
        resolved[i] = (
            hierarchy.resolved(values[i], errors[i], pairs)
            if has[i]
            else (np.zeros(np.shape(values[i]), dtype=bool))
        )
    explanation.resolved = resolved
    explanation.groups = [row["groups"] if has[i] else None for i, row in enumerate(rows)]
    explanation.exact = np.array([has[i] and row["n_pairs"] is None for i, row in enumerate(rows)])
    explanation.encoder_calls = np.array(
        [row["calls"] if has[i] else 0 for i, row in enumerate(rows)]
    )
