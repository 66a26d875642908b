"""Early fusion: one head over the balanced, standardized concatenation of all blocks."""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted

from toolkit.embeddings import Embeddings
from toolkit.fusion.base import BaseFusion, BlockScaler, drop_modalities


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
        The head. Default: ``LogisticRegression(C=1.0)`` for classification,
        ``Ridge(alpha=1.0)`` for regression. With ``balance=True`` the 1/sqrt(d_m)
        weights make this strongly regularized (effectively C / d_m per block), which
        keeps the weights of uninformative blocks small, so they get little credit in
        explanations; pass e.g. ``LogisticRegressionCV()`` to tune it for accuracy.
    balance : bool, default=True
        Weight each standardized block by 1/sqrt(d_m), so every modality enters with
        the same total variance.
    indicators : bool, default=True
        Append one availability indicator per modality.
    modality_dropout : float in [0, 1), default=0.0
        When > 0, the training set is augmented with a copy of every row in which each
        available modality is hidden with this probability (one modality always kept),
        so that the head learns what to predict without a modality.
    random_state : int, RandomState or None
        Seeds the modality dropout and, when it has one, the head.

    Attributes
    ----------
    estimator_ : fitted head
    scaler_ : BlockScaler
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
        "random_state": ["random_state"],
    }

    def __init__(
        self, estimator=None, balance=True, indicators=True, modality_dropout=0.0, random_state=None
    ):
        self.estimator = estimator
        self.balance = balance
        self.indicators = indicators
        self.modality_dropout = modality_dropout
        self.random_state = random_state

    def _design(self, emb: Embeddings) -> np.ndarray:
        blocks = self.scaler_.transform(emb)
        parts = [blocks[n] for n in emb.names]
        if self.indicators:
            parts.append(emb.mask.astype(np.float64))
        return np.hstack(parts)

    def fit(self, emb: Embeddings, y, n_classes=None, groups=None):
        """Fit the head on ``emb`` (see :class:`BaseFusion` for ``y``, ``n_classes`` and
        ``groups``)."""
        self._validate_params()
        y = self._setup(emb, y, n_classes)
        self.scaler_ = BlockScaler().fit(emb, balance=self.balance)
        X = self._design(emb)
        if self.modality_dropout > 0:
            rng = check_random_state(self.random_state)
            uniform = rng.random_sample(emb.mask.shape)
            dropped = emb.with_mask(drop_modalities(emb.mask, uniform, self.modality_dropout))
            X = np.vstack([X, self._design(dropped)])
            y = np.concatenate([y, y])
        head = self._make_head(self.estimator)
        self.estimator_ = head.fit(X, y)
        if self.is_classifier_:
            self.class_columns_ = np.searchsorted(
                np.arange(self.n_classes_), self.estimator_.classes_
            )
        return self

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
