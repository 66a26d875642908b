"""Heads that choose their regularization by inner cross-validation on the training rows.

Embeddings are computed once, so refitting a linear head on a few folds for a grid of
regularization strengths is cheap. The choice follows the one-standard-error rule: the
*most regularized* strength whose mean inner-CV loss lies within one standard error of the
best. That keeps the capacity the data support (a 3,000-row task gets a weakly regularized
head) while an uninformative block, whose extra weights buy no held-out loss, stays shrunk,
so it still gets little Shapley credit.

The inner folds come from :func:`toolkit.model_selection.inner_folds` (stratified, whole
groups when ``groups`` is given), and the held-out outputs at the chosen strength are
returned too: late fusion stacks on them instead of fitting its heads a second time.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np

from toolkit.model_selection import inner_folds

#: Inverse regularization strengths tried for logistic heads (on standardized, balanced blocks).
C_GRID = tuple(float(c) for c in np.logspace(-3, 3, 13))
#: Ridge penalties tried for regression heads.
ALPHA_GRID = tuple(float(a) for a in np.logspace(-3, 4, 15))
_EPS = 1e-6
#: Consecutive strengths past one standard error of the best that end a regularization path.
_PATH_PAST_BEST = 2


@dataclass
class HeadFit:
    """A fitted head, its out-of-fold outputs and how its regularization was chosen."""

    head: object
    oof: np.ndarray | None
    param: float | None = None
    grid: tuple = ()
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _proba(head, X, n_classes: int) -> np.ndarray:
    out = np.zeros((len(X), n_classes))
    out[:, np.asarray(head.classes_).astype(int)] = head.predict_proba(X)
    return out


def _log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y.astype(int)], _EPS, 1.0))))


def _logistic(C: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=2000, random_state=seed)


def fit_head(
    X: np.ndarray,
    y: np.ndarray,
    *,
    n_classes: int | None,
    groups=None,
    cv: int = 5,
    seed: int = 0,
    estimator=None,
    need_oof: bool = True,
) -> HeadFit:
    """Fit a head on ``X``; choose its regularization by inner CV when ``estimator`` is None.

    Parameters
    ----------
    X, y : training design and target (class codes 0..K-1, or floats)
    n_classes : int or None (regression)
    groups : array or None
        Keeps each group in one inner fold.
    cv : int
        Inner folds (reduced when a class or the groups are too few; with fewer than two
        folds possible, the default strength C=1 / alpha=1 is used).
    estimator : scikit-learn estimator or None
        A user's head: used as given (cloned), with out-of-fold outputs when ``need_oof``.

    Returns
    -------
    HeadFit
        ``oof`` holds out-of-fold probabilities (n, K) or predictions (n,) at the chosen
        strength (in-sample outputs when no split is possible).
    """
    from sklearn.base import clone
    from threadpoolctl import threadpool_limits

    classification = n_classes is not None
    memo = _MEMO.get()
    if estimator is None and memo is not None:
        key = _memo_key(X, y, n_classes, groups, cv, seed)
        if key in memo:
            memo.move_to_end(key)
            return _copy(memo[key])
    folds = inner_folds(y, groups, cv, classification, seed)
    if estimator is None:
        # Many small solves: one BLAS thread each is faster than a pool of threads that
        # spin (and far faster when other processes share the cores).
        with threadpool_limits(limits=1, user_api="blas"):
            if classification:
                fitted = _fit_logistic(X, y, n_classes, folds, seed)
            else:
                fitted = _fit_ridge(X, y, folds)
        if memo is None:
            return fitted
        memo[key] = fitted
        while len(memo) > _MEMO_SIZE:
            memo.popitem(last=False)
        return _copy(fitted)
    head = clone(estimator).fit(X, y)
    oof = _cross_fit(estimator, X, y, folds, n_classes) if need_oof else None
    return HeadFit(head, oof)


#: Inside :func:`shared_heads`, the last default heads fitted, by their inputs.
_MEMO: ContextVar[OrderedDict | None] = ContextVar("toolkit_fusion_heads", default=None)
_MEMO_SIZE = 16


@contextmanager
def shared_heads():
    """Within this block, a default head asked for twice on identical inputs (the same
    design, target, groups, folds and seed) is fitted once.

    ``fusion="auto"`` uses it: on each inner fold, late fusion's per-modality heads, early
    fusion's block scales and the single-modality candidates are the same heads; the inner
    splits of the same rows are made once as well (:func:`toolkit.model_selection.
    shared_folds`). Outside the block nothing is kept, so separate fits never share state.
    """
    from toolkit.model_selection import shared_folds

    token = _MEMO.set(OrderedDict() if _MEMO.get() is None else _MEMO.get())
    try:
        with shared_folds():  # the inner splits of the same rows, made once too
            yield
    finally:
        _MEMO.reset(token)


def _memo_key(X, y, n_classes, groups, cv, seed) -> tuple:
    digest = hashlib.blake2b(digest_size=16)
    for a in (X, y) if groups is None else (X, y, np.asarray(groups).astype(str)):
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(a.view(np.uint8).reshape(-1) if a.dtype != object else a.tobytes())
    return (digest.hexdigest(), n_classes, int(cv), int(seed))


def _copy(fitted: HeadFit) -> HeadFit:
    import copy

    return HeadFit(
        copy.deepcopy(fitted.head),
        None if fitted.oof is None else fitted.oof.copy(),
        fitted.param,
        fitted.grid,
        fitted.scores.copy(),
    )


def _output(head, X, n_classes):
    if n_classes is None:
        return np.asarray(head.predict(X), dtype=np.float64)
    return _proba(head, X, n_classes)


def _cross_fit(estimator, X, y, folds, n_classes) -> np.ndarray:
    from sklearn.base import clone

    if folds is None:
        return _output(clone(estimator).fit(X, y), X, n_classes)
    out = np.zeros((len(X), n_classes)) if n_classes is not None else np.zeros(len(X))
    for train, test in folds:
        out[test] = _output(clone(estimator).fit(X[train], y[train]), X[test], n_classes)
    return out


def _one_se(losses: np.ndarray, sizes: np.ndarray, order_regularized_first: bool) -> int:
    """Index of the most regularized grid point within one standard error of the best.

    ``losses`` has shape (n_grid, n_folds); fold losses are weighted by fold size.
    """
    mean = losses @ (sizes / sizes.sum())
    k = losses.shape[1]
    best = int(np.argmin(mean))
    se = float(np.std(losses[best], ddof=1) / np.sqrt(k)) if k > 1 else 0.0
    ok = np.flatnonzero(mean <= mean[best] + se)
    return int(ok.min() if order_regularized_first else ok.max())


def prior_unless_clearly_better(
    losses: dict, prior: str, sizes: np.ndarray, n_se: float = 1.0
) -> str:
    """The name of ``prior`` unless another candidate is clearly better on the inner folds.

    ``losses`` maps each candidate to its held-out losses on the same folds (fold sizes
    ``sizes``). The candidate with the lowest mean loss replaces the prior only when its mean
    is lower than the prior's by more than ``n_se`` standard errors of their per-fold
    differences (``n_se=1``: a one-standard-error rule against a fixed prior; 0: the lower
    mean wins, the prior on ties). Rows of one person in several folds make a
    person-specific choice look better than it is on new people; a choice must then win by
    more than the folds disagree before it displaces the prior.
    """
    weights = sizes / sizes.sum()
    mean = {name: float(v @ weights) for name, v in losses.items()}
    best = min(mean, key=mean.get)
    if best == prior:
        return prior
    diff = np.asarray(losses[prior]) - np.asarray(losses[best])
    k = len(diff)
    se = float(np.std(diff, ddof=1) / np.sqrt(k)) if k > 1 else np.inf
    return best if mean[prior] - mean[best] > n_se * se else prior


def prior_head(n_classes: int | None, seed: int):
    """The untuned head: ``LogisticRegression(C=1)`` or ``Ridge(alpha=1)``."""
    from sklearn.linear_model import Ridge

    return _logistic(1.0, seed) if n_classes is not None else Ridge(alpha=1.0)


def prior_losses(X, y, n_classes: int | None, folds, seed: int) -> np.ndarray:
    """Held-out log loss (regression: squared error) of :func:`prior_head` on each fold."""
    from sklearn.exceptions import ConvergenceWarning

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for train, test in folds:
            head = prior_head(n_classes, seed).fit(X[train], y[train])
            if n_classes is None:
                out.append(float(np.mean((head.predict(X[test]) - y[test]) ** 2)))
            else:
                out.append(_log_loss(_proba(head, X[test], n_classes), y[test]))
    return np.array(out)


def _fit_logistic(X, y, n_classes, folds, seed) -> HeadFit:
    """Logistic head whose ``C`` is chosen on the inner folds (one-standard-error rule).

    One regularization path per fold, in increasing ``C`` and warm-started from the previous
    strength's solution (each step is then a few solver iterations). The path stops once
    :data:`_PATH_PAST_BEST` consecutive strengths are beyond one standard error of the
    best mean loss so far (past the minimum of the usual U-shaped curve, no larger ``C``
    can be chosen). The final head on all rows starts from the mean of the folds'
    solutions at the chosen strength.
    """
    from sklearn.exceptions import ConvergenceWarning

    if folds is None:
        head = _logistic(1.0, seed).fit(X, y)
        return HeadFit(head, _proba(head, X, n_classes), 1.0)
    grid = C_GRID  # ascending: most regularized first
    losses = np.full((len(grid), len(folds)), np.nan)
    oofs = np.zeros((len(grid), len(X), n_classes))
    coefs: list[list] = [[] for _ in grid]
    sizes = np.array([len(test) for _, test in folds], dtype=float)
    models = [_logistic(grid[0], seed).set_params(warm_start=True) for _ in folds]
    # The fold paths only rank strengths by held-out loss: float32 halves the memory
    # traffic of each solver step (the choices agree with float64's on the benchmark
    # tasks); the final head is fitted in float64.
    X32 = np.asarray(X, dtype=np.float32)
    fold_rows = [(X32[train], y[train], X32[test], test) for train, test in folds]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        past = 0
        for i, C in enumerate(grid):
            for f, (X_train, y_train, X_test, test) in enumerate(fold_rows):
                model = models[f].set_params(C=C).fit(X_train, y_train)
                proba = _proba(model, X_test, n_classes)
                oofs[i, test] = proba
                losses[i, f] = _log_loss(proba, y[test])
                coefs[i].append((model.coef_.copy(), model.intercept_.copy()))
            mean = losses[: i + 1] @ (sizes / sizes.sum())
            best = int(np.argmin(mean))
            se = float(np.std(losses[best], ddof=1) / np.sqrt(len(folds)))
            past = past + 1 if mean[i] > mean[best] + se else 0
            if past >= _PATH_PAST_BEST:
                break
        done = i + 1
        i = _one_se(losses[:done], sizes, order_regularized_first=True)
        head = _logistic(grid[i], seed)
        classes = np.unique(y)
        if all(np.array_equal(m.classes_, classes) for m in models):
            # warm start from the folds' mean solution (the same problem on all rows)
            head.set_params(warm_start=True)
            head.coef_ = np.mean([c for c, _ in coefs[i]], axis=0).astype(np.float64)
            head.intercept_ = np.mean([b for _, b in coefs[i]], axis=0).astype(np.float64)
        head.fit(X, y)
        head.set_params(warm_start=False)
    return HeadFit(head, oofs[i], grid[i], grid[:done], losses[:done])


def _fit_ridge(X, y, folds) -> HeadFit:
    from sklearn.linear_model import Ridge

    if folds is None:
        head = Ridge(alpha=1.0).fit(X, y)
        return HeadFit(head, np.asarray(head.predict(X), dtype=np.float64), 1.0)
    grid = ALPHA_GRID[::-1]  # most regularized (largest alpha) first
    losses = np.zeros((len(grid), len(folds)))
    oofs = np.zeros((len(grid), len(X)))
    for f, (train, test) in enumerate(folds):
        for i, alpha in enumerate(grid):
            pred = Ridge(alpha=alpha).fit(X[train], y[train]).predict(X[test])
            oofs[i, test] = pred
            losses[i, f] = float(np.mean((pred - y[test]) ** 2))
    sizes = np.array([len(test) for _, test in folds], dtype=float)
    i = _one_se(losses, sizes, order_regularized_first=True)
    head = Ridge(alpha=grid[i]).fit(X, y)
    return HeadFit(head, oofs[i], grid[i], grid, losses)


# -- calibration -------------------------------------------------------------------------


def _smoothed_isotonic(score: np.ndarray, target: np.ndarray, strength: float) -> np.ndarray:
    """A monotone map as a (2, n_points) array of (score, probability) knots.

    Isotonic regression pools the rows into monotone blocks; each block's probability is
    then shrunk towards the overall rate with ``strength`` pseudo-rows, (positives +
    strength * rate) / (rows + strength), so that a small block at the tail that happens to
    be all one class does not claim certainty (an isotonic fit alone says 0 or 1 there,
    which a log-odds stacker would follow blindly).
    """
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(score, target)
    fitted = iso.predict(score)
    rate = float(target.mean())
    values, inverse = np.unique(fitted, return_inverse=True)
    rows = np.bincount(inverse, minlength=len(values)).astype(float)
    positives = np.bincount(inverse, weights=target, minlength=len(values))
    smoothed = (positives + strength * rate) / (rows + strength)
    knots_x = np.asarray(iso.X_thresholds_, dtype=np.float64)
    knots_y = smoothed[np.searchsorted(values, iso.predict(knots_x))]
    return np.vstack([knots_x, knots_y])


def fit_calibrators(proba: np.ndarray, y: np.ndarray, strength: float = 2.0) -> list:
    """Monotone maps from a head's out-of-fold probabilities to calibrated ones.

    Binary: one map of P(class 1); K classes: one map per class (one-vs-rest), renormalized
    by :func:`calibrate`. Each is a smoothed isotonic fit (:func:`_smoothed_isotonic`), held
    as a plain (2, n_knots) array. Isotonic maps can saturate (a head that is right 80% of
    the time however sure it looks gets 0.8), which a linear stacker on log-odds cannot
    learn by itself; that is what lets stacking reach (and pass) a majority vote of the heads.
    """
    n_classes = proba.shape[1]
    columns = [1] if n_classes == 2 else range(n_classes)
    return [
        _smoothed_isotonic(proba[:, k], (y == k).astype(np.float64), strength) for k in columns
    ]


def _apply(knots: np.ndarray, score: np.ndarray) -> np.ndarray:
    return np.interp(score, knots[0], knots[1])


def calibrate(maps: list, proba: np.ndarray) -> np.ndarray:
    """Apply :func:`fit_calibrators`' maps; rows sum to 1 and stay within [eps, 1 - eps]."""
    if len(proba) == 0:
        return proba.copy()
    if proba.shape[1] == 2:
        p1 = np.clip(_apply(maps[0], proba[:, 1]), _EPS, 1 - _EPS)
        return np.column_stack([1 - p1, p1])
    out = np.column_stack([_apply(m, proba[:, k]) for k, m in enumerate(maps)])
    out = np.clip(out, _EPS, None)
    return out / out.sum(axis=1, keepdims=True)

def cross_calibrate(proba: np.ndarray, y: np.ndarray, folds) -> np.ndarray:
    """Calibrated out-of-fold probabilities, each fold mapped by maps fitted on the others.

    The stacker learns from these, so it never sees a calibration fitted on its own rows.
    """
    if folds is None:
        return calibrate(fit_calibrators(proba, y), proba)
    out = np.zeros_like(proba)
    for train, test in folds:
        out[test] = calibrate(fit_calibrators(proba[train], y[train]), proba[test])
    return out
