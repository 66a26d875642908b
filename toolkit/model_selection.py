"""Groups and inner splits of the training rows, shared by estimators, encoders and fusions.

Public on purpose: ``check_groups`` validates a ``groups`` array once (where it enters, in
``fit``) and the split functions take the validated array. Every split made inside ``fit``
(stacking's out-of-fold predictions, the inner cross-validation that chooses a head's
regularization, the validation rows of early stopping, ``fusion="auto"``'s comparison,
cross-fitted encoders) goes through ``inner_folds`` or ``validation_split``, so that a
``groups`` array (patients, speakers, sites) keeps every group on one side of every inner
split: a head never looks more reliable than it is because it was validated on a speaker
it was trained on.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

#: Inside :func:`shared_folds`, the inner splits computed so far, by their inputs.
_FOLDS: ContextVar[dict | None] = ContextVar("toolkit_inner_folds", default=None)


@contextmanager
def shared_folds():
    """Within this block, :func:`inner_folds` asked twice for the same rows (target and
    groups), fold count and seed computes the split once and hands back the same
    (read-only) index arrays. ``fusion="auto"`` uses it: on each of its inner folds every
    candidate splits the same rows alike (on 220 rows grouped by patient, 136 calls were
    34 distinct splits). Outside the block nothing is kept.
    """
    token = _FOLDS.set({} if _FOLDS.get() is None else _FOLDS.get())
    try:
        yield
    finally:
        _FOLDS.reset(token)


def _folds_key(y, groups, n_splits, classification, seed) -> tuple:
    digest = hashlib.blake2b(digest_size=16)
    for a in (y,) if groups is None else (y, np.asarray(groups).astype(str)):
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(a.tobytes() if a.dtype == object else a.view(np.uint8).reshape(-1))
    return (digest.hexdigest(), groups is None, int(n_splits), bool(classification), int(seed))


def check_groups(groups, n: int) -> np.ndarray | None:
    """``groups`` as a 1-D array of ``n`` labels without missing values, or None."""
    if groups is None:
        return None
    arr = np.asarray(groups)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(
            f"groups must hold one label per training row ({n}), got shape {arr.shape}"
        )
    import pandas as pd

    missing = pd.isna(pd.Series(arr)).to_numpy()
    if missing.any():
        raise ValueError(
            f"groups holds missing labels at rows {np.flatnonzero(missing)[:10].tolist()}; "
            "give every row a group (e.g. its patient or speaker id)"
        )
    return arr


def inner_folds(y, groups, n_splits: int, classification: bool, seed: int) -> list | None:
    """Up to ``n_splits`` (train, test) index pairs over the rows of ``y``, or None.

    Stratified by class for classification; with ``groups``, every group lies in one test
    fold only (``StratifiedGroupKFold`` / ``GroupKFold``). The number of folds is reduced
    to what the smallest class and the number of groups allow; None when fewer than two
    folds are possible (or only one class is present). Inside :func:`shared_folds` a split
    already made for the same inputs is handed back.
    """
    memo = _FOLDS.get()
    if memo is None:
        return _inner_folds(y, groups, n_splits, classification, seed)
    key = _folds_key(np.asarray(y), groups, n_splits, classification, seed)
    if key not in memo:
        folds = _inner_folds(y, groups, n_splits, classification, seed)
        for tr, te in folds or ():
            tr.flags.writeable = te.flags.writeable = False
        memo[key] = folds
    return None if memo[key] is None else list(memo[key])


def _inner_folds(y, groups, n_splits: int, classification: bool, seed: int) -> list | None:
    from sklearn.model_selection import (
        GroupKFold,
        KFold,
        StratifiedGroupKFold,
        StratifiedKFold,
    )

    y = np.asarray(y)
    n = len(y)
    k = min(int(n_splits), n)
    if classification:
        counts = np.unique(y, return_counts=True)[1]
        if len(counts) < 2:
            return None
        k = min(k, int(counts.min()))
    if groups is not None:
        n_groups = len(np.unique(groups))
        k = min(k, n_groups)
    if k < 2:
        return None
    dummy = np.zeros((n, 1))
    if groups is not None:
        if classification:
            splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
        else:
            splitter = GroupKFold(k, shuffle=True, random_state=seed)
        folds = list(splitter.split(dummy, y, groups))
    elif classification:
        folds = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(dummy, y))
    else:
        folds = list(KFold(k, shuffle=True, random_state=seed).split(dummy))
    return [(tr, te) for tr, te in folds if len(tr) and len(te)] or None


def validation_split(
    n: int, groups, fraction: float, seed: int, min_rows: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) row indices for early stopping: about ``fraction`` of the rows
    (whole groups when ``groups`` is given), none below ``min_rows`` rows.

    Without groups the split is a seeded permutation (the first ``round(fraction * n)``
    rows of it are held out), so the same seed gives the same split.
    """
    rng = np.random.default_rng(seed)
    if n < min_rows or fraction <= 0:
        return np.arange(n), np.arange(0)
    if groups is None:
        perm = rng.permutation(n)
        n_val = int(round(fraction * n))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    labels, codes = np.unique(groups, return_inverse=True)
    if len(labels) < 2:
        return np.arange(n), np.arange(0)
    order = rng.permutation(len(labels))
    sizes = np.bincount(codes, minlength=len(labels))
    target = fraction * n
    held, total = [], 0
    for g in order:
        if total >= target or len(held) == len(labels) - 1:
            break
        held.append(g)
        total += sizes[g]
    is_val = np.isin(codes, held)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)
