"""A study's out-of-fold outputs and their summary (the content of ``metrics.json``):
every metric with a cluster-bootstrap interval, the model chosen by the declared rule and
the honest headline (chosen model against the best single modality), paired comparisons,
missing-modality robustness with intervals, calibration tables with bin counts, conformal
coverage per availability pattern, prevalence per fold, missingness per modality and mean
absolute modality contributions."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from toolkit.conformal import availability_patterns, coverage_table
from toolkit.explain import contribution_magnitudes
from toolkit.study.config import ConfigError, StudyConfig
from toolkit.study.metrics import (
    METRICS,
    bootstrap_interval,
    bootstrap_resamples,
    calibration_table,
    classification_metrics,
    default_primary,
    paired_difference,
    regression_metrics,
)
from toolkit.study.quick import QUICK_NOTE


@dataclass
class OutOfFold:
    """Every model's out-of-fold output on every row, filled as folds finish.

    ``oof`` and ``baselines`` map a label to (n_samples, n_classes) probabilities or
    (n_samples,) predictions; ``robust`` maps (strategy, removed modality) likewise;
    ``contributions`` maps a strategy to (n_samples, n_modalities[, n_classes]) Shapley
    values (NaN where not computed); ``conformal`` maps a strategy to its prediction sets
    (n_samples, n_classes) or intervals (n_samples, 2); ``fold_of`` is each row's test
    fold, ``mask`` each row's modality availability, ``groups`` its group (or None).
    """

    y: np.ndarray
    classes: np.ndarray | None
    names: list
    oof: dict
    baselines: dict
    robust: dict
    contributions: dict
    fold_of: np.ndarray
    mask: np.ndarray | None = None
    groups: np.ndarray | None = None
    conformal: dict | None = None
    interactions: dict | None = None  # strategy -> (n, M, M[, K]) interaction values

    @classmethod
    def empty(cls, plan, classes) -> OutOfFold:
        """NaN-filled outputs for a :class:`~toolkit.study.orchestration.FoldPlan`."""
        n, names, width = len(plan.y), plan.names, plan.n_classes
        shape = (n,) if width is None else (n, width)
        per_class = (width,) if width is not None and width > 2 else ()
        strategies = list(plan.fusions)
        conformal_shape = (n, 2) if width is None else (n, width)
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
            mask=np.ones((n, len(names)), dtype=bool),
            groups=plan.groups,
            conformal={s: np.full(conformal_shape, np.nan) for s in strategies}
            if plan.conformal
            else {},
            interactions={
                s: np.full((n, len(names), len(names)) + per_class, np.nan) for s in strategies
            }
            if plan.explain and plan.interactions
            else {},
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
        if result.mask is not None and self.mask is not None:
            self.mask[test] = result.mask
        for label in self.oof:
            self.oof[label][test] = result.oof[label]
            self.contributions[label][test] = result.contributions.get(label, np.nan)
            if label in (self.interactions or {}):
                self.interactions[label][test] = result.interactions.get(label, np.nan)
        for key in self.robust:
            self.robust[key][test] = result.robust[key]
        for label in self.baselines:
            self.baselines[label][test] = result.baselines[label]
        for label in self.conformal or {}:
            self.conformal[label][test] = result.conformal[label]


class _Scorer:
    """The metrics of one study: all of them on a prediction, or one as fn(y, pred)."""

    def __init__(self, results: OutOfFold, threshold: float, mosi: bool = False):
        self.y, self.classes, self.threshold = results.y, results.classes, threshold
        self.classification, self.mosi = results.classification, mosi

    def all(self, pred) -> dict:
        if self.classification:
            return classification_metrics(self.y, pred, self.classes, self.threshold)
        return regression_metrics(self.y, pred, mosi=self.mosi)

    def fn(self, metric: str):
        """fn(y, prediction) of ``metric`` (at the study's threshold)."""
        fn, threshold = METRICS[metric], self.threshold
        return lambda y, p: fn(y, p, threshold)


def primary_metric(config: StudyConfig, classes) -> str:
    """``evaluation.primary_metric``, else the registry's default for the study's kind
    (AUROC for binary, accuracy for multi-class classification, MAE for regression)."""
    chosen = config.evaluation.primary_metric
    if chosen:
        return chosen
    return default_primary(config.task, None if classes is None else len(classes))


def chance_levels(results: OutOfFold, metrics) -> dict[str, float]:
    """{metric: the score of a model that ignores its inputs, on this study's targets},
    for the ``metrics`` whose registry entry defines one."""
    levels = {m: METRICS[m].chance_level(results.y) for m in metrics}
    return {m: float(v) for m, v in levels.items() if v is not None}


def _row(label, kind, metric, value, *, removed="", low=np.nan, high=np.nan) -> dict:
    return {"model": label, "kind": kind, "removed": removed, "metric": metric,
            "value": value, "low": low, "high": high}  # fmt: skip


def _model_metrics(results: OutOfFold, scorer: _Scorer, *, primary, resamples):
    """{label: {metric: {value, low, high}}} for every model, and the metrics.csv rows.
    Every model's intervals use the same resamples (``resamples()`` yields them anew)."""
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
            low, high = bootstrap_interval(
                scorer.fn(metric), 0, None, results.y, pred, resamples=resamples()
            )
            entry[metric] = {"value": value, "low": low, "high": high}
            rows.append(_row(label, kind, metric, value, low=low, high=high))
        entries[label] = entry
    return entries, rows


def _best(labels, entries: dict, primary: str):
    sign = METRICS[primary].sign
    return max(labels, key=lambda s: sign * entries[s][primary]["value"]) if labels else None


def _compare(results: OutOfFold, scorer: _Scorer, a: str, b: str, *, primary, resamples) -> dict:
    """Paired bootstrap of primary(a) - primary(b) on the same resamples."""
    models = results.models
    diff = paired_difference(
        scorer.fn(primary), results.y, models[a], models[b], n_boot=0, resamples=resamples()
    )
    return {"model": a, "against": b, "metric": primary, **diff}


def _comparisons(results: OutOfFold, scorer: _Scorer, against, **boot):
    """Each strategy against the best single modality: paired bootstrap of the difference."""
    if not against:
        return {}
    return {label: _compare(results, scorer, label, against, **boot) for label in results.oof}


def _robustness(results: OutOfFold, scorer: _Scorer, *, primary, resamples):
    """Every metric with each modality removed, and for the primary metric its interval and
    the paired drop from the full model (full - without) with its interval."""
    robustness, intervals, rows = {}, {}, []
    fn = scorer.fn(primary)
    for (label, removed), pred in results.robust.items():
        values = scorer.all(pred)
        robustness.setdefault(label, {})[removed] = values
        low, high = bootstrap_interval(fn, 0, None, results.y, pred, resamples=resamples())
        drop = paired_difference(
            fn, results.y, results.oof[label], pred, n_boot=0, resamples=resamples()
        )
        intervals.setdefault(label, {})[removed] = {
            "metric": primary, "value": values[primary], "low": low, "high": high,
            "drop": drop["difference"], "drop_low": drop["low"], "drop_high": drop["high"],
        }  # fmt: skip
        rows.extend(_row(label, "robustness", m, v, removed=removed) for m, v in values.items())
        rows[-len(values) + list(values).index(primary)].update(low=low, high=high)
    return robustness, intervals, rows


def _shares(results: OutOfFold) -> dict:
    """{strategy: {modality: mean |contribution|}} for strategies that were explained."""
    shares = {}
    for label, values in results.contributions.items():
        if np.isnan(values).all():
            continue
        mean_abs = contribution_magnitudes(values).mean(axis=0)
        shares[label] = {n: float(v) for n, v in zip(results.names, mean_abs, strict=True)}
    return shares


def _synergy(values: np.ndarray, a: int, b: int) -> float | None:
    """Share of rows (with a nonzero interaction) whose pair interaction I_ab has the sign
    of the two main effects' sum (synergy: together they push further the way they push
    alone); the rest is redundancy. None for multi-class (no single direction)."""
    if values.ndim != 3:
        return None
    pair = values[:, a, b] + values[:, b, a]
    mains = values[:, a, a] + values[:, b, b]
    keep = np.isfinite(pair) & np.isfinite(mains) & (pair != 0) & (mains != 0)
    if not keep.any():
        return None
    return float(np.mean(np.sign(pair[keep]) == np.sign(mains[keep])))


def _interactions(results: OutOfFold, label: str | None) -> dict:
    """The explained model's out-of-fold pairwise interactions: mean |main effect| per
    modality, and per pair the mean |Shapley interaction index| (|Phi_ab + Phi_ba|, summed
    over classes for multi-class) with its share of all the mass (mains and pairs)."""
    values = (results.interactions or {}).get(label)
    if values is None or np.isnan(values).all():
        return {}
    names, M = results.names, len(results.names)
    magnitude = np.abs(values + np.swapaxes(values, 1, 2))  # |I_ab| off the diagonal
    if magnitude.ndim == 4:
        magnitude = magnitude.sum(axis=3)
    mean = np.nanmean(magnitude, axis=0)
    mains = np.diag(mean) / 2  # the diagonal above was |2 Phi_aa|
    pairs = [(a, b) for a in range(M) for b in range(a + 1, M)]
    total = float(mains.sum() + sum(mean[a, b] for a, b in pairs)) or 1.0
    return {
        "model": label,
        "main_effects": {
            names[a]: {"mean_abs": float(mains[a]), "share": float(mains[a] / total)}
            for a in range(M)
        },
        "pairs": [
            {"modalities": [names[a], names[b]], "mean_abs_interaction": float(mean[a, b]),
             "share": float(mean[a, b] / total), "synergy": _synergy(values, a, b)}
            for a, b in sorted(pairs, key=lambda p: -mean[p])
        ],
        "interaction_share": float(sum(mean[a, b] for a, b in pairs) / total),
    }  # fmt: skip


def _contribution_intervals(
    config: StudyConfig, results: OutOfFold, label: str | None
) -> list[dict]:
    """Intervals of the explained model's mean |Shapley value| and share per modality: a
    bootstrap of its out-of-fold rows (of groups when the study has groups: the same unit
    and resample count as the metrics' intervals), and a t interval across the folds' refits."""
    from toolkit.explain import contribution_intervals, refit_intervals

    values = results.contributions.get(label)
    if not config.output.intervals or values is None or np.isnan(values).all():
        return []
    import shap

    def explanation(rows):
        return shap.Explanation(values[rows], feature_names=results.names)

    tables = []
    n_boot = config.evaluation.bootstrap
    if n_boot >= 2:
        tables.append(contribution_intervals(
            explanation(slice(None)), groups=results.groups, n_resamples=n_boot,
            random_state=config.seed,
        ))  # fmt: skip
    folds = [k for k in np.unique(results.fold_of) if k >= 0]
    if len(folds) >= 2:
        tables.append(refit_intervals([explanation(results.fold_of == k) for k in folds]))
    records = []
    for table in tables:
        keep = [c for c in table.columns if not c.startswith("fit_")]
        for row in table[keep].to_dict("records"):
            records.append({k: v if isinstance(v, str) else (int(v) if k == "n" else float(v))
                            for k, v in row.items()})  # fmt: skip
    return records


def _calibration(results: OutOfFold, labels) -> dict:
    """Calibration tables (quantile bins with counts) of binary models ``labels``."""
    if not results.classification or len(results.classes) != 2:
        return {}
    models = results.models
    return {label: calibration_table(results.y, models[label][:, 1]) for label in labels}


def _conformal(config: StudyConfig, results: OutOfFold) -> dict:
    """Coverage per availability pattern of each strategy's conformal sets / intervals."""
    if not results.conformal:
        return {}
    patterns = availability_patterns(results.mask, results.names)
    out = {}
    for label, pred in results.conformal.items():
        if results.classification:
            covered = pred[np.arange(len(results.y)), results.y].astype(bool)
            size, column = pred.sum(axis=1), "mean_size"
            trivial = size >= pred.shape[1]
        else:
            covered = (pred[:, 0] <= results.y) & (results.y <= pred[:, 1])
            size, column = pred[:, 1] - pred[:, 0], "mean_width"
            trivial = ~np.isfinite(size)
        table = coverage_table(patterns, covered, size, column, uninformative=trivial)
        out[label] = {
            pattern: {"n": int(row["n"]), "coverage": float(row["coverage"]),
                      column: float(row[column]),
                      "uninformative": float(row["uninformative"])}
            for pattern, row in table.iterrows()
        }  # fmt: skip
    return {"confidence": config.evaluation.conformal.confidence, "strategies": out}


def _folds(results: OutOfFold) -> list[dict]:
    """Rows, groups and class counts of each test fold (prevalence per fold)."""
    folds = []
    for k in np.unique(results.fold_of):
        rows = results.fold_of == k
        fold = {"fold": int(k), "n": int(rows.sum())}
        if results.groups is not None:
            fold["groups"] = int(len(np.unique(results.groups[rows])))
        if results.classification:
            counts = np.bincount(results.y[rows], minlength=len(results.classes))
            fold["class_counts"] = {
                str(c): int(n) for c, n in zip(results.classes.tolist(), counts, strict=True)
            }
            fold["prevalence"] = float(counts[-1] / rows.sum()) if len(counts) == 2 else None
        else:
            fold["target_mean"] = float(np.mean(results.y[rows]))
        folds.append(fold)
    return folds


def _prevalence(results: OutOfFold) -> dict | None:
    """The whole study's class counts and shares (binary: the positive class's share as
    ``prevalence``); None for regression."""
    if not results.classification:
        return None
    counts = np.bincount(results.y, minlength=len(results.classes))
    n = int(counts.sum())
    out = {
        "n": n,
        "class_counts": {str(c): int(k) for c, k in zip(results.classes.tolist(), counts, strict=True)},
        "class_shares": {str(c): float(k / n) for c, k in zip(results.classes.tolist(), counts, strict=True)},
    }  # fmt: skip
    if len(counts) == 2:
        out.update(positive_class=str(results.classes[1]), prevalence=float(counts[1] / n))
    return out


def _missingness(results: OutOfFold) -> dict:
    """Share of rows without each modality, and the rows of each availability pattern."""
    mask = results.mask
    patterns = availability_patterns(mask, results.names)
    labels, counts = np.unique(patterns, return_counts=True)
    return {
        "missing_share": {n: float(1 - mask[:, j].mean()) for j, n in enumerate(results.names)},
        "patterns": {str(p): int(c) for p, c in zip(labels, counts, strict=True)},
    }


def cell_missingness(frame, modalities) -> dict:
    """Missing values *inside* modalities of several columns (e.g. a lab missing from a
    table whose other columns are present): ``{modality: {column: share of rows}}``, only
    columns with a missing value. A single-column modality's missing cell is the modality's
    absence, which :func:`_missingness` counts."""
    import pandas as pd

    out = {}
    for name, _, cols in modalities:
        if not isinstance(cols, list | tuple) or len(cols) < 2:
            continue
        shares = pd.isna(frame[list(cols)]).mean(axis=0)
        shares = {str(c): float(v) for c, v in shares.items() if v > 0}
        if shares:
            out[str(name)] = shares
    return out


def choose_model(
    config: StudyConfig, entries: dict, results: OutOfFold, primary: str, comparisons=None
) -> dict:
    """The saved model under ``output.model_rule``: its label, kind, the rule, the number
    of candidates the rule chose among and why.

    ``prefer_simpler``: the best single-modality model (fewer modalities), unless a fusion
    strategy's paired gain over it (``comparisons``, :func:`_comparisons`) has a 95% interval
    entirely on the better side of 0; then the best such strategy. Without an interval
    (``evaluation.bootstrap: 0``) no gain is shown, so the single modality is kept; without
    baselines the best strategy is the only kind of candidate.
    ``best_mean_primary``: the best out-of-fold primary metric among every fusion strategy
    *and* every single-modality model. ``fixed:<strategy>``: that strategy. ``auto``:
    ``fusion="auto"``, which chooses on the training rows when the model is refitted.
    """
    rule = config.output.model_rule
    candidates = len(results.models)
    if rule == "auto":
        label = "auto" if "auto" in results.oof else None
        return {"rule": rule, "model": label, "kind": "auto", "candidates": 1,
                "reason": "fusion='auto' chooses by inner cross-validation in each training set"}  # fmt: skip
    if rule.startswith("fixed:"):
        label, reason, candidates = rule.split(":", 1)[1], "named in the config", 1
    elif rule == "prefer_simpler":
        label, reason = _prefer_simpler(results, entries, primary, comparisons or {})
    else:
        label = _best(list(results.models), entries, primary)
        reason = f"the best out-of-fold {primary} of {candidates} models"
    kind = "fusion" if label in results.oof else "single modality"
    return {"rule": rule, "model": label, "kind": kind, "candidates": candidates, "reason": reason}


def _prefer_simpler(results: OutOfFold, entries: dict, primary: str, comparisons: dict):
    """(label, reason) of the ``prefer_simpler`` rule."""
    single = _best(list(results.baselines), entries, primary)
    if single is None:
        best = _best(list(results.oof), entries, primary)
        return best, "no single-modality models were fitted (evaluation.baselines: false)"
    sign = METRICS[primary].sign
    shown = []
    for label, c in comparisons.items():
        low, high = sorted((sign * c["low"], sign * c["high"]))
        if np.isfinite(low) and low > 0:
            shown.append(label)
    if not shown:
        return single, (
            f"no fusion's gain over {single} has a 95% interval above 0, so the simpler "
            "model is kept"
        )
    best = _best(shown, entries, primary)
    return best, f"its gain over {single} has a 95% interval above 0"


def _headline(results: OutOfFold, scorer: _Scorer, chosen: dict, entries: dict, **boot) -> dict:
    """The chosen model (or, when it is a single modality, the best fusion) against the best
    single modality, with the paired interval and a verdict on whether fusion helps."""
    primary = boot["primary"]
    single = _best(list(results.baselines), entries, primary)
    own = chosen["kind"] in ("fusion", "auto") and chosen["model"] in results.oof
    # the chosen model's own out-of-fold results (auto's, when the rule is auto and auto was
    # evaluated), else the best fusion
    fusion = chosen["model"] if own else _best(list(results.oof), entries, primary)
    if single is None or fusion is None:
        return {"chosen": chosen["model"], "against": None, "verdict": "no comparison"}
    comparison = _compare(results, scorer, fusion, single, **boot)
    sign = METRICS[primary].sign
    low, high = sorted((sign * comparison["low"], sign * comparison["high"]))
    if not np.isfinite(low):
        gain = sign * comparison["difference"]
        verdict = "no interval" if gain > 0 else "does not help"
    elif low > 0:
        verdict = "helps"
    elif high < 0:
        verdict = "worse"
    else:
        verdict = "does not help"
    return {"chosen": chosen["model"], "fusion": fusion, "verdict": verdict, **comparison}


def summarize(config: StudyConfig, results: OutOfFold, *, grouped: bool) -> tuple[dict, list[dict]]:
    """The ``metrics.json`` summary and the ``metrics.csv`` rows of a finished study.

    Bootstrap: ``evaluation.bootstrap`` resamples from ``RandomState(config.seed)``, of
    groups when the study has groups (all rows of each drawn group; a cluster bootstrap),
    else of rows; the *same* resamples serve every model, comparison and robustness row.
    """
    ev = config.evaluation
    scorer = _Scorer(results, ev.threshold, mosi=ev.mosi_metrics)
    primary = primary_metric(config, results.classes)
    n_boot = ev.bootstrap
    resamples = partial(bootstrap_resamples, len(results.y), n_boot, config.seed, results.groups)
    boot = {"primary": primary, "resamples": resamples}
    entries, rows = _model_metrics(results, scorer, **boot)
    best = _best(list(results.oof), entries, primary)
    best_baseline = _best(list(results.baselines), entries, primary)
    comparisons = _comparisons(results, scorer, best_baseline, **boot)
    chosen = choose_model(config, entries, results, primary, comparisons)
    robustness, robust_intervals, robust_rows = _robustness(results, scorer, **boot)
    shares = _shares(results)
    explained = chosen["model"] if chosen["model"] in shares else best
    summary = {
        "quick": QUICK_NOTE if config.quick else None,
        "task": config.task,
        "n_samples": int(len(results.y)),
        "prevalence": _prevalence(results),
        "folds": ev.cv,
        "grouped": grouped or None,
        "bootstrap": {"n_boot": n_boot, "unit": "group" if results.groups is not None else "row",
                      "seed": config.seed, "method": "percentile"},
        "primary_metric": primary,
        "chance_levels": chance_levels(results, next(iter(entries.values()), {})),
        "best_strategy": best,
        "best_single_modality": best_baseline,
        "chosen": chosen,
        "headline": _headline(results, scorer, chosen, entries, **boot),
        "strategies": {k: entries[k] for k in results.oof},
        "baselines": {k: entries[k] for k in results.baselines},
        "comparisons": comparisons,
        "robustness": robustness,
        "robustness_intervals": robust_intervals,
        "calibration": _calibration(results, [*results.oof, *([best_baseline] if best_baseline else [])]),
        "conformal": _conformal(config, results),
        "folds_detail": _folds(results),
        "missingness": _missingness(results),
        "mean_abs_contribution": shares,
        "explained_model": explained,
        "contribution_ranking": sorted(shares.get(explained, {}), key=lambda n: -shares[explained][n]),
        "interactions": _interactions(results, explained),
        "contribution_intervals": _contribution_intervals(config, results, explained),
    }  # fmt: skip
    return summary, rows + robust_rows
