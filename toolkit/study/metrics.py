"""Study metrics (scikit-learn where it has them), cluster bootstrap intervals, paired
comparisons with p-values at their resolution, and calibration tables with bin counts.

Bootstrap method (:func:`bootstrap_resamples`): a percentile bootstrap that resamples the
unit of independence. With ``groups`` (patients, speakers), each resample draws as many
groups as there are, with replacement, and takes *all* rows of every drawn group (a
cluster bootstrap: Davison & Hinkley 1997, section 3.8); without groups it draws rows.
``scipy.stats.bootstrap`` resamples observations, not clusters, so the resampling is done
here in a few lines; the resamples come from one seeded generator and are *the same for
every model*, so a model's interval does not depend on which other models the study fits,
and paired differences use the same resamples as the intervals.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from sklearn import metrics as skm


def calibration_slope_intercept(y_true, p, eps: float = 1e-6) -> tuple[float, float]:
    """Logistic recalibration of the predicted log-odds: slope (ideal 1) and intercept (ideal 0).

    The fit of y ~ intercept + slope * logit(p) by maximum likelihood, as
    ``LogisticRegression(C=1e6)`` does (the same tiny ridge on the slope), solved by
    Newton's method on its two parameters: it runs in every bootstrap resample.
    """
    y = np.asarray(y_true, dtype=float)
    if len(np.unique(y)) < 2:
        return float("nan"), float("nan")
    logit = np.log(np.clip(p, eps, 1 - eps) / np.clip(1 - np.asarray(p), eps, 1 - eps))
    X = np.column_stack([np.ones_like(logit), logit])
    ridge = np.diag([0.0, 1e-6])
    w = np.zeros(2)
    for _ in range(100):
        mu = 1 / (1 + np.exp(-np.clip(X @ w, -30, 30)))
        grad = X.T @ (y - mu) - ridge @ w
        hess = (X * (mu * (1 - mu))[:, None]).T @ X + ridge
        step = np.linalg.solve(hess + 1e-12 * np.eye(2), grad)
        w += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(w[1]), float(w[0])


def _binary(fn):
    """Wrap a metric of (y, p_positive) that needs both classes present."""

    def metric(y, proba, threshold=0.5):
        if len(np.unique(y)) < 2:
            return float("nan")
        return float(fn(y, proba[:, 1]))

    return metric


def _sensitivity(y, proba, threshold=0.5):
    hard = proba[:, 1] >= threshold
    return float(np.sum(hard & (y == 1)) / max(np.sum(y == 1), 1))


def _specificity(y, proba, threshold=0.5):
    hard = proba[:, 1] >= threshold
    return float(np.sum(~hard & (y == 0)) / max(np.sum(y == 0), 1))


def _labels(proba):
    return np.arange(proba.shape[1])


#: name -> fn(y, proba, threshold); binary-only metrics are listed in BINARY_ONLY.
CLASSIFICATION_METRICS = {
    "accuracy": lambda y, p, t=0.5: float(skm.accuracy_score(y, np.argmax(p, axis=1))),
    "f1_macro": lambda y, p, t=0.5: float(
        skm.f1_score(y, np.argmax(p, axis=1), average="macro", labels=_labels(p))
    ),
    "auroc": _binary(skm.roc_auc_score),
    "auprc": _binary(skm.average_precision_score),
    "brier": lambda y, p, t=0.5: float(skm.brier_score_loss(y, p[:, 1])),
    "sensitivity": _sensitivity,
    "specificity": _specificity,
    "calibration_slope": lambda y, p, t=0.5: calibration_slope_intercept(y, p[:, 1])[0],
    "calibration_intercept": lambda y, p, t=0.5: calibration_slope_intercept(y, p[:, 1])[1],
}
BINARY_ONLY = {
    "auroc",
    "auprc",
    "brier",
    "sensitivity",
    "specificity",
    "calibration_slope",
    "calibration_intercept",
}


def classification_metric_names(n_classes: int) -> list[str]:
    return [m for m in CLASSIFICATION_METRICS if n_classes == 2 or m not in BINARY_ONLY]


def classification_metrics(y_true, proba, classes, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy and macro-F1; for binary tasks also AUROC, AUPRC, Brier score,
    sensitivity and specificity at ``threshold``, calibration slope and intercept."""
    y_true = np.asarray(y_true)
    return {
        m: CLASSIFICATION_METRICS[m](y_true, proba, threshold)
        for m in classification_metric_names(len(classes))
    }


def _r(y, p):
    return float(np.corrcoef(y, p)[0, 1]) if np.std(y) > 0 and np.std(p) > 0 else float("nan")


def _signs(y, p):
    nonzero = y != 0
    return y[nonzero] > 0, p[nonzero] > 0


def _r2(y, p):
    return float(skm.r2_score(y, p)) if len(y) > 1 and np.std(y) > 0 else float("nan")


#: Regression metrics every regression study reports.
REGRESSION_METRICS = {
    "mae": lambda y, p: float(skm.mean_absolute_error(y, p)),
    "rmse": lambda y, p: float(np.sqrt(skm.mean_squared_error(y, p))),
    "r2": _r2,
    "pearson_r": _r,
}
#: CMU-MOSI's sentiment metrics, defined on its [-3, 3] score only
#: (``evaluation.mosi_metrics: true``; validation refuses them for any other target).
MOSI_METRICS = {
    "acc2": lambda y, p: (
        float(skm.accuracy_score(*_signs(y, p))) if np.any(y != 0) else float("nan")
    ),
    "f1": lambda y, p: (
        float(skm.f1_score(*_signs(y, p), average="weighted")) if np.any(y != 0) else float("nan")
    ),
    "acc7": lambda y, p: float(np.mean(np.clip(np.round(y), -3, 3) == np.clip(np.round(p), -3, 3))),
}
#: The range a target must lie in for :data:`MOSI_METRICS` (and reach beyond [-1, 1]).
MOSI_RANGE = (-3.0, 3.0)


def regression_metric_names(mosi: bool = False) -> list[str]:
    """The regression metrics of a study (MOSI's too when ``mosi``)."""
    return [*REGRESSION_METRICS, *(MOSI_METRICS if mosi else {})]


def regression_metric(name: str):
    """fn(y, pred) of a regression metric (MOSI's included)."""
    return {**REGRESSION_METRICS, **MOSI_METRICS}[name]


def regression_metrics(y_true, pred, mosi: bool = False) -> dict[str, float]:
    """MAE, RMSE, R² and Pearson r; with ``mosi``, CMU-MOSI's Acc-2 and weighted F1 on
    non-zero targets (sign agreement) and Acc-7 (rounded scores clipped to [-3, 3])."""
    y_true, pred = np.asarray(y_true, float), np.asarray(pred, float)
    return {m: regression_metric(m)(y_true, pred) for m in regression_metric_names(mosi)}


def mosi_target_problem(y) -> str | None:
    """Why ``y`` is not a CMU-MOSI [-3, 3] sentiment score (None when it is one).

    A MOSI score lies in [-3, 3] and uses more than [-1, 1] (CH-SIMS' [-1, 1] scores would
    round to three of Acc-7's seven classes).
    """
    y = np.asarray(y, float)
    low, high = float(np.min(y)), float(np.max(y))
    if low < MOSI_RANGE[0] or high > MOSI_RANGE[1]:
        return f"the target spans [{low:g}, {high:g}], outside MOSI's [-3, 3]"
    if max(abs(low), abs(high)) <= 1.0:
        return (
            f"the target spans [{low:g}, {high:g}], within [-1, 1] (a CH-SIMS-style score), "
            "where Acc-7 would see only three of its seven classes"
        )
    return None


# -- bootstrap ------------------------------------------------------------------------------


def bootstrap_resamples(n: int, n_boot: int, seed: int, groups=None) -> Iterator[np.ndarray]:
    """``n_boot`` resamples of ``n`` rows as index arrays, the same for the same arguments.

    Without ``groups``: ``n`` rows drawn with replacement. With ``groups`` (one label per
    row): as many groups as there are, drawn with replacement, each contributing all of its
    rows (a cluster bootstrap; a resample's size varies with the groups drawn).
    """
    rng = np.random.RandomState(seed)
    if groups is None:
        for _ in range(max(n_boot, 0)):
            yield rng.randint(0, n, n)
        return
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    starts = np.r_[0, np.cumsum(np.bincount(codes))]
    members = [order[starts[g] : starts[g + 1]] for g in range(len(starts) - 1)]
    for _ in range(max(n_boot, 0)):
        drawn = rng.randint(0, len(members), len(members))
        yield np.concatenate([members[g] for g in drawn])


def _resamples(n_boot, rng, n, resamples):
    """The resamples to use: given ones, or row resamples from ``rng`` (older signature)."""
    if resamples is not None:
        return resamples
    return (rng.randint(0, n, n) for _ in range(max(n_boot, 0)))


def bootstrap_interval(
    metric_fn, n_boot: int, rng, *arrays, alpha: float = 0.05, resamples=None
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of ``metric_fn(*arrays)``.

    ``resamples`` (index arrays, e.g. from :func:`bootstrap_resamples`) are used when
    given; otherwise ``n_boot`` row resamples are drawn from ``rng``.
    """
    if resamples is None and n_boot <= 0:
        return float("nan"), float("nan")
    values = []
    for idx in _resamples(n_boot, rng, len(arrays[0]), resamples):
        value = metric_fn(*(a[idx] for a in arrays))
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    return float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2))


def paired_difference(
    metric_fn, y, a, b, *, n_boot: int, rng=None, alpha: float = 0.05, resamples=None
) -> dict[str, float]:
    """Bootstrap of metric(a) - metric(b) on the same resampled rows (paired).

    Returns the point ``difference``, the percentile (1 - alpha) interval ``low``-``high``,
    a two-sided bootstrap ``p_value`` and ``n_boot``, the resamples with a finite
    difference. The p-value is twice the smaller tail, a resample with a difference of
    exactly 0 counting half to each tail (so identical models give 1 and a difference
    that is positive in every resample gives 0, to be read as "< 1 / n_boot": see
    :func:`format_p`). NaN interval and p-value when there are no resamples or none gives
    a finite difference.
    """
    diffs = []
    for idx in _resamples(n_boot, rng, len(y), resamples):
        d = metric_fn(y[idx], a[idx]) - metric_fn(y[idx], b[idx])
        if np.isfinite(d):
            diffs.append(d)
    point = metric_fn(y, a) - metric_fn(y, b)
    nan = float("nan")
    if not diffs:
        return {"difference": float(point), "low": nan, "high": nan, "p_value": nan, "n_boot": 0}
    diffs = np.asarray(diffs)
    ties = np.mean(diffs == 0) / 2
    p = 2 * min(np.mean(diffs < 0) + ties, np.mean(diffs > 0) + ties)
    return {
        "difference": float(point),
        "low": float(np.quantile(diffs, alpha / 2)),
        "high": float(np.quantile(diffs, 1 - alpha / 2)),
        "p_value": float(min(p, 1.0)),
        "n_boot": int(len(diffs)),
    }


def format_p(p: float, n_boot: int) -> str:
    """A bootstrap p-value at its resolution: ``"< 0.0033"`` (1 / n_boot) when no resample
    crossed 0, else three decimals; ``"—"`` without resamples."""
    if not n_boot or not np.isfinite(p):
        return "—"
    if p < 1 / n_boot:
        return f"< {1 / n_boot:.2g}"
    return f"{p:.3f}"


# -- calibration table ----------------------------------------------------------------------


def calibration_table(y, p, n_bins: int = 8) -> list[dict]:
    """Quantile bins of the predicted probability ``p`` of the positive class: each bin's
    range, row count, mean predicted probability and observed positive rate.

    Bins are the ``n_bins`` quantiles of ``p`` (ties may merge bins, so fewer can come back).
    """
    y, p = np.asarray(y), np.asarray(p, float)
    edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
    if len(edges) < 2:
        edges = np.array([p.min(), p.max()])
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        inside = which == b
        if not inside.any():
            continue
        rows.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "n": int(inside.sum()),
                "mean_predicted": float(p[inside].mean()),
                "observed": float(np.mean(y[inside] == 1)),
            }
        )
    return rows
