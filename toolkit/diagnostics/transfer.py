"""The transfer check per modality: :func:`group_transfer` (see :mod:`toolkit.diagnostics`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    StrOptions,
    validate_params,
)
from threadpoolctl import threadpool_limits

from toolkit.diagnostics.result import (
    CLASSIFICATION_SCORES,
    REGRESSION_SCORES,
    TransferCheck,
    accuracy,
    add_verdicts,
    group_scores,
    plain,
    scorer,
)
from toolkit.embeddings import Embeddings
from toolkit.estimators import MultimodalClassifier, MultimodalRegressor
from toolkit.model_selection import check_groups, inner_folds

__all__ = ["group_transfer"]


@validate_params(
    {
        "cv": [Interval(Integral, 2, None, closed="left")],
        "scoring": [StrOptions({*CLASSIFICATION_SCORES, *REGRESSION_SCORES}), callable, None],
        "greater_is_better": ["boolean"],
        "head": [HasMethods(["fit", "predict"]), None],
        "min_gap": [Interval(Real, 0, None, closed="left")],
        "model": ["boolean"],
        "group_name": [str],
        "n_boot": [Interval(Integral, 100, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
    },
    prefer_skip_nested_validation=True,
)
def group_transfer(
    estimator,
    X,
    y,
    groups,
    *,
    cv=5,
    scoring=None,
    greater_is_better=True,
    head=None,
    min_gap=0.05,
    model=True,
    group_name="groups",
    n_boot=1000,
    random_state=0,
) -> TransferCheck:
    """Does each modality's signal carry over to groups (people, sites) never seen?

    For each modality of ``estimator``: its cross-validated score when test rows come from
    groups also seen in training (*within*: row-level folds) and when whole groups are held
    out (*across*: ``StratifiedGroupKFold`` / ``GroupKFold`` through
    :func:`toolkit.model_selection.inner_folds`), the gap between the two with a paired
    95% interval, how well the modality tells the groups apart, and a flag with a
    plain-language sentence ("audio: 0.98 within speakers, 0.73 across speakers — it
    identifies speakers ..."). Then the estimator's own model is fitted on each group-level
    training fold and scored on each held-out group: per-group scores, worst group, spread.

    Each modality is encoded once, with the estimator's public ``fit_encode(X, y, groups)``
    (an encoder that learns from the labels is cross-fitted over whole groups; for the
    *within* scores it is cross-fitted once more over rows, so that neither score reads an
    encoder's in-sample outputs: such an encoder is trained 2 x (``encoder_cv`` + 1) times,
    which dominates the check's time, e.g. 460 s for the AV-Digits image CNN on 2 CPU
    cores). Encoders that learn without labels (TF-IDF, tabular scaling) are fitted once on
    all rows. The per-modality scores come from a cheap head fitted on that modality's
    block (standardized; logistic regression or ridge), on the rows where the modality is
    present, so with fixed encoders the check runs in seconds.

    **Flag rule.** A modality is flagged as specific to the groups when its score across
    held-out groups is worse than within seen groups by at least ``min_gap`` (score units)
    *and* the paired 95% cluster-bootstrap interval of that drop (resampling whole groups,
    ``n_boot`` times) lies above 0: the drop is both material and not an accident of which
    groups were drawn. With few groups the interval is wide and a real drop may go
    unflagged ("uncertain"); the sentence says so. ``identifies_groups`` (the modality tells
    the groups apart with a row-level CV accuracy that closes at least half the distance
    from chance, the largest group's share, to 1) explains a flag rather than deciding it:
    a flagged modality that identifies the groups has learnt who the person is.

    Parameters
    ----------
    estimator : MultimodalClassifier or MultimodalRegressor
        Used as a specification only: it is cloned, and a fitted estimator is neither
        used nor changed (its fitted encoders are not reused).
    X : pandas DataFrame or dict of columns, or Embeddings
        The rows, as ``estimator.fit`` takes them. Embeddings are used as they are (an
        encoder that learns from the labels must then have produced out-of-fold blocks).
    y : array-like of shape (n_samples,)
    groups : array-like of shape (n_samples,)
        Group of each row (speaker, patient, site): at least 2 groups, not one row each,
        not the target itself.
    cv : int, default=5
        Folds of both cross-validations (fewer when the groups or the smallest class
        allow fewer; ``n_splits`` in the result says how many were used).
    scoring : str or callable, default=None
        ``"accuracy"`` (classifier default), ``"balanced_accuracy"``, ``"roc_auc"``,
        ``"log_loss"``, ``"brier"``, ``"r2"`` (regressor default), ``"mae"``; or
        ``fn(y_true, output)`` taking class codes (positions in the sorted classes) and
        probabilities of shape (n, n_classes), or targets and predictions for a regressor.
    greater_is_better : bool, default=True
        Direction of a callable ``scoring`` (named scores know theirs).
    head : scikit-learn estimator, default=None
        The per-modality head (cloned; a classifier's needs ``predict_proba``). Default:
        ``StandardScaler`` + ``LogisticRegression`` (classifier) or ``RidgeCV`` (regressor).
        Group identification always uses the default classifier head.
    min_gap : float, default=0.05
        Smallest drop that is flagged, in score units.
    model : bool, default=True
        Also fit the estimator's own model on each group-level fold (slower: one fusion fit
        per fold) for the per-group distribution.
    group_name : str, default="groups"
        What a group is, in plural, for the sentences (``"speakers"``, ``"patients"``).
    n_boot : int, default=1000
        Cluster-bootstrap resamples of the intervals.
    random_state : int, default=0
        Seeds the folds and the bootstrap.

    Returns
    -------
    TransferCheck
        ``.modalities`` (DataFrame, one row per modality), ``.groups`` (per held-out group
        scores of the model), ``.model`` (their distribution), ``.summary()`` (the
        sentences) and ``.to_dict()`` (JSON-ready).

    Raises
    ------
    TypeError
        ``estimator`` is not a MultimodalClassifier / MultimodalRegressor, or a classifier's
        ``head`` has no ``predict_proba``.
    ValueError
        ``groups`` is missing, of the wrong length, holds one group only, one row per
        group or the target itself, or a class lies in a single group; or the options are
        out of range. Each message names what to change.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from toolkit import MultimodalClassifier, TabularEncoder
    >>> from toolkit.diagnostics import group_transfer
    >>> rng = np.random.default_rng(0)
    >>> person = np.repeat(np.arange(8), 40)              # 8 people, 40 rows each
    >>> y = rng.integers(0, 2, len(person))
    >>> own_way = rng.normal(size=(8, 2, 6))               # each person shows y their own way
    >>> voice = own_way[person, y] + 0.3 * rng.normal(size=(len(person), 6))
    >>> df = pd.DataFrame(voice, columns=[f"v{i}" for i in range(6)])
    >>> df["scan"] = y + rng.normal(size=len(person))      # the same signal in everyone
    >>> clf = MultimodalClassifier([("voice", TabularEncoder(), list(df.columns[:6])),
    ...                             ("scan", TabularEncoder(), ["scan"])], random_state=0)
    >>> check = group_transfer(clf, df, y, person, cv=4, model=False,
    ...                        group_name="people", n_boot=200)
    >>> check.flagged
    ['voice']
    >>> print(check.summary().splitlines()[1][:60])
    - voice: 0.87 within people, 0.54 across people — it identif
    """
    classification = _check_estimator(estimator)
    if not group_name.strip():
        raise ValueError("group_name is empty; name what a group is, e.g. 'speakers'")
    if classification and head is not None and not hasattr(head, "predict_proba"):
        raise TypeError(
            f"head {type(head).__name__} has no predict_proba; a classifier's head must give "
            "class probabilities (e.g. LogisticRegression())"
        )
    metric, fn, greater = scorer(scoring, greater_is_better, classification)
    groups = _check_group_labels(groups, _n_rows(X))
    data = _encode(estimator, X, y, groups, classification)
    gcodes, glabels = pd.factorize(pd.Series(groups), sort=True)
    _check_not_target(data["y"], gcodes, glabels, data["classes"])
    seed = 0 if random_state is None else int(random_state)
    within = _folds(data["y"], None, cv, classification, seed, "row-level")
    across = _folds(data["y"], groups, cv, classification, seed, "group-level")
    task = _Task(data["y"], gcodes, fn, greater, data["n_classes"], head, seed, n_boot)
    rows = {}
    with threadpool_limits(limits=1, user_api="blas"):  # small heads: threads only cost
        for j, name in enumerate(data["across"].names):
            present = data["across"].mask[:, j]
            rows[name] = task.modality(
                data["within"].blocks[name], data["across"].blocks[name], present, within, across
            )
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "modality"
    table = add_verdicts(table, min_gap, group_name)
    groups_table = summary = None
    if model:
        output = _model_output(estimator, data, groups, across)
        fusion = estimator.fusion
        label = f"{fusion} fusion" if isinstance(fusion, str) else type(fusion).__name__
        groups_table, summary = group_scores(
            data["y"], output, groups, scoring=(metric, fn, greater), folds=across, label=label
        )
    return TransferCheck(
        modalities=table,
        groups=groups_table,
        model=summary,
        metric=metric,
        greater_is_better=greater,
        group_name=group_name,
        n_splits={"within": len(within), "across": len(across)},
        min_gap=float(min_gap),
        n_boot=int(n_boot),
        n_groups=len(glabels),
    )


# -- checks ---------------------------------------------------------------------------------


def _check_estimator(estimator) -> bool:
    """True for a classifier, False for a regressor; TypeError for anything else."""
    if isinstance(estimator, type):
        raise TypeError(
            f"estimator must be an instance, got the class {estimator.__name__}; write "
            f"{estimator.__name__}(modalities=...)"
        )
    if isinstance(estimator, MultimodalClassifier):
        return True
    if isinstance(estimator, MultimodalRegressor):
        return False
    raise TypeError(
        "estimator must be a toolkit MultimodalClassifier or MultimodalRegressor (the check "
        f"encodes each of its modalities), got {type(estimator).__name__}"
    )


def _n_rows(X) -> int:
    if isinstance(X, Embeddings):
        return X.n_samples
    if isinstance(X, dict):
        return len(next(iter(X.values()))) if X else 0
    return len(X)


def _check_group_labels(groups, n: int) -> np.ndarray:
    """``groups`` as a checked 1-D array: one label per row, 2+ groups, not one row each."""
    if groups is None:
        raise ValueError(
            "groups is None: the check holds out whole groups, so it needs one group label "
            "per row (e.g. the speaker, patient or site id)"
        )
    arr = np.asarray(groups)
    if arr.ndim != 1 or len(arr) != n:
        got = f"{len(arr)} labels" if arr.ndim == 1 else f"an array of shape {arr.shape}"
        raise ValueError(
            f"groups has {got} but X has {n} rows; give one group label (e.g. the speaker "
            "or patient id) per row of X"
        )
    arr = check_groups(arr, n)
    codes, labels = pd.factorize(pd.Series(arr))
    if len(labels) < 2:
        raise ValueError(
            f"groups holds one group only ({plain(labels[0])!r}); holding out groups needs at least "
            "2 (better 5 or more): pass the column that says which person or site each row "
            "comes from"
        )
    if len(labels) == n:
        raise ValueError(
            f"every row is its own group ({n} groups for {n} rows), so holding out groups "
            "is the same as holding out rows; pass the person or site id, shared by the "
            "rows of one person or site"
        )
    return arr


def _check_not_target(y, gcodes, glabels, classes) -> None:
    """Refuse groups that are the target: a group-level split could never train on the
    class it tests."""
    if classes is None:
        return
    confined = {}
    for k in np.unique(y):
        held = np.unique(gcodes[y == k])
        if len(held) == 1:
            confined[k] = held[0]
    if not confined:
        return
    if len(confined) == len(np.unique(y)):
        raise ValueError(
            "groups equal the target: every class lies in a single group, so holding out "
            "a group holds out its class; pass the person or site id as groups, not the "
            "label column"
        )
    k, g = next(iter(confined.items()))
    raise ValueError(
        f"class {plain(classes[k])!r} occurs in group {plain(glabels[g])!r} only, so a "
        "group-level split never trains on the class it tests; add rows of that class from "
        "other groups, or leave the class out of the check"
    )


def _folds(y, groups, cv: int, classification: bool, seed: int, kind: str) -> list:
    folds = inner_folds(y, groups, cv, classification, seed)
    if folds is None:
        raise ValueError(
            f"no {kind} cross-validation is possible (fewer than 2 folds: too few rows per "
            "class" + (" or too few groups" if groups is not None else "") + "); give more "
            "rows per class and group"
        )
    return folds


# -- encoding -------------------------------------------------------------------------------


def _encode(estimator, X, y, groups, classification: bool) -> dict:
    """The blocks for the *across* scores (encoders cross-fitted over groups) and for the
    *within* scores (over rows, where an encoder learns from the labels), and the target
    as class codes (classification) or floats."""
    if isinstance(X, Embeddings):
        codes, classes = _target(y, X.n_samples, classification)
        across = within = X
    else:
        fitted = clone(estimator)
        across = fitted.fit_encode(X, y, groups)
        labels = np.asarray(y).ravel()
        if classification:
            classes = fitted.classes_
            codes = pd.Index(classes).get_indexer(labels)
        else:
            classes, codes = None, labels.astype(np.float64)
        learns = any(getattr(e, "supervised", False) for e in fitted.encoders_.values())
        within = clone(estimator).fit_encode(X, y) if learns else across
    return {
        "within": within,
        "across": across,
        "y": codes,
        "classes": classes,
        "n_classes": None if classes is None else len(classes),
    }


def _target(y, n: int, classification: bool):
    """(codes, classes) of a target given with precomputed Embeddings."""
    values = np.asarray(y).ravel()
    if len(values) != n:
        raise ValueError(f"X has {n} rows but y has {len(values)} values; they must match")
    missing = pd.isna(pd.Series(values)).to_numpy()
    if missing.any():
        raise ValueError(
            f"y holds missing values at rows {np.flatnonzero(missing)[:10].tolist()}; drop "
            "those rows or label them"
        )
    if not classification:
        return values.astype(np.float64), None
    classes, codes = np.unique(values, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"y has one class only ({plain(classes[0])!r}); give at least 2")
    return codes, classes


# -- per-modality scores --------------------------------------------------------------------


def _default_head(classification: bool):
    if classification:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))


def _restrict(folds, rows: np.ndarray, n: int) -> list:
    """``folds`` over all ``n`` rows as positions within ``rows`` (empty sides dropped)."""
    pos = np.full(n, -1)
    pos[rows] = np.arange(len(rows))
    out = []
    for train, test in folds:
        tr, te = pos[train], pos[test]
        tr, te = tr[tr >= 0], te[te >= 0]
        if len(tr) and len(te):
            out.append((tr, te))
    return out


def _fit_predict(head, X_train, y_train, X_test, n_classes):
    """A clone of ``head`` fitted on the training rows: probabilities (one column per
    class code, 0 for classes absent from training) or predictions of the test rows."""
    if n_classes is None:
        return clone(head).fit(X_train, y_train).predict(X_test)
    proba = np.zeros((len(X_test), n_classes))
    seen = np.unique(y_train)
    if len(seen) < 2:
        proba[:, seen] = 1.0
        return proba
    fitted = clone(head).fit(X_train, y_train)
    proba[:, fitted.classes_] = fitted.predict_proba(X_test)
    return proba


def _oof(X, y, folds, head, n_classes) -> np.ndarray:
    """Out-of-fold outputs of ``head`` over ``folds`` (every row is in one test fold)."""
    out = np.zeros((len(y), n_classes)) if n_classes is not None else np.zeros(len(y))
    for train, test in folds:
        out[test] = _fit_predict(head, X[train], y[train], X[test], n_classes)
    return out


@dataclass
class _Task:
    """What every modality's check shares: target, groups, score, head, seed."""

    y: np.ndarray
    gcodes: np.ndarray
    fn: object
    greater: bool
    n_classes: int | None
    head: object
    seed: int
    n_boot: int

    def modality(self, block_within, block_across, present, within, across) -> dict:
        rows = np.flatnonzero(present)
        if len(rows) == 0:
            return {"n_rows": 0}
        y, g, n = self.y[rows], self.gcodes[rows], len(self.y)
        head = self.head if self.head is not None else _default_head(self.n_classes is not None)
        w = _oof(block_within[rows], y, _restrict(within, rows, n), head, self.n_classes)
        a = _oof(block_across[rows], y, _restrict(across, rows, n), head, self.n_classes)
        s_w, s_a = self.fn(y, w), self.fn(y, a)
        (gap_low, gap_high), (a_low, a_high) = self._intervals(y, w, a, g)
        ident, chance = self._identify(block_within[rows], g)
        s_c = self.fn(y, self._prior(y))
        return {
            "n_rows": len(rows),
            "within": s_w,
            "across": s_a,
            "across_low": a_low,
            "across_high": a_high,
            "gap": (s_w - s_a) if self.greater else (s_a - s_w),
            "gap_low": gap_low,
            "gap_high": gap_high,
            "group_id": ident,
            "group_id_chance": chance,
            "chance": s_c,
            "signal": (s_w - s_c) if self.greater else (s_c - s_w),
        }

    def _prior(self, y) -> np.ndarray:
        """The output of a model that ignores the modality: the class shares (or the mean)."""
        if self.n_classes is None:
            return np.full(len(y), float(np.mean(y)))
        shares = np.bincount(y, minlength=self.n_classes) / len(y)
        return np.tile(shares, (len(y), 1))

    def _intervals(self, y, within, across, g):
        """Paired 95% cluster-bootstrap intervals of the drop and of the across score."""
        members = [np.flatnonzero(g == k) for k in np.unique(g)]
        rng = np.random.default_rng(self.seed)
        gaps, scores = np.empty(self.n_boot), np.empty(self.n_boot)
        for b in range(self.n_boot):
            idx = np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])
            s_w, s_a = self.fn(y[idx], within[idx]), self.fn(y[idx], across[idx])
            gaps[b] = (s_w - s_a) if self.greater else (s_a - s_w)
            scores[b] = s_a
        return _percentiles(gaps), _percentiles(scores)

    def _identify(self, X, g):
        """Row-level CV accuracy of telling the groups apart from ``X`` (groups with at
        least 2 rows), and chance: the share of the largest group."""
        counts = np.bincount(g)
        keep = counts[g] >= 2
        codes = np.unique(g[keep], return_inverse=True)[1]
        if len(np.unique(codes)) < 2:
            return float("nan"), float("nan")
        folds = inner_folds(codes, None, 5, True, self.seed)
        if folds is None:
            return float("nan"), float("nan")
        n_groups = int(codes.max()) + 1
        with warnings.catch_warnings():
            # The target is the group itself: many classes of 2-3 rows each (patients'
            # visits) are the question asked, not a regression target in disguise.
            warnings.filterwarnings("ignore", "The number of unique classes", UserWarning)
            oof = _oof(X[keep], codes, folds, _default_head(True), n_groups)
        return accuracy(codes, oof), float(np.bincount(codes).max() / len(codes))


def _percentiles(values) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if len(finite) < 0.9 * len(values):  # the score is undefined on many resamples
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


# -- the model over held-out groups ---------------------------------------------------------


def _model_output(estimator, data: dict, groups, folds) -> np.ndarray:
    """Out-of-fold outputs of the estimator's own model over the group-level folds, each
    fold fitted on the encoded training rows with their groups."""
    base = clone(estimator)
    if data["n_classes"] is not None:
        base.set_params(classes=np.arange(data["n_classes"]))
    emb, y = data["across"], data["y"]
    width = () if data["n_classes"] is None else (data["n_classes"],)
    out = np.zeros((len(y), *width))
    for train, test in folds:
        fitted = clone(base).fit(emb[train], y[train], groups=groups[train])
        out[test] = fitted.output(emb[test])
    return out
