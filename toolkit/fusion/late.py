"""Late fusion: one head per modality, combined over the modalities each row has."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from toolkit._utils import check_random_state_seed, seed_if_unset
from toolkit.embeddings import Embeddings
from toolkit.fusion._heads import _log_loss
from toolkit.fusion.base import BaseFusion, BlockScaler
from toolkit.model_selection import inner_folds

_EPS = 1e-6


class LateFusion(BaseFusion):
    """One head per modality, then a combination over the available modalities only.

    Parameters
    ----------
    estimator : scikit-learn estimator, default=None
        Per-modality head. Default: a ``LogisticRegression`` (classification) or ``Ridge``
        (regression) whose strength is chosen per modality by inner cross-validation on
        the training rows (``cv`` folds, whole groups per fold when ``groups`` is given):
        the most regularized value of ``C`` (or ``alpha``) whose held-out log loss (squared
        error) lies within one standard error of the best (``head_params_``). A given
        estimator is used as it is.
    combine : {"stacking", "weighted", "mean"}, default="stacking"
        ``"stacking"``: a meta-learner is fitted on out-of-fold predictions of the
        heads (as scikit-learn's ``StackingClassifier`` does). Its inputs are each head's
        evidence relative to the prior, log p_m(k) - log prior(k) (binary: the log-odds
        shift; regression: prediction - training mean), which is 0 for an absent
        modality, so a row is combined over the modalities it has. ``"weighted"``:
        heads are averaged with weights proportional to their out-of-fold skill
        (1 - log loss / prior log loss; regression: R²), renormalized over the available
        modalities. ``"mean"``: plain average of the available heads.
    meta_estimator : scikit-learn estimator, default=None
        Stacking meta-learner. Default: ``LogisticRegression(C=1.0)`` for
        classification, ``LinearRegression(positive=True)`` for regression; for
        classification on folds of whole groups (``groups`` given, or pseudo-groups found
        without them), the stacker :func:`toolkit.fusion._stacking.fit_stacker` chooses
        instead: equal weights (each head's calibrated evidence counted once, one intercept
        per class) unless one weight per modality (w_m >= 0) or the full
        ``LogisticRegression(C=1)`` has a mean held-out log loss on the same folds lower by
        more than one standard error of the per-fold differences (``stacker_``). A few
        training groups, or clusters that recover people only in part, are too little
        evidence to learn many stacking weights from. On row-level folds the full
        ``LogisticRegression(C=1)`` is used as before.
    balance : bool, default=True
        Weight each standardized block by 1/sqrt(d_m) before its head, which scales the
        head's effective regularization with the block's width (a 400-feature image
        block is regularized more than a 10-feature table), so wide blocks do not
        overfit small training sets.
    calibration : {"auto", "isotonic"} or None, default="auto"
        Classification: map each head's probabilities through a (smoothed) isotonic
        calibration learned from its out-of-fold probabilities before they are combined.
        A head that is right 80% of the time however sure it looks then says 0.8, so the
        stacker can learn to count votes instead of following the most overconfident head.
        The stacker learns from calibrated out-of-fold outputs whose maps were fitted on
        the other folds. ``"auto"`` keeps a modality's calibration only when it lowers
        that head's held-out log loss (many classes and few rows per class can make it
        worse); ``"isotonic"`` always calibrates; None never does.
    cv : int, default=5
        Folds for the inner choice of regularization and for the out-of-fold predictions
        (reduced when a class is rare or the groups are few).
    pseudo_groups : bool, default=True
        When ``fit`` gets no ``groups``, keep clusters of similar rows within each class
        (:func:`toolkit.fusion.base.pseudo_groups`) on one side of every inner split: the
        heads' regularization, the calibration and the stacker then learn how far each
        modality's evidence holds on rows unlike its training rows, not on near-copies of
        them (a modality that recognizes speakers looks near-perfect in row-level CV and
        fails on new speakers). False: row-level inner splits.
    random_state : int, RandomState or None
        Seeds the fold shuffling and the heads that take a seed.

    Attributes
    ----------
    estimators_ : dict of str to fitted head
    head_params_ : dict of str to float or None
        The ``C`` (or ``alpha``) chosen for each modality's head (None for a given head).
    calibrators_ : dict of str to list of IsotonicRegression
    meta_estimator_ : fitted meta-learner (stacking)
    stacker_ : {"equal", "weighted", "full"} or None
        The stacker the rule chose on the grouped inner folds (None: row-level folds, a
        given ``meta_estimator``, or regression).
    stacker_scores_ : dict of str to float or None
        Mean held-out log loss of each stacker on the grouped inner folds.
    prior_rule_ : bool
        Whether the inner splits used pseudo-groups (inferred here, or passed inside
        :func:`toolkit.fusion.base.groups_inferred`); the stacker rule runs on given groups
        too (``stacker_``).
    weights_ : ndarray of shape (n_modalities,) (weighted)
    n_pseudo_groups_ : int or None
        Number of inferred groups the inner splits used (None: ``groups`` given, or none
        inferred).
    prior_ : ndarray

    Examples
    --------
    >>> import numpy as np
    >>> from toolkit import Embeddings, LateFusion
    >>> rng = np.random.default_rng(0)
    >>> emb = Embeddings({"a": rng.normal(size=(60, 2)), "b": rng.normal(size=(60, 3))})
    >>> y = (emb.blocks["a"][:, 0] > 0).astype(int)
    >>> LateFusion(random_state=0).fit(emb, y, n_classes=2).predict_output(emb).shape
    (60, 2)
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "predict"]), None],
        "combine": [StrOptions({"stacking", "weighted", "mean"})],
        "meta_estimator": [HasMethods(["fit", "predict"]), None],
        "balance": ["boolean"],
        "calibration": [StrOptions({"auto", "isotonic"}), None],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "pseudo_groups": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        estimator=None,
        combine="stacking",
        meta_estimator=None,
        balance=True,
        calibration="auto",
        cv=5,
        pseudo_groups=True,
        random_state=None,
    ):
        self.estimator = estimator
        self.combine = combine
        self.meta_estimator = meta_estimator
        self.balance = balance
        self.calibration = calibration
        self.cv = cv
        self.pseudo_groups = pseudo_groups
        self.random_state = random_state

    # -- heads -------------------------------------------------------------------------

    def _head_output(self, name: str, X: np.ndarray) -> np.ndarray:
        """Full-width (calibrated) probabilities (n, K) or predictions (n,) of a fitted head."""
        from toolkit.fusion._heads import _output, calibrate

        head = self.estimators_[name]
        out = _output(head, X, self.n_classes_ if self.is_classifier_ else None)
        maps = getattr(self, "calibrators_", {}).get(name)
        return calibrate(maps, out) if maps else out

    def _evidence(self, outputs: np.ndarray) -> np.ndarray:
        """Head outputs -> stacking features, 0 meaning 'no evidence beyond the prior'."""
        if not self.is_classifier_:
            return (outputs - self._scaled_prior())[:, None]
        logp = np.log(np.clip(outputs, _EPS, 1.0)) - np.log(np.clip(self.prior_, _EPS, 1.0))
        if self.n_classes_ == 2:
            return (logp[:, 1] - logp[:, 0])[:, None]
        return logp

    # -- fit / predict -------------------------------------------------------------------

    def fit(self, emb: Embeddings, y, n_classes=None, groups=None):
        """Fit one head per modality on its available rows, then the combiner; with
        ``groups``, the out-of-fold predictions the combiner learns from keep each group in
        one fold."""
        from threadpoolctl import threadpool_limits

        # many small solves (heads, calibration, stacker): one BLAS thread each is faster
        # than a pool whose threads spin, and far faster when other processes share the cores
        with threadpool_limits(limits=1, user_api="blas"):
            return self._fit(emb, y, n_classes, groups)

    def _fit(self, emb: Embeddings, y, n_classes, groups):
        from toolkit.model_selection import check_groups

        groups = check_groups(groups, len(np.asarray(y)))
        self._validate_params()
        y = self._setup(emb, y, n_classes)
        self.seed_ = check_random_state_seed(self.random_state)
        self.scaler_ = BlockScaler().fit(emb, balance=self.balance)
        blocks = self.scaler_.transform(emb)
        groups = self._inner_groups(emb, y, groups, self.seed_)
        from toolkit.fusion._heads import cross_calibrate, fit_calibrators, fit_head

        self.estimators_, self.head_params_, self.calibrators_ = {}, {}, {}
        oof = {}
        calibrated = self.is_classifier_ and self.calibration is not None
        for m, name in enumerate(emb.names):
            rows = emb.mask[:, m]
            X, ym = blocks[name][rows], y[rows]
            gm = None if groups is None else groups[rows]
            fitted = fit_head(
                X,
                ym,
                n_classes=self.n_classes_,
                groups=gm,
                cv=self.cv,
                seed=self.seed_,
                estimator=None if self.estimator is None else self._make_head(self.estimator),
                need_oof=self.combine != "mean" or calibrated,
            )
            self.estimators_[name], self.head_params_[name] = fitted.head, fitted.param
            out = fitted.oof
            if calibrated:
                folds = inner_folds(ym, gm, self.cv, True, self.seed_)
                held_out = cross_calibrate(out, ym, folds)
                # "auto": keep the calibration only where it lowers the held-out log loss
                if self.calibration == "isotonic" or _log_loss(held_out, ym) < _log_loss(out, ym):
                    self.calibrators_[name] = fit_calibrators(out, ym)
                    out = held_out
            if self.combine != "mean":
                oof[name] = (rows, out)
        if self.combine == "stacking":
            feats = self._stack_features_from(
                {n: (r, self._evidence(o)) for n, (r, o) in oof.items()}, emb.n_samples
            )
            self._fit_stacker(feats, y, groups)
            if self.is_classifier_:
                self.meta_columns_ = self.meta_estimator_.classes_.astype(int)
        elif self.combine == "weighted":
            self.weights_ = np.array([self._skill(o, y[r]) for r, o in oof.values()])
        return self

    def _fit_stacker(self, feats: np.ndarray, y: np.ndarray, groups) -> None:
        """Fit ``meta_estimator_``; by default (classification) the stacker that
        :func:`toolkit.fusion._stacking.fit_stacker` chooses on the inner folds when they
        keep whole groups (``groups``: given or inferred); row-level folds keep the full
        ``LogisticRegression(C=1)``."""
        from sklearn.linear_model import LinearRegression, LogisticRegression

        self.stacker_, self.stacker_scores_ = None, None
        if self.meta_estimator is not None or not self.is_classifier_ or groups is None:
            meta = self.meta_estimator
            if meta is None:
                meta = (
                    LogisticRegression(C=1.0, max_iter=2000)
                    if self.is_classifier_
                    else LinearRegression(positive=True)
                )
            self.meta_estimator_ = seed_if_unset(clone(meta), self.seed_).fit(feats, y)
            return
        from toolkit.fusion._stacking import fit_stacker

        folds = inner_folds(y, groups, self.cv, True, self.seed_)
        self.meta_estimator_, self.stacker_, self.stacker_scores_ = fit_stacker(
            feats, y, self.n_classes_, len(self.estimators_), folds, self.seed_
        )

    def _skill(self, outputs: np.ndarray, y: np.ndarray) -> float:
        if self.is_classifier_:
            ll = -np.mean(np.log(np.clip(outputs[np.arange(len(y)), y.astype(int)], _EPS, 1.0)))
            prior_ll = -np.mean(np.log(np.clip(self.prior_[y.astype(int)], _EPS, 1.0)))
            skill = 1.0 - ll / max(prior_ll, _EPS)
        else:
            var = np.var(y)
            skill = 1.0 - np.mean((outputs - y) ** 2) / var if var > 0 else 0.0
        return float(max(skill, 0.0)) + 1e-3

    def _stack_features_from(self, evidence: dict, n: int) -> np.ndarray:
        width = next(iter(evidence.values()))[1].shape[1]
        feats = np.zeros((n, width * len(evidence)))
        for m, (rows, ev) in enumerate(evidence.values()):
            feats[rows, m * width : (m + 1) * width] = ev
        return feats

    def predict_output(self, emb: Embeddings) -> np.ndarray:
        """Combined class probabilities (n_samples, n_classes) or predictions (n_samples,)."""
        check_is_fitted(self, "estimators_")
        blocks = self.scaler_.transform(emb)
        outputs = {}
        for m, name in enumerate(emb.names):
            rows = emb.mask[:, m]
            outputs[name] = (
                rows,
                self._head_output(name, blocks[name][rows]) if rows.any() else None,
            )
        if self.combine == "stacking":
            evidence = {
                n: (r, self._evidence(o) if o is not None else np.zeros((0, 1)))
                for n, (r, o) in outputs.items()
            }
            width = 1 if (not self.is_classifier_ or self.n_classes_ == 2) else self.n_classes_
            evidence = {
                n: (r, ev if ev.shape[0] else np.zeros((0, width)))
                for n, (r, ev) in evidence.items()
            }
            feats = self._stack_features_from(evidence, emb.n_samples)
            if not self.is_classifier_:
                return self._unscale(self.meta_estimator_.predict(feats))
            proba = np.zeros((emb.n_samples, self.n_classes_))
            proba[:, self.meta_columns_] = self.meta_estimator_.predict_proba(feats)
            return proba
        weights = self.weights_ if self.combine == "weighted" else np.ones(len(emb.names))
        shape = (emb.n_samples, self.n_classes_) if self.is_classifier_ else (emb.n_samples,)
        total = np.zeros(shape)
        norm = np.zeros(emb.n_samples)
        for m, (rows, out) in enumerate(outputs.values()):
            if out is None:
                continue
            total[rows] += weights[m] * out
            norm[rows] += weights[m]
        empty = norm == 0
        norm[empty] = 1.0
        total = total / (norm[:, None] if total.ndim == 2 else norm)
        if self.is_classifier_:
            total[empty] = self.prior_
            return total
        total[empty] = self._scaled_prior()
        return self._unscale(total)
