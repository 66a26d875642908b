"""What :func:`toolkit.diagnostics.group_transfer` returns and how it reads: the named
scores, the :class:`TransferCheck` result, its verdicts and sentences, and
:func:`group_scores` (a model's score on each held-out group)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from toolkit._utils import binary_roc_auc

__all__ = ["CLASSIFICATION_SCORES", "REGRESSION_SCORES", "TransferCheck", "group_scores"]


def accuracy(y, p):
    return float(np.mean(np.argmax(p, axis=1) == y)) if len(y) else float("nan")


def _balanced_accuracy(y, p):
    return float(skm.balanced_accuracy_score(y, np.argmax(p, axis=1))) if len(y) else np.nan


def _roc_auc(y, p):
    if len(np.unique(y)) < 2:
        return float("nan")
    if p.shape[1] == 2:
        return binary_roc_auc(y, p[:, 1])
    present = np.unique(y)
    sub = p[:, present] / np.clip(p[:, present].sum(axis=1, keepdims=True), 1e-12, None)
    return float(skm.roc_auc_score(np.searchsorted(present, y), sub, multi_class="ovr"))


def _log_loss(y, p):
    return float(skm.log_loss(y, p, labels=np.arange(p.shape[1]))) if len(y) else np.nan


def _brier(y, p):
    """Mean squared distance of the probabilities from the one-hot truth, halved with two
    classes (the customary binary Brier score, as scikit-learn's ``scale_by_half="auto"``):
    defined for a single row of a single class."""
    if not len(y):
        return float("nan")
    truth = np.zeros_like(p, dtype=np.float64)
    truth[np.arange(len(y)), np.asarray(y, dtype=int)] = 1.0
    loss = float(np.mean(np.sum((p - truth) ** 2, axis=1)))
    return loss / 2 if p.shape[1] == 2 else loss


def _r2(y, p):
    return float(skm.r2_score(y, p)) if len(y) > 1 and np.std(y) > 0 else float("nan")


def _mae(y, p):
    return float(np.mean(np.abs(y - p))) if len(y) else float("nan")


#: Named scores: name -> (fn(y, output), greater_is_better). Classification scores take
#: class codes and probabilities (n, n_classes); regression scores take predictions.
CLASSIFICATION_SCORES = {
    "accuracy": (accuracy, True),
    "balanced_accuracy": (_balanced_accuracy, True),
    "roc_auc": (_roc_auc, True),
    "log_loss": (_log_loss, False),
    "brier": (_brier, False),
}
REGRESSION_SCORES = {"r2": (_r2, True), "mae": (_mae, False)}


def scorer(scoring, greater_is_better, classification: bool):
    """(name, fn(y, output), greater_is_better) for ``scoring``."""
    table = CLASSIFICATION_SCORES if classification else REGRESSION_SCORES
    if scoring is None:
        scoring = "accuracy" if classification else "r2"
    if callable(scoring):
        return getattr(scoring, "__name__", "score"), scoring, bool(greater_is_better)
    if scoring not in table:
        other = REGRESSION_SCORES if classification else CLASSIFICATION_SCORES
        why = " (a score for the other task)" if scoring in other else ""
        raise ValueError(
            f"scoring={scoring!r} is not one of {sorted(table)}{why}; name one of them or "
            "pass a function fn(y_true, output)"
        )
    fn, greater = table[scoring]
    return scoring, fn, greater


@dataclass(frozen=True)
class TransferCheck:
    """The result of :func:`group_transfer`; print it (or call :meth:`summary`) to read it.

    Attributes
    ----------
    modalities : pandas.DataFrame
        One row per modality (index: modality name). Columns: ``n_rows`` (rows where the
        modality is present), ``within`` (row-level CV score: test rows from groups seen in
        training), ``across`` (group-level CV score: held-out groups), ``across_low`` /
        ``across_high`` (its 95% cluster-bootstrap interval), ``gap`` (how much worse across
        groups than within, in score units; positive = worse), ``gap_low`` / ``gap_high``
        (paired 95% interval), ``group_id`` (row-level CV accuracy of telling the groups
        apart from the modality alone), ``group_id_chance`` (the share of the largest
        group), ``chance`` (the score of the class shares, or the mean, alone), ``signal``
        (how much better than chance within groups, in score units), ``identifies_groups``,
        ``flagged``, ``status`` (``"specific to the groups"``, ``"uncertain"``, ``"little
        signal"`` — not ``min_gap`` better than chance even within groups, so whether it
        transfers cannot be told — or ``"transfers"``) and ``sentence``.
    groups : pandas.DataFrame or None
        The model's score on each held-out group (columns ``n_rows``, ``score``, ``fold``;
        index: group label); None when the model was not checked.
    model : dict or None
        The model's pooled held-out-group score and the distribution over groups (``mean``,
        ``std``, ``worst``, ``worst_group``, ``best``, ``best_group``, ``spread`` = best -
        worst, ``n_groups``, ``label``).
    metric : str
    greater_is_better : bool
    group_name : str
        What a group is, in the sentences (e.g. ``"speakers"``).
    n_splits : dict
        Folds actually used: ``{"within": k, "across": k}``.
    min_gap : float
    n_boot : int
    n_groups : int
        Groups in the data.
    """

    modalities: pd.DataFrame
    groups: pd.DataFrame | None
    model: dict | None
    metric: str
    greater_is_better: bool
    group_name: str
    n_splits: dict
    min_gap: float
    n_boot: int
    n_groups: int = 0

    @property
    def flagged(self) -> list[str]:
        """Names of the modalities whose signal is specific to the groups."""
        return [str(m) for m in self.modalities.index[self.modalities["flagged"]]]

    def sentences(self) -> list[str]:
        """One plain-language sentence per modality, then one on the model."""
        out = list(self.modalities["sentence"])
        if self.model is not None:
            out.append(_model_sentence(self.model, self.group_name, self.metric))
        return out

    def summary(self) -> str:
        """A header line (metric, folds, rule) and :meth:`sentences`."""
        head = (
            f"Transfer across {self.group_name} ({self.metric}; within: "
            f"{self.n_splits['within']}-fold CV over rows, across: {self.n_splits['across']}-fold "
            f"CV holding out whole {self.group_name}, {self.n_groups} in all). Flagged when the "
            f"drop is at least {self.min_gap:g} and its 95% interval is above 0."
        )
        return "\n".join([head, *(f"- {s}" for s in self.sentences())])

    def __repr__(self) -> str:
        columns = ["n_rows", "within", "across", "gap", "gap_low", "gap_high", "group_id"]
        shown = self.modalities[[*columns, "flagged"]].round(3)
        with pd.option_context("display.width", 120, "display.max_columns", None):
            return f"{self.summary()}\n\n{shown}"

    def _repr_html_(self) -> str:
        import html

        items = "".join(f"<li>{html.escape(s)}</li>" for s in self.sentences())
        table = self.modalities.drop(columns="sentence").to_html(float_format="%.3f")
        head = html.escape(self.summary().splitlines()[0])
        return f"<p>{head}</p><ul>{items}</ul>{table}"

    def to_dict(self) -> dict:
        """JSON-ready: plain floats (None for NaN), lists and strings."""
        rows = [
            {"modality": str(name), **{k: plain(v) for k, v in row.items()}}
            for name, row in self.modalities.to_dict(orient="index").items()
        ]
        groups = None
        if self.groups is not None:
            groups = [
                {"group": plain(g), **{k: plain(v) for k, v in row.items()}}
                for g, row in self.groups.to_dict(orient="index").items()
            ]
        return {
            "metric": self.metric,
            "greater_is_better": self.greater_is_better,
            "group_name": self.group_name,
            "n_groups": self.n_groups,
            "n_splits": dict(self.n_splits),
            "min_gap": self.min_gap,
            "n_boot": self.n_boot,
            "rule": _RULE,
            "modalities": rows,
            "flagged": self.flagged,
            "model": None if self.model is None else {k: plain(v) for k, v in self.model.items()},
            "groups": groups,
            "sentences": self.sentences(),
        }


_RULE = (
    "flagged when the modality's score across held-out groups is lower than within seen "
    "groups by at least min_gap and the paired 95% cluster-bootstrap interval of the drop "
    "lies above 0"
)


def plain(v):
    """A JSON-ready Python value: NaN -> None, numpy scalars -> Python scalars."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def _model_sentence(model: dict, group_name: str, metric: str) -> str:
    """The sentence on the model's held-out groups; it names the per-group score when that
    is not the check's (e.g. Brier where AUROC is undefined within a group)."""
    if model["n_groups"] == 0 or not np.isfinite(model["worst"]):
        return (
            f"{model['label']}: {model.get('metric', metric)} could not be computed on any single "
            f"held-out group (each holds too few rows, or one class only)."
        )
    named = ""
    if model.get("metric", metric) != metric:
        better = "higher" if model.get("greater_is_better", True) else "lower"
        named = f" ({model['metric']} per group, {better} is better)"
    return (
        f"{model['label']} on held-out {group_name}{named}: {model['pooled']:.2f} overall; per "
        f"group from {model['worst']:.2f} (worst: {model['worst_group']}) to "
        f"{model['best']:.2f} ({model['best_group']}), mean {model['mean']:.2f}, s.d. "
        f"{model['std']:.2f}, spread {model['spread']:.2f} over {model['n_groups']} {group_name}."
    )


def group_scores(y, output, groups, *, scoring="accuracy", folds=None, label="model"):
    """A model's score on each held-out group and their distribution.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class codes (classification) or targets.
    output : ndarray of shape (n_samples, n_classes) or (n_samples,)
        Held-out outputs (probabilities or predictions), e.g. out-of-fold over groups.
    groups : array-like of shape (n_samples,)
    scoring : str, or (name, fn, greater_is_better), default="accuracy"
        A named score of :func:`group_transfer`, or a triple for any other.
    folds : list of (train, test), optional
        The folds that produced ``output``: each group's test fold is recorded.
    label : str, default="model"

    Returns
    -------
    (pandas.DataFrame, dict)
        Per group: ``n_rows``, ``score`` (NaN where the score is undefined on that group,
        e.g. AUROC of a group with one class), ``fold``. The dict: ``pooled`` (all rows),
        ``mean``, ``std``, ``worst`` / ``worst_group``, ``best`` / ``best_group``,
        ``spread``, ``n_groups`` (scored groups), ``label``, ``metric``,
        ``greater_is_better``.

    Examples
    --------
    >>> import numpy as np
    >>> from toolkit.diagnostics import group_scores
    >>> proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    >>> table, summary = group_scores([0, 1, 0, 1], proba, ["a", "a", "b", "b"])
    >>> table["score"].tolist(), summary["worst_group"], summary["pooled"]
    ([1.0, 0.0], 'b', 0.5)
    """
    if isinstance(scoring, tuple):
        metric, fn, greater = scoring
    else:
        metric, fn, greater = scorer(scoring, True, np.ndim(output) == 2)
    y, output, groups = np.asarray(y), np.asarray(output), np.asarray(groups)
    fold_of = np.full(len(y), -1)
    for k, (_, test) in enumerate(folds or []):
        fold_of[test] = k
    records = {}
    for g in pd.unique(pd.Series(groups)):
        rows = np.flatnonzero(groups == g)
        records[plain(g)] = {
            "n_rows": len(rows),
            "score": fn(y[rows], output[rows]),
            "fold": int(fold_of[rows[0]]) if folds else -1,
        }
    table = pd.DataFrame.from_dict(records, orient="index").sort_index()
    table.index.name = "group"
    scored = table["score"].dropna()
    order = scored.sort_values(ascending=greater)
    summary = {
        "label": label,
        "metric": metric,
        "greater_is_better": bool(greater),
        "pooled": fn(y, output),
        "mean": float(scored.mean()) if len(scored) else float("nan"),
        "std": float(scored.std(ddof=1)) if len(scored) > 1 else float("nan"),
        "worst": float(order.iloc[0]) if len(order) else float("nan"),
        "worst_group": plain(order.index[0]) if len(order) else None,
        "best": float(order.iloc[-1]) if len(order) else float("nan"),
        "best_group": plain(order.index[-1]) if len(order) else None,
        "n_groups": len(scored),
    }
    summary["spread"] = abs(summary["best"] - summary["worst"])
    return table, summary


def add_verdicts(table: pd.DataFrame, min_gap: float, group_name: str) -> pd.DataFrame:
    """``identifies_groups``, ``flagged``, ``status`` and ``sentence`` of each modality."""
    table = table.copy()
    closes = (table["group_id"] - table["group_id_chance"]) / (1 - table["group_id_chance"])
    table["identifies_groups"] = (closes >= 0.5).fillna(False).astype(bool)
    material = table["gap"] >= min_gap
    table["flagged"] = (material & (table["gap_low"] > 0)).fillna(False).astype(bool)
    weak = (table["signal"] < min_gap).fillna(False)
    table["status"] = np.select(
        [table["flagged"], material.fillna(False), weak],
        ["specific to the groups", "uncertain", "little signal"],
        "transfers",
    )
    table["sentence"] = [
        _modality_sentence(str(name), row, group_name) for name, row in table.iterrows()
    ]
    return table


def _modality_sentence(name: str, row, gn: str) -> str:
    if not (np.isfinite(row["within"]) and np.isfinite(row["across"])):
        return f"{name}: could not be scored within and across {gn}."
    base = f"{name}: {row['within']:.2f} within {gn}, {row['across']:.2f} across {gn}"
    interval = f"drop {row['gap']:+.2f}, 95% interval "
    interval += (
        f"[{row['gap_low']:+.2f}, {row['gap_high']:+.2f}]"
        if np.isfinite(row["gap_low"])
        else "not available"
    )
    if row["flagged"] and row["identifies_groups"]:
        return (
            f"{base} — it identifies {gn} (tells them apart with accuracy "
            f"{row['group_id']:.2f}, chance {row['group_id_chance']:.2f}): its signal is "
            f"specific to the {gn} rather than the label ({interval})."
        )
    if row["flagged"]:
        return f"{base} — its signal does not carry over to new {gn} ({interval})."
    if row["status"] == "uncertain":
        return (
            f"{base} — a drop these {gn} are too few or too varied to confirm ({interval}); "
            f"more {gn} would tell."
        )
    if row["status"] == "little signal":
        return (
            f"{base} — it carries little signal about the label even within {gn} (chance "
            f"{row['chance']:.2f}), so whether it transfers cannot be told."
        )
    return f"{base} — it transfers ({interval})."
