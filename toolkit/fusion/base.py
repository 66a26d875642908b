"""Base class of the fusion strategies and the per-block standardization they share."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from toolkit.embeddings import Embeddings


class BlockScaler:
    """Per-modality standardization learned on the rows where the modality is present.

    ``transform`` returns standardized float64 blocks in which absent rows hold 0 (the training
    mean), each optionally weighted by 1/sqrt(d_m) so that every modality enters with
    the same total variance whatever its width.
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
            self.mean_[name], self.scale_[name] = mean.astype(np.float32), std.astype(np.float32)
            self.weight_[name] = 1.0 / np.sqrt(rows.shape[1]) if balance else 1.0
        return self

    def transform(self, emb: Embeddings) -> dict[str, np.ndarray]:
        if emb.names != self.names_:
            raise ValueError(f"fitted on modalities {self.names_}, got {emb.names}")
        out = {}
        for m, name in enumerate(emb.names):
            z = (emb.blocks[name] - self.mean_[name]) / self.scale_[name] * self.weight_[name]
            z = np.where(emb.mask[:, m : m + 1], z, 0.0).astype(np.float64)
            out[name] = z
        return out


def drop_modalities(mask: np.ndarray, rate: float, rng: np.random.RandomState) -> np.ndarray:
    """Randomly hide available modalities with probability ``rate``, keeping one per row."""
    drop = (rng.random_sample(mask.shape) < rate) & mask
    new = mask & ~drop
    empty = ~new.any(axis=1) & mask.any(axis=1)
    for i in np.flatnonzero(empty):  # restore one available modality
        new[i, rng.choice(np.flatnonzero(mask[i]))] = True
    return new


class BaseFusion(BaseEstimator):
    """A fusion strategy: ``fit(embeddings, y, n_classes=...)`` and ``predict_output``.

    ``y`` holds integer class codes 0..K-1 when ``n_classes=K`` (classification) and
    floats when ``n_classes=None`` (regression). ``predict_output`` returns class
    probabilities of shape (n_samples, K), or predictions of shape (n_samples,).
    Rows where the mask hides a modality are treated as having it absent.
    """

    def _setup(self, emb: Embeddings, y, n_classes):
        if not isinstance(emb, Embeddings):
            raise TypeError(f"fusion strategies take Embeddings, got {type(emb).__name__}")
        self.modality_names_ = list(emb.names)
        self.n_classes_ = n_classes
        y = np.asarray(y)
        if n_classes is not None:
            self.prior_ = np.bincount(y.astype(int), minlength=n_classes) / len(y)
        else:
            self.prior_ = np.array([float(np.mean(y))])
        return y

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
