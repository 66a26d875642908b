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


def _subset_values(
    model, emb: Embeddings, modality: str, m: int, encoder, raw, columns, members, output
):
    """{T: v} for each subset T (a bit mask) of the players: the value function with the
    modality's block encoded from the players of T (the other columns set missing)."""
    d = len(members)
    # v(S) with the modality's block encoded from each subset T of its columns (the others
    # set missing): the modality is absent from the rows where no column of T is known.
    by_subset = {}
    for t in range(1 << d):
        frame = raw.copy()
        for c in range(d):
            if not (t >> c) & 1:
                for j in members[c]:
                    frame[columns[j]] = np.nan
        block, present = encoder.encode(frame)
        mask = emb.mask.copy()
        mask[:, m] &= present
        by_subset[t] = value_function(
            model, Embeddings({**emb.blocks, modality: block}, mask), output=output
        )
    return by_subset


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
    model, X: pd.DataFrame, modality: str, *, output=None, max_features: int = 10, groups=None
):
    """Owen values of the columns of one tabular modality, nested under the modality values.

    The modalities are the top-level players (as in :class:`ModalityExplainer` with
    ``removal="missing"``); the columns of ``modality`` are players inside it. A column
    outside a coalition is set to missing (NaN) and the modality's own encoder imputes it
    (median plus missing indicator), so "without CRP" means what the model does when CRP
    was not measured; with no column left, the modality is absent. Owen values are exact
    (2^(M-1) x 2^d evaluations for d columns) and add up, per row, to the modality's
    Shapley value, so a clinician reads "labs 0.12, of which CRP 0.08".

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
        Columns explained together: each group is one player (its columns are kept or set
        missing together) named by its key; a column in no group is a player of its own.

    Returns
    -------
    shap.Explanation with ``values`` of shape (n_samples, d) (binary / regression) or
    (n_samples, d, n_classes) for d players, ``feature_names`` = the players (groups first,
    then the ungrouped columns), ``data`` = the raw column values (without groups; with
    groups, each player's value or the tuple of its columns' values), and ``base_values`` =
    the model's output minus the modality's Shapley value (so
    ``base_values + values.sum(axis=1)`` is the model's output).
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
    emb = value.embeddings
    by_subset = _subset_values(model, emb, modality, m, encoder, raw, columns, members, output)
    phi = _owen_values(by_subset, len(names), m, d)
    fx = value(np.ones(len(names), dtype=bool))
    base = fx - phi.sum(axis=0)
    out_names = [str(k) for k in model.classes_] if is_classifier(model) and phi.ndim == 3 else None
    data = _player_data(raw, members, d) if groups else raw.to_numpy()
    return shap.Explanation(
        values=np.moveaxis(phi, 0, 1),
        base_values=base,
        data=data,
        feature_names=players,
        output_names=out_names,
    )
