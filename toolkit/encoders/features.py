"""Encoder for precomputed feature vectors and sequences (e.g. MMSA's COVAREP / FACET / BERT features)."""

from __future__ import annotations

import numpy as np

from toolkit._utils import FLOAT32_MAX, describe_item
from toolkit.encoders.base import BaseEncoder
from toolkit.exceptions import ReadError

_POOLS = {"mean", "std", "max", "min", "last"}


def _numeric_array(item) -> np.ndarray:
    """``item`` as a real numeric array (any shape); ReadError for text, a tuple of arrays,
    ragged, complex or non-numeric items."""
    if isinstance(item, str | bytes | dict):
        raise ReadError(
            f"feature item {describe_item(item)} is a {type(item).__name__}, not a numeric "
            "vector (d,) or sequence (T, d)"
        )
    if isinstance(item, tuple) and any(isinstance(part, np.ndarray) for part in item):
        parts = ", ".join(describe_item(part, limit=30) for part in item[:3])
        raise ReadError(
            f"feature item is a tuple of {len(item)} parts ({parts}); pass one numeric array "
            "of shape (d,) or (T, d), and apply a sequence length by slicing the array "
            "(e.g. seq[-length:]) first"
        )
    try:
        arr = np.asarray(item)
    except ValueError:
        raise ReadError(
            f"feature item {describe_item(item)} is ragged (its frames or parts have "
            "different lengths); pass one numeric array of shape (d,) or (T, d), and apply a "
            "sequence length by slicing the array (e.g. seq[-length:]) first"
        ) from None
    if arr.dtype.kind == "c":
        raise ReadError(
            f"feature item {describe_item(item)} holds complex numbers; pass real features "
            "(e.g. the magnitude np.abs(x))"
        )
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64) if arr.dtype == object else None
        except (TypeError, ValueError, OverflowError):
            arr = None
        if arr is None:
            raise ReadError(
                f"feature item {describe_item(item)} is not numeric; pass a numeric array "
                "of shape (d,) or (T, d)"
            )
    return arr


def _check_finite_float32(seq: np.ndarray, item) -> None:
    """ReadError (naming the first frame and feature) for NaN, infinite or out-of-float32-range
    values of the (T, d) float64 ``seq`` read from ``item``."""
    bad = ~np.isfinite(seq)
    if bad.any():
        t, j = np.argwhere(bad)[0]
        raise ReadError(
            f"feature item {describe_item(item)} holds NaN or infinite values (first at "
            f"frame {t}, feature {j}); fix or drop them"
        )
    big = np.abs(seq) > FLOAT32_MAX
    if big.any():
        t, j = np.argwhere(big)[0]
        raise ReadError(
            f"feature item {describe_item(item)} holds values out of range (e.g. "
            f"{seq[t, j]:.3g} at frame {t}, feature {j}): beyond +-{FLOAT32_MAX:.1e}, the "
            "float32 range of the encoded block; rescale the features"
        )


class FeatureEncoder(BaseEncoder):
    """Pool precomputed per-row features into a fixed-width block.

    Each cell holds a vector of shape (d,) or a sequence of shape (T, d) (frames or
    tokens). Sequences are pooled over time with each statistic in ``pooling``; rows
    that are all zero (padding, as in MMSA's feature files) are ignored, and a
    sequence with no non-padding frame (or no frame at all) is treated as missing.
    Each refit learns the width anew. Items that are ragged, non-numeric, complex, hold
    NaN/inf or values beyond the float32 range (about +-3.4e38), or whose width differs
    from the others are refused with their row named (``on_error="missing"`` marks them
    missing instead at encode time).

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
        arr = _numeric_array(item)
        if arr.ndim not in (1, 2) or arr.shape[-1] == 0:
            raise ReadError(
                f"feature item {describe_item(item)} is not a vector (d,) or sequence (T, d) "
                "with d >= 1"
            )
        seq = arr[None] if arr.ndim == 1 else arr
        if len(seq) == 0:
            return None  # a sequence of length 0 holds no frame: the modality is absent
        seq = seq.astype(np.float64, copy=False)
        _check_finite_float32(seq, item)
        frames = seq[(seq != 0).any(axis=1)]
        if len(frames) == 0:
            return None  # only zero (padding) frames: the modality is absent
        return frames.astype(np.float32)

    def _check_fit_items(self, decoded, rows) -> None:
        widths: dict[int, list] = {}
        for frames, row in zip(decoded, rows, strict=True):
            widths.setdefault(frames.shape[1], []).append(row)
        if len(widths) > 1:
            shown = "; ".join(
                f"{d} features in rows {r[:5]}{' ...' if len(r) > 5 else ''}"
                for d, r in sorted(widths.items())
            )
            raise ValueError(
                f"feature items of {self._where()} have different widths ({shown}); every "
                "vector or frame must have the same number of features"
            )

    def _check_item(self, frames) -> None:
        if frames.shape[1] != self.input_dim_:
            raise ReadError(
                f"feature item of shape {frames.shape} has {frames.shape[1]} features per "
                f"frame, the encoder was fitted on {self.input_dim_}"
            )

    def _fit(self, decoded) -> None:
        unknown = set(self.pooling) - _POOLS
        if unknown or not self.pooling or len(set(self.pooling)) != len(self.pooling):
            raise ValueError(
                "pooling must be a non-empty subset of "
                f"{sorted(_POOLS)} without repeats, got {self.pooling}"
            )
        self.input_dim_ = decoded[0].shape[1]
        self.n_features_out_ = self.input_dim_ * len(self.pooling)

    def _encode_batch(self, decoded) -> np.ndarray:
        ops = {
            "mean": lambda f: f.mean(axis=0, dtype=np.float64),
            "std": lambda f: f.std(axis=0, dtype=np.float64),
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
