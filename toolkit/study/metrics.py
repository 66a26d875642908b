"""Study metrics: the registry :data:`METRICS` of :class:`Metric` records (name, task,
function, direction, chance level, binary-only, display name, a known answer), computed with
scikit-learn where it has them; cluster bootstrap intervals, paired
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

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from toolkit.registry import Registry
from toolkit.utils import binary_roc_auc


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


# -- the metric registry --------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """What the toolkit knows about one study metric.

    Parameters
    ----------
    name : str
        The key in configs (``evaluation.primary_metric``), ``metrics.json`` and tables.
    task : {"classification", "regression"}
    function : callable
        ``function(y, proba, threshold)`` for classification (class indices and an
        (n_samples, n_classes) probability array), ``function(y, pred)`` for regression.
    direction : {"higher", "lower", "ideal"}
        Which values are better; ``"ideal"``: the closer to ``ideal`` the better (such a
        metric describes a model but cannot rank models, so it is never a primary metric).
    display : str
        The name shown to readers (the report's tables).
    chance : float or callable, optional
        The score of a model that ignores its inputs: a constant, or ``fn(y)`` of the
        study's targets (e.g. the majority class share for accuracy). None: no such level.
    ideal : float, optional
        The ideal value of a ``direction="ideal"`` metric.
    binary_only : bool, default=False
        Defined for two classes only.
    mosi : bool, default=False
        A CMU-MOSI sentiment metric (needs ``evaluation.mosi_metrics: true``).
    default_for : {"binary", "multiclass", "regression"}, optional
        The study kind for which this is the primary metric when none is named.
    format : str, default=".3f"
        Format specification of a value in the report.
    example : tuple
        A known answer, ``(y, prediction, expected)``: the contract test computes it.
    """

    name: str
    task: str
    function: Callable
    direction: str
    display: str
    chance: float | Callable | None = None
    ideal: float | None = None
    binary_only: bool = False
    mosi: bool = False
    default_for: str | None = None
    format: str = ".3f"
    example: tuple = ()

    def __call__(self, y, pred, threshold: float = 0.5) -> float:
        if self.task == "classification":
            return float(self.function(y, pred, threshold))
        return float(self.function(y, pred))

    @property
    def ranks(self) -> bool:
        """Whether a larger or smaller value is better (models can be ranked by it)."""
        return self.direction in ("higher", "lower")

    @property
    def sign(self) -> int:
        """+1 when higher is better, -1 when lower is better (0 for an ideal-value metric)."""
        return {"higher": 1, "lower": -1}.get(self.direction, 0)

    def chance_level(self, y) -> float | None:
        """The chance level on the targets ``y`` (None when the metric has none)."""
        if self.chance is None or not callable(self.chance):
            return self.chance
        return float(self.chance(np.asarray(y)))

    def applies(self, task: str, n_classes: int | None = None, mosi: bool = False) -> bool:
        """Whether a study of ``task`` (with ``n_classes``; MOSI metrics on) reports it."""
        if self.task != task:
            return False
        if self.binary_only and n_classes is not None and n_classes != 2:
            return False
        return mosi or not self.mosi


def _binary(fn):
    """A metric of (y, p_positive) that needs both classes present."""

    def metric(y, proba, threshold=0.5):
        if len(np.unique(y)) < 2:
            return float("nan")
        return float(fn(y, proba[:, 1]))

    return metric


def _accuracy(y, proba, threshold=0.5):
    return skm.accuracy_score(y, np.argmax(proba, axis=1))


def _f1_macro(y, proba, threshold=0.5):
    labels = np.arange(proba.shape[1])
    return skm.f1_score(y, np.argmax(proba, axis=1), average="macro", labels=labels)


def _brier(y, proba, threshold=0.5):
    return skm.brier_score_loss(y, proba[:, 1])


def _sensitivity(y, proba, threshold=0.5):
    hard = proba[:, 1] >= threshold
    return float(np.sum(hard & (y == 1)) / max(np.sum(y == 1), 1))


def _specificity(y, proba, threshold=0.5):
    hard = proba[:, 1] >= threshold
    return float(np.sum(~hard & (y == 0)) / max(np.sum(y == 0), 1))


def _slope(y, proba, threshold=0.5):
    return calibration_slope_intercept(y, proba[:, 1])[0]


def _intercept(y, proba, threshold=0.5):
    return calibration_slope_intercept(y, proba[:, 1])[1]


def _majority_share(y) -> float:
    return float(np.max(np.unique(y, return_counts=True)[1]) / len(y))


def _prevalence(y) -> float:
    return float(np.mean(np.asarray(y) == 1))


def _r(y, p):
    return float(np.corrcoef(y, p)[0, 1]) if np.std(y) > 0 and np.std(p) > 0 else float("nan")


def _signs(y, p):
    nonzero = y != 0
    return y[nonzero] > 0, p[nonzero] > 0


def _r2(y, p):
    return float(skm.r2_score(y, p)) if len(y) > 1 and np.std(y) > 0 else float("nan")


def _acc2(y, p):
    return float(skm.accuracy_score(*_signs(y, p))) if np.any(y != 0) else float("nan")


def _f1_signs(y, p):
    if not np.any(y != 0):
        return float("nan")
    return float(skm.f1_score(*_signs(y, p), average="weighted"))


def _acc7(y, p):
    return float(np.mean(np.clip(np.round(y), -3, 3) == np.clip(np.round(p), -3, 3)))


def _proba(p1) -> np.ndarray:
    p1 = np.asarray(p1, float)
    return np.column_stack([1 - p1, p1])


_Y4, _Y8 = np.array([0, 1, 1, 0]), np.array([1, 0, 0, 0, 1, 1, 1, 0])
_CLASSIFICATION = "classification"
_REGRESSION = "regression"

#: Every study metric, in report order. Adding a metric is one entry here: config
#: validation, the summary (metrics.json), the best-model choice, the headline, the
#: report and the contract test (tests/study/test_metrics.py) all read this registry.
METRICS: Registry[Metric] = Registry("metric")
for _metric in (
    Metric("accuracy", _CLASSIFICATION, _accuracy, "higher", "Accuracy",
           chance=_majority_share, default_for="multiclass",
           example=(_Y4, _proba([0.2, 0.9, 0.3, 0.4]), 0.75)),
    Metric("f1_macro", _CLASSIFICATION, _f1_macro, "higher", "Macro-averaged F1",
           example=(_Y4, _proba([0.2, 0.9, 0.3, 0.4]), (0.8 + 2 / 3) / 2)),
    Metric("auroc", _CLASSIFICATION, _binary(binary_roc_auc), "higher", "AUROC",
           chance=0.5, binary_only=True, default_for="binary",
           example=(np.array([0, 0, 1, 1]), _proba([0.1, 0.4, 0.35, 0.8]), 0.75)),
    Metric("auprc", _CLASSIFICATION, _binary(skm.average_precision_score), "higher",
           "AUPRC (average precision)", chance=_prevalence, binary_only=True,
           example=(np.array([0, 0, 1, 1]), _proba([0.1, 0.4, 0.35, 0.8]), 5 / 6)),
    Metric("brier", _CLASSIFICATION, _brier, "lower", "Brier score",
           chance=lambda y: _prevalence(y) * (1 - _prevalence(y)), binary_only=True,
           example=(np.array([0, 1]), _proba([0.2, 0.6]), 0.1)),
    Metric("sensitivity", _CLASSIFICATION, _sensitivity, "higher", "Sensitivity",
           binary_only=True, example=(_Y4, _proba([0.2, 0.7, 0.4, 0.3]), 0.5)),
    Metric("specificity", _CLASSIFICATION, _specificity, "higher", "Specificity",
           binary_only=True, example=(_Y4, _proba([0.2, 0.7, 0.4, 0.6]), 0.5)),
    Metric("calibration_slope", _CLASSIFICATION, _slope, "ideal", "Calibration slope",
           ideal=1.0, binary_only=True, example=(_Y8, _proba([0.25] * 4 + [0.75] * 4), 1.0)),
    Metric("calibration_intercept", _CLASSIFICATION, _intercept, "ideal",
           "Calibration intercept", ideal=0.0, binary_only=True,
           example=(_Y8, _proba([0.25] * 4 + [0.75] * 4), 0.0)),
    Metric("mae", _REGRESSION, lambda y, p: skm.mean_absolute_error(y, p), "lower", "MAE",
           chance=lambda y: float(np.mean(np.abs(y - np.median(y)))), default_for="regression",
           example=(np.array([1.0, 2, 3]), np.array([2.0, 2, 2]), 2 / 3)),
    Metric("rmse", _REGRESSION, lambda y, p: np.sqrt(skm.mean_squared_error(y, p)), "lower",
           "RMSE", chance=lambda y: float(np.std(y)),
           example=(np.array([1.0, 2, 3]), np.array([2.0, 2, 2]), np.sqrt(2 / 3))),
    Metric("r2", _REGRESSION, _r2, "higher", "R²", chance=0.0,
           example=(np.array([1.0, 2, 3]), np.array([1.0, 2, 4]), 0.5)),
    Metric("pearson_r", _REGRESSION, _r, "higher", "Pearson r", chance=0.0,
           example=(np.array([1.0, 2, 3]), np.array([2.0, 4, 6]), 1.0)),
    Metric("acc2", _REGRESSION, _acc2, "higher", "Acc-2 (sign, non-zero targets)", mosi=True,
           example=(np.array([-1.0, 2, 0, 1]), np.array([-0.5, 1, 3, -1]), 2 / 3)),
    Metric("f1", _REGRESSION, _f1_signs, "higher", "F1 (sign, weighted, non-zero targets)",
           mosi=True, example=(np.array([-1.0, 2, 0, 1]), np.array([-0.5, 1, 3, -1]), 2 / 3)),
    Metric("acc7", _REGRESSION, _acc7, "higher", "Acc-7 (rounded scores in [-3, 3])",
           mosi=True, example=(np.array([0.4, -2.6, 3.4]), np.array([0.0, -2.4, 2.6]), 2 / 3)),
):  # fmt: skip
    METRICS.register(_metric.name, _metric)


def metric_names(
    task: str, n_classes: int | None = None, mosi: bool = False, *, ranking: bool = False
) -> list[str]:
    """The metrics a study of ``task`` reports, in registry order.

    Binary-only ones need ``n_classes == 2`` (all classification metrics when
    ``n_classes`` is None); MOSI's need ``mosi``; with ``ranking``, only metrics that can
    rank models (a primary metric).
    """
    return [
        m.name
        for m in METRICS.values()
        if m.applies(task, n_classes, mosi) and (m.ranks or not ranking)
    ]


def default_primary(task: str, n_classes: int | None) -> str:
    """The primary metric of a study that names none (the registry's ``default_for``)."""
    kind = "regression" if task == "regression" else "binary" if n_classes == 2 else "multiclass"
    return next(m.name for m in METRICS.values() if m.default_for == kind)


def classification_metric_names(n_classes: int) -> list[str]:
    """The classification metrics of a study with ``n_classes`` classes."""
    return metric_names(_CLASSIFICATION, n_classes)


def classification_metrics(y_true, proba, classes, threshold: float = 0.5) -> dict[str, float]:
    """Every classification metric that applies to ``len(classes)`` classes (binary-only
    ones need two; sensitivity and specificity at ``threshold``)."""
    y_true = np.asarray(y_true)
    return {
        m: METRICS[m](y_true, proba, threshold) for m in classification_metric_names(len(classes))
    }


def regression_metric_names(mosi: bool = False) -> list[str]:
    """The regression metrics of a study (MOSI's too when ``mosi``)."""
    return metric_names(_REGRESSION, mosi=mosi)


def regression_metrics(y_true, pred, mosi: bool = False) -> dict[str, float]:
    """MAE, RMSE, R² and Pearson r; with ``mosi``, CMU-MOSI's Acc-2 and weighted F1 on
    non-zero targets (sign agreement) and Acc-7 (rounded scores clipped to [-3, 3])."""
    y_true, pred = np.asarray(y_true, float), np.asarray(pred, float)
    return {m: METRICS[m](y_true, pred) for m in regression_metric_names(mosi)}


#: The range a target must lie in for MOSI's metrics (and reach beyond [-1, 1]).
MOSI_RANGE = (-3.0, 3.0)


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
    a two-sided bootstrap ``p_value``, ``p_value_upper_bound`` and ``n_boot``, the
    resamples with a finite difference. The p-value is twice the smaller tail, a resample
    with a difference of exactly 0 counting half to each tail (so identical models give 1).
    When no resample crosses 0 the p-value is below the bootstrap's resolution: then
    ``p_value`` holds the bound 1 / n_boot and ``p_value_upper_bound`` is True (read
    "p < 1 / n_boot", as :func:`format_p` prints it). NaN interval and p-value when there
    are no resamples or none gives a finite difference.
    """
    diffs = []
    for idx in _resamples(n_boot, rng, len(y), resamples):
        d = metric_fn(y[idx], a[idx]) - metric_fn(y[idx], b[idx])
        if np.isfinite(d):
            diffs.append(d)
    point = metric_fn(y, a) - metric_fn(y, b)
    nan = float("nan")
    if not diffs:
        return {"difference": float(point), "low": nan, "high": nan, "p_value": nan,
                "p_value_upper_bound": False, "n_boot": 0}  # fmt: skip
    diffs = np.asarray(diffs)
    ties = np.mean(diffs == 0) / 2
    p = 2 * min(np.mean(diffs < 0) + ties, np.mean(diffs > 0) + ties)
    bound = bool(p == 0)
    return {
        "difference": float(point),
        "low": float(np.quantile(diffs, alpha / 2)),
        "high": float(np.quantile(diffs, 1 - alpha / 2)),
        "p_value": 1 / len(diffs) if bound else float(min(p, 1.0)),
        "p_value_upper_bound": bound,
        "n_boot": int(len(diffs)),
    }


def format_p(p: float, n_boot: int, upper_bound: bool = False) -> str:
    """A bootstrap p-value at its resolution: ``"< 0.0033"`` (1 / n_boot) when no resample
    crossed 0 (``upper_bound``, as :func:`paired_difference` stores it, or ``p`` below
    1 / n_boot), else three decimals; ``"—"`` without resamples."""
    if not n_boot or not np.isfinite(p):
        return "—"
    if upper_bound or p < 1 / n_boot:
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
