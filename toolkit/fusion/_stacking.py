"""Late fusion's default stacker: equal-weight pooling of the heads' evidence unless the
inner folds show clearly that learned weights hold better.

The stacking features are each head's calibrated out-of-fold evidence relative to the prior,
log p_m(k) - log prior(k) (0 for an absent modality). Three stackers are scored on the same
inner folds the heads used (whole groups, or pseudo-groups, per fold), by held-out log loss:

- ``"equal"`` (the prior): logit_k = b_k + sum_m ev_m(k), one intercept per class and every
  modality's evidence counted once, as a product of calibrated experts (a vote weighted by
  each head's own calibrated confidence);
- ``"weighted"``: logit_k = b_k + sum_m w_m ev_m(k), one weight w_m >= 0 per modality;
- ``"full"``: ``LogisticRegression(C=1)`` on all evidence columns (one weight per modality,
  class and class).

:func:`toolkit.fusion._heads.prior_unless_clearly_better` keeps ``"equal"`` unless another
stacker's mean held-out loss is lower by more than one standard error of the per-fold
differences. The learned stackers fit many weights to out-of-fold evidence that rows of the
same person (speaker, patient) inflate; equal weights have nothing to fit to that inflation,
and correlated modalities (which equal weights would count twice) show as a clearly worse
held-out loss, so the learned weights are used there.

Every stacker is returned as a fitted ``LogisticRegression`` (its ``coef_`` and
``intercept_`` set), so a saved model holds only scikit-learn's own class.
"""

from __future__ import annotations

import numpy as np

from toolkit.fusion._heads import _log_loss, _proba, prior_unless_clearly_better

#: The stackers :func:`fit_stacker` compares, the prior first.
STACKERS = ("equal", "weighted", "full")


def _pooled_logits(ev: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``ev`` (n, M, K), ``w`` (M,), ``b`` (K,) -> logits (n, K)."""
    return np.einsum("nmk,m->nk", ev, w) + b


def _fit_pooled(ev: np.ndarray, y: np.ndarray, weighted: bool) -> tuple:
    """(w, b) maximizing the mean log-likelihood of softmax(b + sum_m w_m ev_m); w fixed at
    1 unless ``weighted``. ``ev`` (n, M, K) holds the evidence of the K classes present,
    ``y`` their index 0..K-1. A tiny ridge (1e-6) keeps a separable problem bounded."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    n, M, K = ev.shape
    Y = np.eye(K)[y]

    def objective(theta):
        w = theta[:M] if weighted else np.ones(M)
        b = theta[M:]
        logp = log_softmax(_pooled_logits(ev, w, b), axis=1)
        dz = (np.exp(logp) - Y) / n
        grad_w = np.einsum("nk,nmk->m", dz, ev) if weighted else np.zeros(M)
        loss = -float(np.sum(Y * logp)) / n + 1e-6 * float(theta @ theta)
        return loss, np.concatenate([grad_w, dz.sum(axis=0)]) + 2e-6 * theta

    theta0 = np.concatenate([np.ones(M), np.zeros(K)])
    # a weight is never negative: calibrated evidence for a class never counts against it
    bounds = [(0.0, None)] * M + [(None, None)] * K
    res = minimize(objective, theta0, jac=True, method="L-BFGS-B", bounds=bounds)
    w = res.x[:M] if weighted else np.ones(M)
    return w, res.x[M:]


def _as_logistic(w, b, classes, n_mod: int, width: int, seed: int):
    """A ``LogisticRegression`` whose ``predict_proba`` is softmax(b + sum_m w_m ev_m) over
    the stacking features (``n_mod`` blocks of ``width`` columns; ``classes`` present)."""
    from sklearn.linear_model import LogisticRegression

    K = len(classes)
    coef = np.zeros((K, n_mod * width))
    for m in range(n_mod):
        for j, c in enumerate(classes):
            coef[j, m * width + (0 if width == 1 else c)] = w[m]
    if width == 1:  # binary evidence: one log-odds column per modality, class 1's logit
        coef[0] = 0.0
    intercept = np.asarray(b, dtype=np.float64)
    if K == 2:  # scikit-learn's binary form: the logit of classes[1] over classes[0]
        coef, intercept = coef[1:] - coef[:1], intercept[1:] - intercept[:1]
    model = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    model.classes_ = np.asarray(classes)
    model.coef_, model.intercept_ = coef, intercept
    model.n_features_in_, model.n_iter_ = coef.shape[1], np.array([0])
    return model


def _evidence_cube(feats: np.ndarray, classes: np.ndarray, n_mod: int) -> np.ndarray:
    """Stacking features -> (n, M, K) evidence of the classes present (binary: class 0's
    evidence is 0 and class 1's the log-odds shift)."""
    width = feats.shape[1] // n_mod
    cube = feats.reshape(len(feats), n_mod, width)
    if width == 1:
        return np.concatenate([np.zeros_like(cube), cube], axis=2)[:, :, : len(classes)]
    return cube[:, :, classes]


def _fit_one(name: str, feats, y, n_mod: int, seed: int):
    from sklearn.linear_model import LogisticRegression

    if name == "full":
        return LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(feats, y)
    classes = np.unique(y)
    ev = _evidence_cube(feats, classes, n_mod)
    w, b = _fit_pooled(ev, np.searchsorted(classes, y), weighted=name == "weighted")
    return _as_logistic(w, b, classes, n_mod, feats.shape[1] // n_mod, seed)


def fit_stacker(feats: np.ndarray, y: np.ndarray, n_classes: int, n_mod: int, folds, seed: int):
    """(fitted stacker, its name, {name: mean held-out log loss}) for classification.

    ``feats`` are the stacking features (``n_mod`` blocks of equal width), ``y`` class codes
    and ``folds`` the inner (train, test) splits (None: no split possible, equal weights).
    """
    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:  # as before: LogisticRegression says what is wrong
        return _fit_one("full", feats, y, n_mod, seed), "full", {}
    if folds is None:
        return _fit_one("equal", feats, y, n_mod, seed), "equal", {}
    losses = {}
    for name in STACKERS:
        fold_losses = []
        for train, test in folds:
            model = _fit_one(name, feats[train], y[train], n_mod, seed)
            fold_losses.append(_log_loss(_proba(model, feats[test], n_classes), y[test]))
        losses[name] = np.array(fold_losses)
    sizes = np.array([len(test) for _, test in folds], dtype=float)
    chosen = prior_unless_clearly_better(losses, "equal", sizes)
    mean = {name: float(v @ (sizes / sizes.sum())) for name, v in losses.items()}
    model = _fit_one(chosen, feats, y, n_mod, seed)
    if chosen == "full" and _inverts(model, n_mod, feats.shape[1] // n_mod):
        # evidence for a class counted against it: held-out folds whose class balance
        # differs from their training rows (a group of one class held out) can make the
        # pooled out-of-fold evidence anti-correlated with the labels; such a stacker
        # turns the heads' ranking upside down on new rows. Keep one that cannot.
        rest = {name: v for name, v in losses.items() if name != "full"}
        chosen = prior_unless_clearly_better(rest, "equal", sizes)
        model = _fit_one(chosen, feats, y, n_mod, seed)
    return model, chosen, mean


def _inverts(model, n_mod: int, width: int) -> bool:
    """Whether a fitted ``LogisticRegression`` stacker counts some modality's evidence for a
    class against that class: a negative log-odds weight (binary), or a class's logit
    weight on its own evidence below the mean of the other classes' weights on it."""
    coef = np.asarray(model.coef_, dtype=np.float64)
    if width == 1:
        return bool((coef[0] < 0).any())
    classes = np.asarray(model.classes_).astype(int)
    for m in range(n_mod):
        for j, c in enumerate(classes):
            column = coef[:, m * width + c]
            others = np.delete(column, j)
            if len(others) and column[j] < others.mean():
                return True
    return False
