"""Cross-validation splits of a study: stratified for classification, grouped when the
data have groups, with a guard that no group is on both sides of a split."""

from __future__ import annotations

import numpy as np

from toolkit.study.config import ConfigError
from toolkit.study.errors import StudyError


def _splitter(n_splits: int, *, classification: bool, grouped: bool, seed: int):
    """The scikit-learn splitter a study uses (shuffled with ``seed`` where it can be)."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    if grouped:
        if classification:
            return StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
        return GroupKFold(n_splits)
    if classification:
        return StratifiedKFold(n_splits, shuffle=True, random_state=seed)
    return KFold(n_splits, shuffle=True, random_state=seed)


def check_groups_apart(splits, groups) -> None:
    """Raise StudyError naming the fold and the groups if a group is in train and test.

    Parameters
    ----------
    splits : list of (train indices, test indices)
    groups : array-like of shape (n_samples,)
    """
    groups = np.asarray(groups)
    for k, (train, test) in enumerate(splits):
        shared = set(groups[train]) & set(groups[test])
        if shared:
            named = np.asarray(sorted(shared)[:5]).tolist()  # Python values, not np.int64(...)
            raise StudyError(f"fold {k}: groups {named} are in both train and test")


def make_splits(y, groups, n_splits: int, classification: bool, seed: int):
    """Stratified (classification) and grouped (when groups are given) K-fold splits,
    with a guard that no group appears on both sides of any split.

    Returns
    -------
    list of (train indices, test indices), one pair per fold.
    """
    X = np.zeros(len(y))
    grouped = groups is not None
    if grouped:
        n_groups = len(np.unique(groups))
        if n_groups < n_splits:
            raise ConfigError(
                f"evaluation.cv: {n_splits} folds need at least {n_splits} groups, found {n_groups}"
            )
    splitter = _splitter(n_splits, classification=classification, grouped=grouped, seed=seed)
    if not grouped:
        return list(splitter.split(X, y))
    splits = list(splitter.split(X, y, groups))
    check_groups_apart(splits, groups)
    return splits
