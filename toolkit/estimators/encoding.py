"""Encoding inside the estimators: fit each modality's encoder, cross-fit the encoders that
learn from the labels (out-of-fold outputs for the fusion), and encode a frame.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin, clone

from toolkit._progress import named, quiet_library_bars
from toolkit._utils import check_random_state_seed, seed_if_unset
from toolkit.cache import as_cache, ensure_fitted
from toolkit.embeddings import Embeddings
from toolkit.estimators.checks import (
    _column_items,
    _refuse_empty_rows,
    _supervised,
    _unique_index,
)
from toolkit.model_selection import inner_folds


class EncodingMixin:
    """Fitting and applying the modalities' encoders; mixed into the estimators' base, which
    provides ``_spec()``, ``memory``, ``random_state`` and ``encoder_cv``."""

    def _fit_encoders(self, df: pd.DataFrame, y=None, groups=None) -> None:
        """Clone, seed and fit each modality's encoder on its column(s) of ``df``.

        Fixed encoders with a cache are left unfitted: the cache fits (loads) them only when
        it has items to encode. Supervised encoders (``encoder.supervised``, e.g. a CNN
        backend) are trained on ``y`` (class codes or floats) and ``groups``.
        """
        df = _unique_index(df)
        cache = as_cache(self.memory)
        seed = check_random_state_seed(self.random_state)
        encoders = {}
        for name, enc, cols in self._spec():
            items = df if cols is None else _column_items(df, cols)
            enc = seed_if_unset(clone(enc), seed)
            if _supervised(enc) and y is None:
                raise ValueError(
                    f"modality '{name}': {type(enc).__name__} learns from the labels; fit "
                    "the model with fit(X, y) (which also cross-fits its outputs), or pass "
                    "y to fit_encoders"
                )
            # progress is labelled by the modality; library bars stay quiet while it loads
            with named(name), quiet_library_bars():
                if _supervised(enc):
                    enc.fit(items, y, **({} if groups is None else {"groups": groups}))
                elif not getattr(enc, "fixed", False):
                    enc.fit(items)
                elif cache is None:
                    ensure_fitted(enc, items)
            encoders[name] = enc
        self.encoders_ = encoders
        self.modality_names_ = list(encoders)

    def _supervised_block(self, enc, items) -> tuple[np.ndarray, np.ndarray]:
        """A supervised encoder's block: its head outputs where it has them (see
        :meth:`_crossfit`), padded to one column per class for a classifier."""
        scores = getattr(enc, "encode_scores", None)
        block, present = scores(items) if scores is not None else enc.encode(items)
        n_classes = len(getattr(self, "classes_", ())) if scores is not None else 0
        if n_classes > block.shape[1] and isinstance(self, ClassifierMixin):
            # a class absent from the rows that trained the network: a score below any seen
            floor = np.nanmin(block) if np.isfinite(block).any() else 0.0
            pad = np.where(present[:, None], floor - 1.0, np.nan).astype(block.dtype)
            block = np.hstack([block, np.repeat(pad, n_classes - block.shape[1], axis=1)])
        return block, present

    def _crossfit(self, df: pd.DataFrame, y, groups) -> dict[str, np.ndarray]:
        """Out-of-fold blocks of the supervised encoders for the training rows.

        For each inner fold (stratified; whole groups with ``groups``), a clone of the
        encoder is trained on the other folds and encodes this fold, so the fusion learns
        from outputs the encoder produced for rows it never trained on: a stacker or an early
        head would otherwise trust an encoder's overfit training outputs. The encoder used to
        predict (``encoders_``) is trained on every row.
        """
        df = _unique_index(df)
        seed = check_random_state_seed(self.random_state)
        out = {}
        for name, _, cols in self._spec():
            enc = self.encoders_[name]
            if not _supervised(enc):
                continue
            items = df if cols is None else _column_items(df, cols)
            folds = inner_folds(y, groups, self.encoder_cv, isinstance(self, ClassifierMixin), seed)
            if folds is None:
                raise ValueError(
                    f"modality '{name}': cannot cross-fit {type(enc).__name__} (fewer than 2 "
                    "inner folds possible: a class or the groups are too few); give more rows "
                    "per class and group, or use an encoder that does not learn from labels"
                )
            block = None
            for k, (train, test) in enumerate(folds):
                fold_enc = clone(enc)
                kwargs = {} if groups is None else {"groups": groups[train]}
                with named(f"{name} (inner fold {k + 1}/{len(folds)})"), quiet_library_bars():
                    fold_enc.fit(items.iloc[train], y[train], **kwargs)
                    part, _ = self._supervised_block(fold_enc, items.iloc[test])
                if block is None:
                    block = np.full((len(items), part.shape[1]), np.nan, dtype=np.float32)
                block[test] = part
            out[name] = block
        return out

    def _fit_encode(self, df: pd.DataFrame, y, groups) -> Embeddings:
        """Fit the encoders on ``df`` and encode it as the fusion is trained on it: the
        supervised encoders' blocks are their cross-fitted (out-of-fold) outputs."""
        self._fit_encoders(df, y, groups)
        emb = self._encode(df)
        crossfit = self._crossfit(df, y, groups)
        if crossfit:
            blocks = {n: crossfit.get(n, emb.blocks[n]) for n in emb.names}
            emb = Embeddings(blocks, emb.mask)
        return emb

    def _encode(self, df: pd.DataFrame) -> Embeddings:
        """Encode ``df`` with the fitted encoders; refuses rows with no modality."""
        df = _unique_index(df)
        cache = as_cache(self.memory)
        blocks, masks = {}, []
        for name, _, cols in self._spec():
            items = df if cols is None else _column_items(df, cols)
            with named(name), quiet_library_bars():
                block, present = self._encode_one(self.encoders_[name], items, cache)
            blocks[name] = block
            masks.append(present)
        emb = Embeddings(blocks, np.column_stack(masks))
        _refuse_empty_rows(emb, df.index)
        return emb

    def _encode_one(self, enc, items, cache) -> tuple[np.ndarray, np.ndarray]:
        """One modality's block and availability."""
        if _supervised(enc):
            return self._supervised_block(enc, items)
        if getattr(enc, "fixed", False) and cache is not None:
            # Fixed encoders do not learn from data: with a cache, each raw item is
            # encoded once across fits, folds and candidates.
            return cache.encode(enc, items)
        if getattr(enc, "fixed", False):
            return ensure_fitted(enc, items).encode(items)
        return enc.encode(items)
