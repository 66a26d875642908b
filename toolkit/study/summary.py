"""A study's out-of-fold outputs and their summary: every metric with a bootstrap
interval, the best strategy and single modality, paired comparisons, missing-modality
robustness and mean absolute modality contributions (the content of ``metrics.json``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit.explain import contribution_magnitudes
from toolkit.study.config import ConfigError
from toolkit.study.metrics import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    bootstrap_interval,
    classification_metrics,
    paired_difference,
    regression_metrics,
)

#: Metrics where a smaller value is better (the best model minimises them).
LOWER_IS_BETTER = {"mae", "brier"}


@dataclass
class OutOfFold:
    """Every model's out-of-fold output on every row, filled as folds finish.

    ``oof`` and ``baselines`` map a label to (n_samples, n_classes) probabilities or
    (n_samples,) predictions; ``robust`` maps (strategy, removed modality) likewise;
    ``contributions`` maps a strategy to (n_samples, n_modalities[, n_classes]) Shapley
    values (NaN where not computed); ``fold_of`` is each row's test fold.
    """

    y: np.ndarray
    classes: np.ndarray | None
    names: list
    oof: dict
    baselines: dict
    robust: dict
    contributions: dict
    fold_of: np.ndarray

    @classmethod
    def empty(cls, plan, classes) -> OutOfFold:
        """NaN-filled outputs for a :class:`~toolkit.study.orchestration.FoldPlan`."""
        n, names, width = len(plan.y), plan.names, plan.n_classes
        shape = (n,) if width is None else (n, width)
        per_class = (width,) if width is not None and width > 2 else ()
        strategies = list(plan.fusions)
        return cls(
            y=plan.y,
            classes=classes,
            names=names,
            oof={s: np.full(shape, np.nan) for s in strategies},
            baselines={f"{m} only": np.full(shape, np.nan) for m in names if plan.baselines},
            robust={
                (s, m): np.full(shape, np.nan) for s in strategies for m in names if plan.robustness
            },
            contributions={s: np.full((n, len(names)) + per_class, np.nan) for s in strategies},
            fold_of=np.full(n, -1),
        )

    @property
    def classification(self) -> bool:
        return self.classes is not None

    @property
    def models(self) -> dict:
        """Strategies, then single-modality baselines."""
        return {**self.oof, **self.baselines}

    def add(self, result) -> None:
        """Put one fold's :class:`~toolkit.study.orchestration.FoldResult` in place."""
        test = np.asarray(result.test_index)
        self.fold_of[test] = result.fold
        for label in self.oof:
            self.oof[label][test] = result.oof[label]
            self.contributions[label][test] = result.contributions.get(label, np.nan)
        for key in self.robust:
            self.robust[key][test] = result.robust[key]
        for label in self.baselines:
            self.baselines[label][test] = result.baselines[label]


class _Scorer:
    """The metrics of one study: all of them on a prediction, or one as fn(y, pred)."""

    def __init__(self, results: OutOfFold, threshold: float):
        self.y, self.classes, self.threshold = results.y, results.classes, threshold
        self.classification = results.classification

    def all(self, pred) -> dict:
        if self.classification:
            return classification_metrics(self.y, pred, self.classes, self.threshold)
        return regression_metrics(self.y, pred)

    def fn(self, metric: str):
        if self.classification:
            fn, threshold = CLASSIFICATION_METRICS[metric], self.threshold
            return lambda y, p: fn(y, p, threshold)
        return REGRESSION_METRICS[metric]


def primary_metric(config: dict, classes) -> str:
    """``evaluation.primary_metric``, else AUROC (binary), accuracy (multi-class) or MAE."""
    chosen = config["evaluation"].get("primary_metric")
    if chosen:
        return chosen
    if classes is None:
        return "mae"
    return "auroc" if len(classes) == 2 else "accuracy"


def _row(label, kind, metric, value, *, removed="", low=np.nan, high=np.nan) -> dict:
    return {"model": label, "kind": kind, "removed": removed, "metric": metric,
            "value": value, "low": low, "high": high}  # fmt: skip


def _model_metrics(results: OutOfFold, scorer: _Scorer, *, primary, n_boot, rng):
    """{label: {metric: {value, low, high}}} for every model, and the metrics.csv rows."""
    entries, rows = {}, []
    for label, pred in results.models.items():
        values = scorer.all(pred)
        if primary not in values:
            raise ConfigError(
                f"evaluation.primary_metric: '{primary}' is not one of {sorted(values)}"
            )
        kind = "fusion" if label in results.oof else "baseline"
        entry = {}
        for metric, value in values.items():
            low, high = bootstrap_interval(scorer.fn(metric), n_boot, rng, results.y, pred)
            entry[metric] = {"value": value, "low": low, "high": high}
            rows.append(_row(label, kind, metric, value, low=low, high=high))
        entries[label] = entry
    return entries, rows


def _best(labels, entries: dict, primary: str):
    sign = -1 if primary in LOWER_IS_BETTER else 1
    return max(labels, key=lambda s: sign * entries[s][primary]["value"]) if labels else None


def _comparisons(results: OutOfFold, scorer: _Scorer, against, *, primary, n_boot, rng):
    """Each strategy against the best single modality: paired bootstrap of the difference."""
    if not against:
        return {}
    fn, y = scorer.fn(primary), results.y
    return {
        label: {
            "against": against,
            "metric": primary,
            **paired_difference(fn, y, pred, results.baselines[against], n_boot=n_boot, rng=rng),
        }
        for label, pred in results.oof.items()
    }


def _robustness(results: OutOfFold, scorer: _Scorer):
    robustness, rows = {}, []
    for (label, removed), pred in results.robust.items():
        values = scorer.all(pred)
        robustness.setdefault(label, {})[removed] = values
        rows.extend(_row(label, "robustness", m, v, removed=removed) for m, v in values.items())
    return robustness, rows


def _shares(results: OutOfFold) -> dict:
    """{strategy: {modality: mean |contribution|}} for strategies that were explained."""
    shares = {}
    for label, values in results.contributions.items():
        if np.isnan(values).all():
            continue
        mean_abs = contribution_magnitudes(values).mean(axis=0)
        shares[label] = {n: float(v) for n, v in zip(results.names, mean_abs, strict=True)}
    return shares


def summarize(config: dict, results: OutOfFold, *, grouped: bool) -> tuple[dict, list[dict]]:
    """The ``metrics.json`` summary and the ``metrics.csv`` rows of a finished study.

    Bootstrap resamples come from one ``RandomState(config["seed"])``, drawn model by
    model (strategies, then baselines) and then for the paired comparisons.
    """
    ev = config["evaluation"]
    rng = np.random.RandomState(config["seed"])
    scorer = _Scorer(results, ev["threshold"])
    primary = primary_metric(config, results.classes)
    boot = {"primary": primary, "n_boot": ev["bootstrap"], "rng": rng}
    entries, rows = _model_metrics(results, scorer, **boot)
    best = _best(list(results.oof), entries, primary)
    best_baseline = _best(list(results.baselines), entries, primary)
    comparisons = _comparisons(results, scorer, best_baseline, **boot)
    robustness, robust_rows = _robustness(results, scorer)
    shares = _shares(results)
    summary = {
        "task": config["task"],
        "n_samples": int(len(results.y)),
        "folds": ev["cv"],
        "grouped": grouped or None,
        "primary_metric": primary,
        "best_strategy": best,
        "best_single_modality": best_baseline,
        "strategies": {k: entries[k] for k in results.oof},
        "baselines": {k: entries[k] for k in results.baselines},
        "comparisons": comparisons,
        "robustness": robustness,
        "mean_abs_contribution": shares,
        "contribution_ranking": sorted(shares.get(best, {}), key=lambda n: -shares[best][n]),
    }
    return summary, rows + robust_rows
