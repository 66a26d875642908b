"""Early fusion: one head over the balanced, standardized concatenation of all blocks."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted

from toolkit.embeddings import Embeddings
from toolkit.fusion.base import BaseFusion, BlockScaler, drop_modalities

#: Standard errors by which the tuned design must beat the prior (see ``choice_``).
EARLY_N_SE = 0.0


class EarlyFusion(BaseFusion):
    """Concatenate standardized modality blocks (plus availability indicators) into one head.

    Each block is standardized on the training rows where it is present; an absent
    block is imputed with the training mean (0 after standardization) and flagged by
    its availability indicator. With ``balance=True`` every block is weighted by
    1/sqrt(d_m) so that each modality enters with the same total variance:
    without it, a wide noisy block (e.g. 256 image features) can outweigh a narrow
    informative one (e.g. 1 audio feature) through many small weights.

    Parameters
    ----------
    estimator : scikit-learn estimator, default=None
        The head. Default: a ``LogisticRegression`` (classification) or ``Ridge``
        (regression) whose strength is chosen by inner cross-validation on the training
        rows (``cv`` folds; whole groups per fold when ``groups`` is given): the most
        regularized ``C`` (``alpha``) whose held-out log loss (squared error) lies within
        one standard error of the best (``head_param_``). Choosing the strongest
        regularization the data allow keeps the weights of uninformative blocks small, so
        they get little credit in explanations. A given estimator is used as it is.

        On folds of whole groups (``groups`` given, or pseudo-groups found), a classifier's
        tuned head is compared on the same folds with the untuned prior,
        ``LogisticRegression()`` (C=1) on the plain standardized blocks (no balance, no block
        scales: the untuned concatenation baseline), and kept only where its mean held-out
        log loss is lower (``choice_``): a design tuned on a few groups, or on clusters that
        recover people only in part, can over-trust a person-specific block. On row-level
        folds, and for regression, the tuned head is used as before.
    balance : bool, default=True
        Weight each standardized block by 1/sqrt(d_m), so every modality enters with
        the same total variance.
    indicators : bool, default=True
        Append one availability indicator per modality.
    modality_dropout : float in [0, 1), default=0.0
        When > 0, the training set is augmented with a copy of every row in which each
        available modality is hidden with this probability (one modality always kept),
        so that the head learns what to predict without a modality.
    cv : int, default=5
        Inner folds for choosing the head's regularization.
    pseudo_groups : bool, default=True
        When ``fit`` gets no ``groups``, keep clusters of similar rows within each class
        (:func:`toolkit.fusion.base.pseudo_groups`) on one side of every inner split, so
        that the block scales and the regularization are not chosen by a row-level CV that
        a person-specific modality (one that recognizes speakers or patients) inflates.
        False: row-level inner splits.
    random_state : int, RandomState or None
        Seeds the modality dropout, the inner folds and, when it has one, the head.

    Attributes
    ----------
    estimator_ : fitted head
    head_param_ : float or None
        The chosen ``C`` (or ``alpha``); None for a given estimator.
    block_params_ : dict of str to float
        With the default head and several modalities: the strength ``C`` (``1 / alpha``
        for regression) inner CV chooses for a head on each block alone.
    block_scales_ : dict of str to float or None
        sqrt(C_m / max C): each block's multiplier in the joint design, so the joint head
        regularizes a block as its own evidence warrants (an adaptive ridge). A block with
        no signal of its own is shrunk towards 0 and gets little Shapley credit.
    scaler_ : BlockScaler
    choice_ : {"prior", "tuned"} or None
        Which head the comparison kept (None: no comparison; the tuned head).
        With "prior", ``block_scales_`` undo the balance, ``head_param_`` is 1.0 and the
        availability indicators are centred on their training means (``indicator_mean_``).
    choice_scores_ : dict of str to float or None
        Mean held-out log loss of the prior and the tuned head on the grouped inner folds.
    prior_rule_ : bool
        Whether the inner splits used pseudo-groups (the no-groups rule applied).
    n_pseudo_groups_ : int or None
        Number of inferred groups the inner splits used (None: ``groups`` given, or none
        inferred).
    prior_ : ndarray
        Training class frequencies (classification) or target mean (regression).

    Examples
    --------
    >>> import numpy as np
    >>> from toolkit import EarlyFusion, Embeddings
    >>> rng = np.random.default_rng(0)
    >>> emb = Embeddings({"a": rng.normal(size=(40, 2)), "b": rng.normal(size=(40, 3))})
    >>> y = (emb.blocks["a"][:, 0] > 0).astype(int)
    >>> EarlyFusion().fit(emb, y, n_classes=2).predict_output(emb).shape
    (40, 2)
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "predict"]), None],
        "balance": ["boolean"],
        "indicators": ["boolean"],
        "modality_dropout": [Interval(Real, 0.0, 1.0, closed="left")],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "pseudo_groups": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        estimator=None,
        balance=True,
        indicators=True,
        modality_dropout=0.0,
        cv=5,
        pseudo_groups=True,
        random_state=None,
    ):
        self.estimator = estimator
        self.cv = cv
        self.balance = balance
        self.indicators = indicators
        self.modality_dropout = modality_dropout
        self.pseudo_groups = pseudo_groups
        self.random_state = random_state

    def _design(self, emb: Embeddings) -> np.ndarray:
        blocks = self.scaler_.transform(emb)
        scales = getattr(self, "block_scales_", None) or {}
        parts = [blocks[n] * scales.get(n, 1.0) for n in emb.names]
        if self.indicators:
            # centred on the training rows' availability: an indicator that is constant in
            # training adds a column of zeros (the intercept carries the rest, unpenalized)
            parts.append(emb.mask.astype(np.float64) - getattr(self, "indicator_mean_", 0.0))
        return np.hstack(parts)

    def _block_scales(self, emb: Embeddings, y, groups, seed) -> dict[str, float]:
        """Per-block scales sqrt(C_m / max C): C_m is the strength inner CV chooses for a
        head on block m alone (rows where it is present).

        Scaling block m by s_m multiplies its effective regularization by 1 / s_m^2, so the
        joint head regularizes each block as its own evidence warrants (an adaptive
        ridge): a block with no signal of its own (C_m at the grid's strongest) is shrunk
        towards 0 and keeps little Shapley credit, whatever the joint strength chosen next.
        """
        from toolkit.fusion._heads import fit_head

        blocks = self.scaler_.transform(emb)
        params = {}
        for m, name in enumerate(emb.names):
            rows = emb.mask[:, m]
            fitted = fit_head(
                blocks[name][rows],
                y[rows],
                n_classes=self.n_classes_,
                groups=None if groups is None else groups[rows],
                cv=self.cv,
                seed=seed,
                need_oof=False,
            )
            # regression heads choose a penalty alpha (the inverse of a strength C)
            params[name] = fitted.param if self.is_classifier_ else 1.0 / fitted.param
        top = max(params.values())
        self.block_params_ = params
        return {name: float(np.sqrt(p / top)) for name, p in params.items()}

    def fit(self, emb: Embeddings, y, n_classes=None, groups=None):
        """Fit the head on ``emb`` (see :class:`BaseFusion` for ``y``, ``n_classes`` and
        ``groups``)."""
        from threadpoolctl import threadpool_limits

        # many small solves (heads, calibration, stacker): one BLAS thread each is faster
        # than a pool whose threads spin, and far faster when other processes share the cores
        with threadpool_limits(limits=1, user_api="blas"):
            return self._fit(emb, y, n_classes, groups)

    def _fit(self, emb: Embeddings, y, n_classes, groups):
        from toolkit._utils import check_random_state_seed
        from toolkit.model_selection import check_groups

        self._validate_params()
        y = self._setup(emb, y, n_classes)
        groups = check_groups(groups, len(y))
        self.scaler_ = BlockScaler().fit(emb, balance=self.balance)
        seed = check_random_state_seed(self.random_state)
        groups = self._inner_groups(emb, y, groups, seed)
        self.block_scales_, self.choice_, self.choice_scores_ = None, None, None
        self.indicator_mean_ = 0.0
        if self.estimator is None and emb.n_modalities > 1:
            self.block_scales_ = self._block_scales(emb, y, groups, seed)
        # the prior is compared on folds of whole groups (given or inferred), never on
        # row-level folds, which reward a block that memorizes people
        compare = groups is not None and self.is_classifier_
        views = [emb]
        if self.modality_dropout > 0:
            rng = check_random_state(self.random_state)
            uniform = rng.random_sample(emb.mask.shape)
            views.append(emb.with_mask(drop_modalities(emb.mask, uniform, self.modality_dropout)))
            y = np.concatenate([y, y])
            # a row and its copy with modalities hidden stay in one inner fold
            base = np.arange(emb.n_samples) if groups is None else groups
            groups = np.concatenate([base, base])
        if self.estimator is None:
            self._fit_default_head(views, y, groups, seed, compare)
        else:
            X = np.vstack([self._design(v) for v in views])
            self.estimator_, self.head_param_ = self._make_head(self.estimator).fit(X, y), None
        if self.is_classifier_:
            self.class_columns_ = np.searchsorted(
                np.arange(self.n_classes_), self.estimator_.classes_
            )
        return self

    def _prior_scales(self, emb: Embeddings) -> dict[str, float]:
        """Block multipliers that undo ``balance``: the plain standardized concatenation."""
        return {
            name: 1.0 / self.scaler_.weight_[name] if self.balance else 1.0 for name in emb.names
        }

    def _fit_default_head(self, views: list, y, groups, seed: int, compare: bool) -> None:
        """The default head: the tuned design (balance, block scales, a one-SE strength).
        With ``compare`` (classification on folds of whole groups, given or inferred), the
        untuned prior, ``LogisticRegression()`` on the plain standardized blocks, unless the
        tuned design's mean held-out log loss on the same folds is lower (``choice_``,
        ``choice_scores_``)."""
        from toolkit.fusion._heads import (
            fit_head,
            prior_head,
            prior_losses,
            prior_unless_clearly_better,
        )
        from toolkit.model_selection import inner_folds

        X = np.vstack([self._design(v) for v in views])
        n_classes = self.n_classes_
        fitted = fit_head(X, y, n_classes=n_classes, groups=groups, cv=self.cv, seed=seed,
                          need_oof=False)  # fmt: skip
        self.estimator_, self.head_param_ = fitted.head, fitted.param
        if not compare:  # row-level folds or regression: the tuned head, as before
            return
        tuned_scales, self.block_scales_ = self.block_scales_, self._prior_scales(views[0])
        self.indicator_mean_ = views[0].mask.mean(axis=0)
        X_prior = np.vstack([self._design(v) for v in views])
        folds = inner_folds(y, groups, self.cv, self.is_classifier_, seed)
        self.choice_ = "prior"
        if folds is not None and len(fitted.grid):
            tuned = np.asarray(fitted.scores)[list(fitted.grid).index(fitted.param)]
            losses = {"prior": prior_losses(X_prior, y, n_classes, folds, seed), "tuned": tuned}
            sizes = np.array([len(test) for _, test in folds], dtype=float)
            self.choice_ = prior_unless_clearly_better(losses, "prior", sizes, EARLY_N_SE)
            w = sizes / sizes.sum()
            self.choice_scores_ = {name: float(v @ w) for name, v in losses.items()}
        if self.choice_ == "tuned":
            self.block_scales_, self.indicator_mean_ = tuned_scales, 0.0
        else:
            self.estimator_, self.head_param_ = prior_head(n_classes, seed).fit(X_prior, y), 1.0

    def predict_output(self, emb: Embeddings) -> np.ndarray:
        """Class probabilities (n_samples, n_classes) or predictions (n_samples,)."""
        check_is_fitted(self, "estimator_")
        X = self._design(emb)
        if not self.is_classifier_:
            return self._unscale(self.estimator_.predict(X))
        proba = np.zeros((emb.n_samples, self.n_classes_))
        proba[:, self.class_columns_] = self.estimator_.predict_proba(X)
        return proba

    def decision_function(self, emb: Embeddings) -> np.ndarray:
        """The head's decision function (for heads that have one)."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.decision_function(self._design(emb))
