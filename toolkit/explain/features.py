"""Drill-down inside a tabular modality: Owen values of its columns under the modality values."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import is_classifier
from sklearn.utils.validation import check_is_fitted

from toolkit.embeddings import Embeddings
from toolkit.explain.shapley import coalition_weights
from toolkit.explain.value import value_function


def _players(columns: list, groups) -> tuple[list[str], list[list[int]]]:
    """(names, column positions) of the players: each group of ``groups`` ({name: [columns]},
    in its order), then each column in no group, in the modality's order."""
    groups = dict(groups or {})
    grouped = [c for cols in groups.values() for c in cols]
    unknown = [c for c in grouped if c not in columns]
    if unknown:
        raise ValueError(
            f"groups name columns {unknown} that the modality does not read ({columns})"
        )
    if len(set(grouped)) != len(grouped):
        twice = next(c for c in grouped if grouped.count(c) > 1)
        raise ValueError(f"groups: column '{twice}' is in two groups; put it in one")
    names = [str(g) for g in groups] + [str(c) for c in columns if c not in grouped]
    members = [[columns.index(c) for c in cols] for cols in groups.values()]
    members += [[j] for j, c in enumerate(columns) if c not in grouped]
    return names, members


def _tabular_encoder(model, modality: str):
    """(modality names, the fitted TabularEncoder of ``modality``)."""
    from toolkit.encoders.tabular import TabularEncoder

    check_is_fitted(model, "fusion_")
    names = list(model.modality_names_)
    if modality not in names:
        raise KeyError(f"unknown modality '{modality}'; available: {names}")
    encoder = model.encoders_.get(modality)
    if not isinstance(encoder, TabularEncoder):
        raise TypeError(
            f"modality '{modality}' is encoded by {type(encoder).__name__}; drill-down needs a TabularEncoder"
        )
    return names, encoder


def _check_n_players(d: int, max_features: int, modality: str, groups) -> None:
    """Refuse more than ``max_features`` players (the cost doubles with each one)."""
    if d > max_features:
        raise ValueError(
            f"modality '{modality}' has {d} columns; raise max_features (cost grows as 2^d) or group them"
            if groups is None
            else f"modality '{modality}' has {d} players (groups and ungrouped columns); raise "
            "max_features (cost grows as 2^d) or group more columns"
        )


#: Most rows fed through the model per subset of players (explained rows x background rows):
#: the background is cut below ``max_background`` to stay within it (never below 10 rows).
MAX_SUBSET_ROWS = 4_000_000


def _background(raw: pd.DataFrame, background, encoder, max_background: int, d: int,
                random_state) -> pd.DataFrame:  # fmt: skip
    """The background rows (the explained rows when None) that have the modality, at most
    ``max_background`` (fewer when 2^d x rows x background would pass MAX_SUBSET_ROWS),
    drawn without replacement with ``random_state``."""
    from sklearn.utils import check_random_state

    frame = raw if background is None else pd.DataFrame(background)
    missing = [c for c in raw.columns if c not in frame.columns]
    if missing:
        raise ValueError(f"background lacks the modality's columns {missing}")
    frame = frame[list(raw.columns)]
    frame = frame.loc[encoder.encode(frame)[1]]
    if frame.empty:
        raise ValueError("no background row has the modality (every column missing)")
    k = min(max_background, max(10, MAX_SUBSET_ROWS // ((1 << d) * max(len(raw), 1))))
    if len(frame) > k:
        rng = check_random_state(random_state)
        frame = frame.iloc[np.sort(rng.choice(len(frame), k, replace=False))]
    return frame.reset_index(drop=True)


class _MeanOverBackground:
    """v(S) of the explained rows, each the mean over the background rows of a value
    function valued on (explained row x background row) pairs."""

    def __init__(self, value, n: int, k: int):
        self.value, self.n, self.k = value, n, k

    def __call__(self, keep):
        out = np.asarray(self.value(keep))
        return out.reshape((self.n, self.k) + out.shape[1:]).mean(axis=1)


def _subset_values(model, emb: Embeddings, modality: str, m: int, encoder, raw, bg, members,
                   output) -> dict:  # fmt: skip
    """{T: v} for each subset T (a bit mask) of the players: the value function with the
    modality's block encoded from the players of T taken from the row and the others from
    each background row (interventional), averaged over the background. A row without the
    modality stays without it."""
    columns = list(raw.columns)
    n, k = len(raw), len(bg)
    own = np.repeat(np.arange(n), k)  # (row, background) pairs, row-major
    other = np.tile(np.arange(k), n)
    base = raw.iloc[own].reset_index(drop=True)
    donor = bg.iloc[other].reset_index(drop=True)
    present_x = emb.mask[own, m]
    blocks = {name: b[own] for name, b in emb.blocks.items()}
    by_subset = {}
    for t in range(1 << len(members)):
        frame = base.copy()
        for c, cols in enumerate(members):
            if not (t >> c) & 1:
                for j in cols:
                    frame[columns[j]] = donor[columns[j]].to_numpy()
        block, present = encoder.encode(frame)
        mask = emb.mask[own].copy()
        mask[:, m] = present_x & present
        pairs = Embeddings({**blocks, modality: block}, mask)
        by_subset[t] = _MeanOverBackground(value_function(model, pairs, output=output), n, k)
    return by_subset


def _presence(value, background_only, n_modalities: int, m: int) -> np.ndarray:
    """The part of modality ``m``'s Shapley value that its presence with background values
    carries: sum over coalitions S of the other modalities of w(S) x (v(S + m, every column
    from the background) - v(S))."""
    others = [j for j in range(n_modalities) if j != m]
    weights = coalition_weights(n_modalities)
    total = None
    for s in range(1 << len(others)):
        keep = np.zeros(n_modalities, dtype=bool)
        for bit, j in enumerate(others):
            keep[j] = bool((s >> bit) & 1)
        without = value(keep)
        keep[m] = True
        term = weights[int(keep.sum()) - 1] * (background_only(keep) - without)
        total = term if total is None else total + term
    return total


def _owen_values(by_subset: dict, n_modalities: int, m: int, d: int) -> np.ndarray:
    """(d, n_samples[, n_classes]) Owen values of the players inside modality ``m``."""
    others = [j for j in range(n_modalities) if j != m]
    w_groups, w_feats = coalition_weights(n_modalities), coalition_weights(d)
    phi = None
    for s in range(1 << len(others)):
        keep = np.ones(n_modalities, dtype=bool)
        for bit, j in enumerate(others):
            keep[j] = bool((s >> bit) & 1)
        size_s = int(keep.sum()) - 1  # other modalities in the coalition
        values = {t: v(keep) for t, v in by_subset.items()}
        if phi is None:
            phi = np.zeros((d,) + values[0].shape)
        for c in range(d):
            for t in range(1 << d):
                if not (t >> c) & 1:
                    size_t = bin(t).count("1")
                    phi[c] += (
                        w_groups[size_s] * w_feats[size_t] * (values[t | (1 << c)] - values[t])
                    )
    return phi


def _player_data(raw: pd.DataFrame, members, d: int) -> np.ndarray:
    """(n_samples, d) object array: each player's value, or the tuple of its columns' values."""
    data = np.empty((len(raw), d), dtype=object)
    for c, cols in enumerate(members):
        for i in range(len(raw)):
            cells = raw.iloc[i, cols].tolist()
            data[i, c] = cells[0] if len(cells) == 1 else tuple(cells)
    return data


def explain_features(
    model, X: pd.DataFrame, modality: str, *, output=None, max_features: int = 10, groups=None,
    background=None, max_background: int = 50, random_state=0,
):  # fmt: skip
    """Owen values of the columns of one tabular modality, nested under the modality values.

    The modalities are the top-level players (as in :class:`ModalityExplainer` with
    ``removal="missing"``); the columns of ``modality`` are players inside it. A column
    outside a coalition takes the values of background rows (other patients; the value is
    the mean over them), so "without CRP" means "with a typical patient's CRP": a normal
    value counts against a diagnosis that high values support, and a column the model does
    not use gets about 0. (Setting the column missing instead would ask what the model does
    when CRP was not measured: its missing-value indicator then moves the output whatever
    the row's value, and a one-hot column such as sex is imputed to its most frequent
    value, crediting only the other.) The modality's Shapley value splits into
    ``presence_values`` (having the modality at all, with background values: v(all columns
    from the background) against the modality absent, weighted over the other modalities'
    coalitions) plus the columns' Owen values, exact (2^(M-1) x 2^d evaluations, each over
    the background rows), so a clinician reads "labs 0.12: 0.02 for having labs, CRP 0.08".

    Parameters
    ----------
    model : fitted MultimodalClassifier or MultimodalRegressor
    X : DataFrame
    modality : str
        A modality encoded by a ``TabularEncoder``.
    output : {"probability", "log_odds"} or None
        As for :class:`ModalityExplainer`.
    max_features : int, default=10
        Refuse modalities with more players (columns, or groups and ungrouped columns; the
        cost doubles with each player).
    groups : dict of {str: list of str}, optional
        Columns explained together: each group is one player (its columns are kept or taken
        from the background together) named by its key; a column in no group is a player of
        its own.
    background : DataFrame, optional
        Rows whose column values stand in for a column outside a coalition (the rows of
        ``X`` when None); rows without the modality are left out.
    max_background : int, default=50
        At most this many background rows (drawn with ``random_state``; fewer when 2^d x
        rows x background would pass ``MAX_SUBSET_ROWS``).
    random_state : int, RandomState or None, default=0

    Returns
    -------
    shap.Explanation with ``values`` of shape (n_samples, d) (binary / regression) or
    (n_samples, d, n_classes) for d players, ``feature_names`` = the players (groups first,
    then the ungrouped columns), ``data`` = the raw column values (without groups; with
    groups, each player's value or the tuple of its columns' values), and ``base_values`` =
    the model's output minus the columns' values (so ``base_values + values.sum(axis=1)``
    is the model's output; the base includes the modality's presence), ``presence_values``
    and ``modality_values`` (presence plus the columns: the modality's Shapley value).
    """
    import shap

    names, encoder = _tabular_encoder(model, modality)
    columns = list(encoder.columns_)
    players, members = _players(columns, groups)
    d = len(players)
    _check_n_players(d, max_features, modality, groups)
    value = value_function(model, X, output=output)
    m = names.index(modality)
    raw = X[columns] if isinstance(X, pd.DataFrame) else pd.DataFrame(X)[columns]
    bg = _background(raw, background, encoder, max_background, d, random_state)
    by_subset = _subset_values(model, value.embeddings, modality, m, encoder, raw, bg, members,
                               output)  # fmt: skip
    phi = _owen_values(by_subset, len(names), m, d)
    presence = _presence(value, by_subset[0], len(names), m)
    fx = value(np.ones(len(names), dtype=bool))
    out_names = [str(k) for k in model.classes_] if is_classifier(model) and phi.ndim == 3 else None
    data = _player_data(raw, members, d) if groups else raw.to_numpy()
    explanation = shap.Explanation(
        values=np.moveaxis(phi, 0, 1),
        base_values=fx - phi.sum(axis=0),
        data=data,
        feature_names=players,
        output_names=out_names,
    )
    explanation.presence_values = presence
    explanation.modality_values = presence + phi.sum(axis=0)
    explanation.n_background = len(bg)
    return explanation
