"""Base class of the fusion strategies and the per-block standardization they share."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from toolkit.embeddings import Embeddings

#: Regression targets whose largest magnitude lies outside this range are divided by a power
#: of two before any head sees them, and predictions are multiplied back. Scaling by a power
#: of two is exact in binary floating point, so linear heads (the defaults) give the same
#: predictions as on the raw target, while squares and sums of the target (variances,
#: R^2, solver internals, float32 casts in heads) can no longer overflow or underflow.
TARGET_SAFE_RANGE = (2.0**-64, 2.0**64)


class BlockScaler:
    """Per-modality standardization learned on the rows where the modality is present.

    ``transform`` returns standardized float64 blocks in which absent rows hold 0 (the training
    mean), each optionally weighted by 1/sqrt(d_m) so that every modality enters with
    the same total variance whatever its width. Means, scales and the arithmetic are float64,
    so float32 blocks near their range limit (about 3.4e38) cannot overflow.
    """

    def fit(self, emb: Embeddings, balance: bool = False) -> BlockScaler:
        """Learn per-block means and scales; ``balance`` weights block m by 1/sqrt(d_m)."""
        self.names_ = list(emb.names)
        self.mean_, self.scale_, self.weight_ = {}, {}, {}
        for m, name in enumerate(emb.names):
            rows = emb.blocks[name][emb.mask[:, m]]
            if len(rows) == 0:
                raise ValueError(
                    f"modality '{name}' is missing in every training row; drop it from "
                    "modalities or provide data for it"
                )
            mean = rows.mean(axis=0, dtype=np.float64)
            std = rows.std(axis=0, dtype=np.float64)
            std[std < 1e-8] = 1.0
            self.mean_[name], self.scale_[name] = mean, std
            self.weight_[name] = 1.0 / np.sqrt(rows.shape[1]) if balance else 1.0
        return self

    def transform(self, emb: Embeddings) -> dict[str, np.ndarray]:
        if emb.names != self.names_:
            raise ValueError(f"fitted on modalities {self.names_}, got {emb.names}")
        out = {}
        for m, name in enumerate(emb.names):
            block = emb.blocks[name].astype(np.float64)
            z = (block - self.mean_[name]) / self.scale_[name] * self.weight_[name]
            z = np.where(emb.mask[:, m : m + 1], z, 0.0)
            out[name] = z
        return out


def _target_exponent(y: np.ndarray) -> int:
    """The power of two ``e`` to divide ``y`` by so that its largest magnitude lies in
    [0.5, 1), or 0 when it already lies in :data:`TARGET_SAFE_RANGE` (or is all zero)."""
    top = float(np.max(np.abs(y))) if y.size else 0.0
    low, high = TARGET_SAFE_RANGE
    if top == 0.0 or low <= top <= high:
        return 0
    return int(np.frexp(top)[1])


def drop_modalities(mask, uniform, rate: float):
    """Modality dropout: hide each available modality where ``uniform < rate``.

    ``mask`` is a boolean (n, M) numpy array or torch tensor and ``uniform`` draws of the same
    shape in [0, 1) from the caller's generator (numpy or torch), so every fusion shares one
    rule: a row that would lose every modality keeps them all.
    """
    kept = mask & ~((uniform < rate) & mask)
    none = ~kept.any(1)
    kept[none] = mask[none]
    return kept


class BaseFusion(BaseEstimator):
    """A fusion strategy: ``fit(embeddings, y, n_classes=...)`` and ``predict_output``.

    ``y`` holds integer class codes 0..K-1 when ``n_classes=K`` (classification) and
    floats when ``n_classes=None`` (regression). ``predict_output`` returns class
    probabilities of shape (n_samples, K), or predictions of shape (n_samples,).
    Rows where the mask hides a modality are treated as having it absent.

    A regression target must be finite; one whose largest magnitude lies outside
    :data:`TARGET_SAFE_RANGE` (2**-64 to 2**64) is divided by a power of two before the heads
    see it and the predictions are multiplied back (``target_exponent_``), which is exact
    for the default linear heads. Predictions that would not fit in float64 once mapped
    back raise an error that says to rescale the target; they are never returned as inf.
    """

    #: Attributes holding live torch objects: left out of a saved model's skops file.
    torch_attributes: tuple = ()

    # -- persistence protocol (toolkit.save / toolkit.load); no torch state by default ---

    def weight_parameters(self) -> tuple[str, ...]:
        """Names under which :meth:`save_weights` returns its files (none by default)."""
        return ()

    def save_weights(self, folder) -> dict[str, str] | None:
        """Write torch state under ``folder``; return ``{name: relative path}`` or None."""
        return None

    def expected_weights(self) -> dict[str, dict] | None:
        """``{tensor: {"dtype", "shape"}}`` the saved state must match (meta device)."""
        return None

    def load_weights(self, paths: dict[str, str]) -> None:
        """Restore the torch state from ``paths`` (absolute, checked by the caller)."""
        raise ValueError(f"{type(self).__name__} holds no torch state to load")

    def _setup(self, emb: Embeddings, y, n_classes):
        if not isinstance(emb, Embeddings):
            raise TypeError(f"fusion strategies take Embeddings, got {type(emb).__name__}")
        self.modality_names_ = list(emb.names)
        self.n_classes_ = n_classes
        y = np.asarray(y)
        if n_classes is not None:
            self.prior_ = np.bincount(y.astype(int), minlength=n_classes) / len(y)
            return y
        if y.dtype.kind not in "biuf":
            raise TypeError(
                f"a regression target must hold real numbers, got dtype {y.dtype}; convert it "
                "to float first"
            )
        y = y.astype(np.float64)
        bad = ~np.isfinite(y)
        if bad.any():
            raise ValueError(
                f"the target holds NaN or infinite values at positions "
                f"{np.flatnonzero(bad)[:10].tolist()}; drop or fix those rows"
            )
        self.target_exponent_ = _target_exponent(y)
        y = np.ldexp(y, -self.target_exponent_)
        self.prior_ = np.array([float(np.ldexp(np.mean(y), self.target_exponent_))])
        return y

    def _scaled_prior(self) -> float:
        """The training target mean in the units the heads were fitted in."""
        return float(np.ldexp(self.prior_[0], -getattr(self, "target_exponent_", 0)))

    def _unscale(self, pred) -> np.ndarray:
        """Predictions in the heads' units -> the target's units; refuses non-finite ones."""
        pred = np.asarray(pred, dtype=np.float64)
        bad = ~np.isfinite(pred)
        if bad.any():
            raise ValueError(
                f"{type(self).__name__}'s head produced NaN or infinite predictions for rows "
                f"{np.flatnonzero(bad)[:10].tolist()}; check the embeddings of those rows and "
                "the head's parameters"
            )
        with np.errstate(over="ignore"):
            out = np.ldexp(pred, getattr(self, "target_exponent_", 0))
        bad = ~np.isfinite(out)
        if bad.any():
            raise ValueError(
                f"the predictions for rows {np.flatnonzero(bad)[:10].tolist()} exceed the "
                "float64 range (about +-1.8e308) in the target's units: the training target "
                "lies too close to that limit; rescale it (e.g. divide y by 1e300, or take a "
                "log) before fitting and scale the predictions back"
            )
        return out

    def _make_head(self, estimator):
        """A clone of ``estimator`` seeded with ``random_state``; by default a linear model:
        ``LogisticRegression(C=1.0)`` (classification) or ``Ridge(alpha=1.0)`` (regression)."""
        from sklearn.base import clone
        from sklearn.linear_model import LogisticRegression, Ridge

        from toolkit._utils import seed_if_unset

        if estimator is None:
            head = (
                LogisticRegression(C=1.0, max_iter=2000)
                if self.is_classifier_
                else Ridge(alpha=1.0)
            )
        else:
            head = clone(estimator)
        return seed_if_unset(head, self.random_state)

    @property
    def is_classifier_(self) -> bool:
        return self.n_classes_ is not None

    def predict_output(self, emb: Embeddings) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError
