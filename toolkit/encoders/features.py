"""Encoder for precomputed feature vectors and sequences (e.g. MMSA's COVAREP / FACET / BERT features)."""

from __future__ import annotations

import numpy as np

from toolkit._utils import describe_item
from toolkit.encoders.base import BaseEncoder
from toolkit.exceptions import ReadError

_POOLS = {"mean", "std", "max", "min", "last"}


class FeatureEncoder(BaseEncoder):
    """Pool precomputed per-row features into a fixed-width block.

    Each cell holds a vector of shape (d,) or a sequence of shape (T, d) (frames or
    tokens). Sequences are pooled over time with each statistic in ``pooling``; rows
    that are all zero (padding, as in MMSA's feature files) are ignored, and a
    sequence with no non-padding frame is treated as missing.

    Parameters
    ----------
    pooling : tuple of {"mean", "std", "max", "min", "last"}, default=("mean", "std")
    batch_size : int, default=256
    on_error : {"raise", "missing"}, default="raise"
    progress : bool, default=True

    Attributes
    ----------
    n_features_out_ : int
    input_dim_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from toolkit.encoders.features import FeatureEncoder
    >>> seqs = [np.ones((5, 3)), np.zeros((4, 3)), None]
    >>> FeatureEncoder().fit(seqs).encode(seqs)[1].tolist()
    [True, False, False]
    """

    modality = "features"
    _parameter_constraints = {
        **BaseEncoder._parameter_constraints,
        "pooling": [tuple, list],
    }

    def __init__(self, pooling=("mean", "std"), batch_size=256, on_error="raise", progress=True):
        self.pooling = pooling
        self.batch_size = batch_size
        self.on_error = on_error
        self.progress = progress

    def _needs_fit_items(self) -> bool:
        return True

    def _read(self, item):
        arr = np.asarray(item, dtype=np.float32) if not isinstance(item, str) else None
        if arr is None or arr.ndim not in (1, 2) or arr.size == 0:
            raise ReadError(
                f"feature item {describe_item(item)} is not a vector (d,) or sequence (T, d)"
            )
        if not np.all(np.isfinite(arr)):
            raise ReadError(f"feature item {describe_item(item)} holds NaN or infinite values")
        seq = arr[None] if arr.ndim == 1 else arr
        if hasattr(self, "input_dim_") and seq.shape[1] != self.input_dim_:
            raise ReadError(
                f"feature item {describe_item(item)} has {seq.shape[1]} features per frame, "
                f"the encoder was fitted on {self.input_dim_}"
            )
        frames = seq[np.abs(seq).sum(axis=1) > 0]
        if len(frames) == 0:
            raise ReadError(f"feature item {describe_item(item)} holds only zero (padding) frames")
        return frames

    def _read_or_skip(self, item, label, failures=None):
        # An all-padding sequence is an absent modality (as MMSA pads missing segments).
        try:
            return super()._read_or_skip(item, label, failures)
        except ReadError as exc:
            if "only zero (padding) frames" in str(exc):
                return None
            raise

    def _fit(self, decoded) -> None:
        unknown = set(self.pooling) - _POOLS
        if unknown or not self.pooling:
            raise ValueError(
                f"pooling must be a non-empty subset of {sorted(_POOLS)}, got {self.pooling}"
            )
        dims = {f.shape[1] for f in decoded}
        if len(dims) > 1:
            raise ValueError(f"feature items have different widths {sorted(dims)}; they must match")
        self.input_dim_ = dims.pop()
        self.n_features_out_ = self.input_dim_ * len(self.pooling)

    def _encode_batch(self, decoded) -> np.ndarray:
        ops = {
            "mean": lambda f: f.mean(axis=0),
            "std": lambda f: f.std(axis=0),
            "max": lambda f: f.max(axis=0),
            "min": lambda f: f.min(axis=0),
            "last": lambda f: f[-1],
        }
        return np.stack([np.concatenate([ops[p](f) for p in self.pooling]) for f in decoded])

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "n_features_out_")
        return np.asarray(
            [f"{p}{i}" for p in self.pooling for i in range(self.input_dim_)], dtype=object
        )
