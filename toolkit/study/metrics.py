"""Study metrics (scikit-learn where it has them), bootstrap intervals, paired comparisons."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def calibration_slope_intercept(y_true, p, eps: float = 1e-6) -> tuple[float, float]:
    """Logistic recalibration of the predicted log-odds: slope (ideal 1) and intercept (ideal 0)."""
    from sklearn.linear_model import LogisticRegression

    logit = np.log(np.clip(p, eps, 1 - eps) / np.clip(1 - p, eps, 1 - eps))[:, None]
    if len(np.unique(y_true)) < 2:
        return float("nan"), float("nan")
    model = LogisticRegression(C=1e6, max_iter=1000).fit(logit, y_true)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


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


REGRESSION_METRICS = {
    "mae": lambda y, p: float(skm.mean_absolute_error(y, p)),
    "pearson_r": _r,
    "acc2": lambda y, p: (
        float(skm.accuracy_score(*_signs(y, p))) if np.any(y != 0) else float("nan")
    ),
    "f1": lambda y, p: (
        float(skm.f1_score(*_signs(y, p), average="weighted")) if np.any(y != 0) else float("nan")
    ),
    "acc7": lambda y, p: float(np.mean(np.clip(np.round(y), -3, 3) == np.clip(np.round(p), -3, 3))),
}


def regression_metrics(y_true, pred) -> dict[str, float]:
    """CMU-MOSI metrics: MAE, Pearson r, Acc-2 and weighted F1 on non-zero targets (sign
    agreement), Acc-7 (rounded scores clipped to [-3, 3])."""
    y_true, pred = np.asarray(y_true, float), np.asarray(pred, float)
    return {m: fn(y_true, pred) for m, fn in REGRESSION_METRICS.items()}


def bootstrap_interval(
    metric_fn, n_boot: int, rng, *arrays, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of ``metric_fn(*arrays)`` over rows."""
    if n_boot <= 0:
        return float("nan"), float("nan")
    n = len(arrays[0])
    values = []
    for _ in range(n_boot):
        idx = rng.randint(0, n, n)
        value = metric_fn(*(a[idx] for a in arrays))
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    return float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2))


def paired_difference(
    metric_fn, y, a, b, *, n_boot: int, rng, alpha: float = 0.05
) -> dict[str, float]:
    """Bootstrap of metric(a) - metric(b) on the same resampled rows (paired).

    Returns the point ``difference``, the percentile (1 - alpha) interval ``low``-``high``
    and a two-sided bootstrap ``p_value``; NaN interval and p-value when ``n_boot`` is 0 or
    no resample gives a finite difference.
    """
    diffs = []
    n = len(y)
    for _ in range(max(n_boot, 0)):
        idx = rng.randint(0, n, n)
        d = metric_fn(y[idx], a[idx]) - metric_fn(y[idx], b[idx])
        if np.isfinite(d):
            diffs.append(d)
    point = metric_fn(y, a) - metric_fn(y, b)
    if not diffs:
        return {
            "difference": float(point),
            "low": float("nan"),
            "high": float("nan"),
            "p_value": float("nan"),
        }
    diffs = np.asarray(diffs)
    p = 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0))
    return {
        "difference": float(point),
        "low": float(np.quantile(diffs, alpha / 2)),
        "high": float(np.quantile(diffs, 1 - alpha / 2)),
        "p_value": float(min(p, 1.0)),
    }
