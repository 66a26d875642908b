"""How sure are the modality contributions: confidence intervals over rows and over refits."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state

from toolkit.explain.modality import contribution_magnitudes

#: Columns of the interval tables, in order.
COLUMNS = ["modality", "statistic", "estimate", "low", "high", "confidence_level", "over", "n"]
#: The statistics, in the order they appear in an interval table.
STATISTICS = ("mean_abs", "share", "mean")


def _values(explanation) -> tuple[np.ndarray, list[str]]:
    values = np.asarray(getattr(explanation, "values", explanation), dtype=float)
    names = getattr(explanation, "feature_names", None)
    if values.ndim not in (2, 3) or values.shape[0] == 0:
        raise ValueError(
            "expected modality Shapley values of shape (n_samples, n_modalities[, n_classes]) "
            f"with at least one row (a shap.Explanation from model.explain), got shape "
            f"{values.shape}"
        )
    if not np.isfinite(values).all():
        raise ValueError("the explanation holds NaN or infinite values; explain finite outputs")
    if names is None or len(names) != values.shape[1]:
        raise ValueError(
            "the explanation must name its modalities (feature_names, one per column of values)"
        )
    return values, [str(n) for n in names]


def _per_row(values: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row quantities whose means over rows are the statistics: |phi| (summed over
    classes), the MM-SHAP share |phi_m| / sum |phi|, and the signed phi (2-D values only)."""
    magnitude = contribution_magnitudes(values)
    total = magnitude.sum(axis=1, keepdims=True)
    share = np.divide(magnitude, total, out=np.zeros_like(magnitude), where=total > 0)
    out = {"mean_abs": magnitude, "share": share}
    if values.ndim == 2:
        out["mean"] = values
    return out


def _check_level(confidence_level, n_resamples=None) -> None:
    if not isinstance(confidence_level, Real) or not 0 < confidence_level < 1:
        raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level!r}")
    if n_resamples is not None and (
        not isinstance(n_resamples, Integral) or isinstance(n_resamples, bool) or n_resamples < 2
    ):
        raise ValueError(f"n_resamples must be an integer >= 2, got {n_resamples!r}")


def _table(names, estimates: dict, lows: dict, highs: dict, level, over, n) -> pd.DataFrame:
    rows = [
        (name, stat, estimates[stat][m], lows[stat][m], highs[stat][m], level, over, n)
        for stat in STATISTICS
        if stat in estimates
        for m, name in enumerate(names)
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def contribution_intervals(
    explanation,
    groups=None,
    *,
    confidence_level=0.95,
    n_resamples=2000,
    method="percentile",
    random_state=None,
) -> pd.DataFrame:
    """Bootstrap confidence intervals of each modality's mean |phi|, share and mean phi.

    The rows of the explanation (or, with ``groups``, whole groups such as patients or
    speakers) are resampled with replacement by :func:`scipy.stats.bootstrap`; the
    statistics are recomputed on each resample. This measures how much the summary depends
    on which rows were explained, for one fitted model; :func:`refit_intervals` measures how
    much it depends on the fit.

    Parameters
    ----------
    explanation : shap.Explanation from ``model.explain``
        Values of shape (n_samples, n_modalities[, n_classes]) and ``feature_names``.
    groups : array-like of shape (n_samples,), optional
        Group of each row. When given, the bootstrap resamples group ids (a cluster
        bootstrap): rows of one patient stay together, so the interval is not made narrow
        by repeated measurements of the same patient.
    confidence_level : float, default=0.95
    n_resamples : int, default=2000
    method : {"percentile", "basic", "BCa"}, default="percentile"
        Passed to :func:`scipy.stats.bootstrap`. ``"BCa"`` gives NaN (and a warning) for a
        statistic that does not vary, e.g. a modality absent from every row;
        ``"percentile"`` gives the point itself.
    random_state : int, RandomState or None

    Returns
    -------
    DataFrame
        One row per (statistic, modality) with columns ``modality``, ``statistic``
        (``"mean_abs"``: mean |phi|, summed over classes for multi-class, as
        :func:`global_importance`; ``"share"``: mean MM-SHAP share, as
        :func:`modality_shares`; ``"mean"``: mean signed phi, only for (n, M) values),
        ``estimate`` (on all rows), ``low``, ``high``, ``confidence_level``, ``over``
        (``"rows"`` or ``"groups"``) and ``n`` (rows or groups resampled).

    Examples
    --------
    >>> import numpy as np, shap
    >>> from toolkit.explain import contribution_intervals
    >>> rng = np.random.default_rng(0)
    >>> exp = shap.Explanation(rng.normal(size=(40, 2)) * [1.0, 0.1], feature_names=["a", "b"])
    >>> table = contribution_intervals(exp, random_state=0, n_resamples=200)
    >>> share = table[table.statistic == "share"].set_index("modality")
    >>> share[["estimate", "low", "high"]].round(2).values.tolist()
    [[0.85, 0.77, 0.9], [0.15, 0.1, 0.23]]
    """
    from scipy import stats

    values, names = _values(explanation)
    _check_level(confidence_level, n_resamples)
    n = len(values)
    per_row = _per_row(values)
    if groups is None:
        unit, over = np.arange(n), "rows"
    else:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise ValueError(
                f"groups must hold one id per explained row ({n}), got shape {groups.shape}"
            )
        if pd.isna(groups).any():
            first = int(np.flatnonzero(pd.isna(groups))[0])
            raise ValueError(f"groups[{first}] is missing; give every row a group id")
        _, unit = np.unique(groups, return_inverse=True)
        over = "groups"
    n_units = int(unit.max()) + 1
    if n_units < 2:
        raise ValueError(
            f"the bootstrap needs at least 2 {over} to resample, got {n_units}; explain more "
            + ("rows" if over == "rows" else "groups, or pass groups=None")
        )
    counts = np.bincount(unit, minlength=n_units).astype(float)
    stacked = np.concatenate([per_row[s] for s in per_row], axis=1)  # (n, S * M)
    sums = np.zeros((n_units, stacked.shape[1]))
    np.add.at(sums, unit, stacked)

    def statistic(idx, axis=-1):
        idx = np.asarray(idx)
        mean = sums[idx].sum(axis=-2) / counts[idx].sum(axis=-1)[..., None]
        return np.moveaxis(mean, -1, 0)

    batch = max(1, int(2e7 // (n_units * stacked.shape[1])))
    result = stats.bootstrap(
        (np.arange(n_units),),
        statistic,
        n_resamples=n_resamples,
        confidence_level=confidence_level,
        method=method,
        vectorized=True,
        batch=batch,
        random_state=check_random_state(random_state),
    )
    M = len(names)
    point = stacked.mean(axis=0)
    low, high = result.confidence_interval.low, result.confidence_interval.high
    keys = list(per_row)

    def split(a):
        return {s: a[i * M : (i + 1) * M] for i, s in enumerate(keys)}

    return _table(names, split(point), split(low), split(high), confidence_level, over, n_units)


def refit_intervals(explanations, *, confidence_level=0.95) -> pd.DataFrame:
    """Intervals of each modality's mean |phi|, share and mean phi across refitted models.

    Each explanation comes from one fit (e.g. each cross-validation fold's model explaining
    its own test rows); the statistic is computed per fit, and the interval is the Student
    t interval of their mean, ``mean +- t_{k-1} sd / sqrt(k)`` over the k fits (clipped to
    [0, inf) for mean |phi| and to [0, 1] for shares). Folds share
    training rows, so their spread understates the variance over independent samples
    (Bengio and Grandvalet, 2004): read it as how stable the attribution is across refits,
    not as a sampling guarantee.

    Parameters
    ----------
    explanations : sequence of shap.Explanation (at least 2)
        Same modalities (``feature_names``) in the same order.
    confidence_level : float, default=0.95

    Returns
    -------
    DataFrame
        Columns as :func:`contribution_intervals` (``over`` = ``"refits"``, ``n`` = k), plus
        ``sd`` (standard deviation across fits) and one column per fit (``fit_0``, ...).

    Examples
    --------
    >>> import numpy as np, shap
    >>> from toolkit.explain import refit_intervals
    >>> rng = np.random.default_rng(0)
    >>> folds = [shap.Explanation(rng.normal(size=(30, 2)) * [1.0, 0.1], feature_names=["a", "b"])
    ...          for _ in range(5)]
    >>> table = refit_intervals(folds)
    >>> table.loc[table.statistic == "share", ["modality", "n"]].values.tolist()
    [['a', 5], ['b', 5]]
    """
    from scipy import stats

    _check_level(confidence_level)
    explanations = list(explanations)
    if len(explanations) < 2:
        raise ValueError(
            f"refit_intervals needs the explanations of at least 2 fitted models, got "
            f"{len(explanations)}; for one model use contribution_intervals (bootstrap over rows)"
        )
    per_fit, names = [], None
    for k, exp in enumerate(explanations):
        values, these = _values(exp)
        if names is not None and these != names:
            raise ValueError(
                f"explanation {k} has modalities {these}, explanation 0 has {names}; explain "
                "every fit's model with the same modalities in the same order"
            )
        if names is not None and values.ndim != per_fit[0]["ndim"]:
            raise ValueError(
                f"explanation {k} has values of shape {values.shape}, explanation 0 of "
                f"{per_fit[0]['shape']}; mix binary/regression and multi-class fits apart"
            )
        names = these
        summary = {s: a.mean(axis=0) for s, a in _per_row(values).items()}
        per_fit.append({**summary, "ndim": values.ndim, "shape": values.shape})
    k = len(per_fit)
    keys = [s for s in STATISTICS if s in per_fit[0]]
    stacked = {s: np.stack([f[s] for f in per_fit]) for s in keys}  # (k, M)
    mean = {s: a.mean(axis=0) for s, a in stacked.items()}
    sd = {s: a.std(axis=0, ddof=1) for s, a in stacked.items()}
    t = stats.t.ppf((1 + confidence_level) / 2, df=k - 1)
    low = {s: mean[s] - t * sd[s] / np.sqrt(k) for s in keys}
    high = {s: mean[s] + t * sd[s] / np.sqrt(k) for s in keys}
    for s in ("mean_abs", "share"):  # magnitudes are >= 0, shares <= 1
        low[s] = np.maximum(low[s], 0.0)
    high["share"] = np.minimum(high["share"], 1.0)
    table = _table(names, mean, low, high, confidence_level, "refits", k)
    table["sd"] = np.concatenate([sd[s] for s in keys])
    for j in range(k):
        table[f"fit_{j}"] = np.concatenate([stacked[s][j] for s in keys])
    return table
