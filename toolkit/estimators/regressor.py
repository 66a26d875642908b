""":class:`MultimodalRegressor`: encoders + a fusion strategy, for a continuous target."""

from __future__ import annotations

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score

from toolkit.embeddings import Embeddings
from toolkit.estimators.base import _MultimodalBase
from toolkit.estimators.checks import _check_target


class MultimodalRegressor(RegressorMixin, _MultimodalBase):
    """Regress a continuous target (e.g. a sentiment score in [-3, 3]) from several modalities.

    Same parameters and behaviour as :class:`MultimodalClassifier`; ``prior_`` holds the
    training target mean. The target may have any finite magnitude: the fusion strategies
    rescale it by a power of two when needed (exact, see :class:`toolkit.fusion.BaseFusion`),
    and a prediction that would not fit in float64 raises an error instead of being inf.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from toolkit import MultimodalRegressor, TabularEncoder
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"x": rng.normal(size=100), "z": rng.normal(size=100)})
    >>> y = 2 * df["x"].to_numpy()
    >>> reg = MultimodalRegressor(
    ...     modalities=[("a", TabularEncoder(), ["x"]), ("b", TabularEncoder(), ["z"])],
    ...     fusion="late", random_state=0).fit(df, y)
    >>> round(reg.score(df, y), 2)
    1.0
    """

    #: Saved models (``toolkit.save``) and pickles name the class by this path, which
    #: ``toolkit.estimators`` re-exports: the split into modules changed no saved name.
    __module__ = "toolkit.estimators"

    def fit(self, X, y, groups=None):
        """Encode every modality once and fit the fusion strategy on a numeric target.

        ``groups`` (one label per row) keeps each group on one side of every split the
        fusion makes inside ``fit``; see :meth:`MultimodalClassifier.fit`.
        """
        self._validate_params()
        df = X if isinstance(X, Embeddings) else self._frame(X, reset=True)
        y, groups = self._aligned(X, y, groups)
        return self._fit(df, self._fit_target(y), n_classes=None, groups=groups)

    def _fit_target(self, y) -> np.ndarray:
        """The checked numeric target."""
        return _check_target(y)

    def predict(self, X) -> np.ndarray:
        """Predicted target of each row, shape (n_samples,)."""
        return self._output(self.embed(X))

    def score(self, X, y, sample_weight=None) -> float:
        """R² of ``predict(X)`` against ``y``.

        Computed after dividing both by the same power of two when they lie outside
        :data:`toolkit.fusion.base.TARGET_SAFE_RANGE` (exact; R² does not depend on the
        unit), so targets near the float64 limits get their R² instead of NaN.
        """
        from toolkit.fusion.base import target_exponent  # imports torch: on first use

        y = _check_target(self._aligned(X, y)[0])
        pred = self.predict(X)
        e = target_exponent(np.concatenate([y, pred]))
        return float(r2_score(np.ldexp(y, -e), np.ldexp(pred, -e), sample_weight=sample_weight))
