"""The study report's lab drill-down: exact Owen values of the columns of every tabular
modality (labs, vitals, an admission record), from :func:`toolkit.explain.explain_features`.

The saved model when it is a table alone (``"labs only"``), else the explained strategy, is
refitted on the last fold's training rows (as the fold fitted it, like the part drill-down of
:mod:`toolkit.study.drilldown`) and every test row of that fold is explained (at most :data:`MAX_LAB_ROWS`): the columns are players nested inside their
modality (the other modalities are the top-level players; a column left out takes other
test rows' values, averaged over them), so a row's presence value (having the table at all,
with other rows' values) plus its column values add up to the modality's Shapley value with
missing-modality removal. Columns a config groups
(``modalities[i].column_groups``) are one player. The summary gives, per player, the mean
|value|, the mean signed value and the share of rows in which it ranks first, and the top
players of the rows the drill-down shows.
"""

from __future__ import annotations

import numpy as np

from toolkit.study.orchestration import LastFoldModels

#: Test rows of the last fold explained (the first ones, in study order).
MAX_LAB_ROWS = 200
#: Most players (columns or groups) explained exactly (the cost doubles with each one).
MAX_LAB_PLAYERS = 10
#: Players listed per shown row.
TOP = 5


def tabular_modalities(modalities) -> list[str]:
    """The modalities whose parts are their columns (a ``TabularEncoder``)."""
    return [
        name for name, encoder, _ in modalities if getattr(encoder, "parts_are_features", False)
    ]


def _class_values(values: np.ndarray, codes) -> np.ndarray:
    """(n, d) values of the explained class of each row (multi-class: ``codes``)."""
    if values.ndim == 2:
        return values
    return values[np.arange(len(values)), :, np.asarray(codes)]


def lab_summary(explanation, codes=None) -> dict:
    """Per-player statistics of one tabular modality's Owen values (``explanation`` from
    :func:`~toolkit.explain.explain_features`; ``codes``: the class explained per row, for
    multi-class): mean |value|, mean value, share of the mean |value| and the share of rows
    whose largest |value| is the player's, with the players ranked by mean |value|."""
    values = _class_values(np.asarray(explanation.values, dtype=float), codes)
    players = [str(p) for p in explanation.feature_names]
    magnitude = np.abs(values)
    mean_abs = magnitude.mean(axis=0)
    total = float(mean_abs.sum()) or 1.0
    first = np.bincount(magnitude.argmax(axis=1), minlength=len(players)) / len(values)
    ranking = [players[j] for j in np.argsort(-mean_abs, kind="stable")]
    return {
        "players": players,
        "n_rows": int(len(values)),
        "mean_abs": {p: float(v) for p, v in zip(players, mean_abs, strict=True)},
        "mean": {p: float(v) for p, v in zip(players, values.mean(axis=0), strict=True)},
        "share": {p: float(v / total) for p, v in zip(players, mean_abs, strict=True)},
        "ranked_first": {p: float(v) for p, v in zip(players, first, strict=True)},
        "ranking": ranking,
        "presence_mean": _presence_mean(explanation, codes),
    }


def _presence_mean(explanation, codes) -> float | None:
    """The mean over rows of the modality's presence value (None when not given)."""
    presence = getattr(explanation, "presence_values", None)
    if presence is None:
        return None
    presence = np.asarray(presence, dtype=float)
    if presence.ndim == 2:
        presence = presence[np.arange(len(presence)), np.asarray(codes)]
    return float(presence.mean())


def _row_records(explanation, name: str, positions, rows, codes) -> list[dict]:
    """The top players of the shown rows (``positions`` into the explained rows)."""
    values = _class_values(np.asarray(explanation.values, dtype=float), codes)
    players = [str(p) for p in explanation.feature_names]
    presence = getattr(explanation, "presence_values", None)
    if presence is not None:
        presence = np.asarray(presence, dtype=float)
        if presence.ndim == 2:
            presence = presence[np.arange(len(presence)), np.asarray(codes)]
    out = []
    for pos, row in zip(positions, rows, strict=True):
        order = np.argsort(-np.abs(values[pos]), kind="stable")[:TOP]
        had = 0.0 if presence is None else float(presence[pos])
        out.append({
            "row": int(row), "modality": name,
            "modality_value": had + float(values[pos].sum()), "presence_value": had,
            "top_parts": [{"part": players[j], "value": float(values[pos, j])} for j in order],
        })  # fmt: skip
    return out


def run_labs(plan, label: str, results, splits, *, column_groups: dict, shown_rows=(),
             cache_dir=None, models=None) -> dict:  # fmt: skip
    """The lab drill-down of model ``label`` (a strategy, or a single-modality baseline
    ``"<table> only"``) on the last fold's test rows: ``{}`` when the model has no tabular
    modality, else the JSON-ready summary (``model``, ``fold``, ``n_rows``, ``modalities``
    {name: :func:`lab_summary` plus ``groups``}, ``rows`` (the top players of
    ``shown_rows``, study positions), ``skipped`` {name: why})."""
    from toolkit.explain import explain_features

    fold = len(splits) - 1
    test = np.asarray(splits[fold][1])
    names = tabular_modalities(plan.modalities)
    if label not in plan.fusions:
        names = [n for n in names if f"{n} only" == label]
    if not names:
        return {}
    explained = np.sort(test)[:MAX_LAB_ROWS]
    codes = None
    if plan.classification and plan.n_classes > 2:  # the predicted class of each row
        codes = results.models[label][explained].argmax(axis=1)
    models = models or LastFoldModels(plan, results, splits, cache_dir)
    model = models(label)
    frame = plan.frame.iloc[explained]
    shown = [r for r in shown_rows if r in set(explained.tolist())]
    positions = [int(np.flatnonzero(explained == r)[0]) for r in shown]
    out = {"model": label, "fold": fold, "n_rows": int(len(explained)), "modalities": {},
           "rows": [], "skipped": {}}  # fmt: skip
    for name in names:
        groups = column_groups.get(name)
        try:
            explanation = explain_features(
                model, frame, name, max_features=MAX_LAB_PLAYERS, groups=groups
            )
        except ValueError as exc:  # too many players
            out["skipped"][name] = f"{exc} (modalities[].column_groups in the config)"
            continue
        out["modalities"][name] = {**lab_summary(explanation, codes), "groups": groups or {}}
        out["rows"].extend(_row_records(explanation, name, positions, shown, codes))
    return out
