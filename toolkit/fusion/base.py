"""Base class of the fusion strategies and the per-block standardization they share."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

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


def target_exponent(y: np.ndarray) -> int:
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


#: Fewest rows per cluster :func:`pseudo_groups` makes (fewer rows: no pseudo-groups).
PSEUDO_GROUP_MIN_ROWS = 20
#: How much more variance k-means must explain than on cluster-free data of the same
#: spectrum before :func:`pseudo_groups` treats the rows as clustered.
PSEUDO_GROUP_MIN_GAIN = 1.1
#: Rows (a seeded sample) on which that test is run.
PSEUDO_GROUP_SAMPLE = 2000


def pseudo_groups(
    emb: Embeddings,
    y,
    n_classes,
    *,
    n_clusters: int = 5,
    min_rows: int = PSEUDO_GROUP_MIN_ROWS,
    random_state: int = 0,
) -> np.ndarray:
    """Stand-in groups for a fit without ``groups``: clusters of similar rows within a class.

    The rows of each class (regression: each fifth of the target's range, by quantile) are
    split by k-means into up to ``per_class`` clusters on the balanced, standardized
    concatenation of the blocks (absent blocks at 0, plus the availability mask), at least
    ``min_rows`` rows per cluster; a class too small for two clusters leaves each of its
    rows a group of its own (row-level splits, as before).

    Why: rows of one person (speaker, patient, site) lie close together in a modality that
    identifies the person, and within a class they form such clusters. Inner splits that keep
    each cluster on one side then ask every modality to recognize the class on rows unlike
    its training rows of that class; a person-specific modality, which looks near-perfect
    in row-level cross-validation, scores there about as it does on new people, while a
    modality whose signal is the label's keeps most of its score. The fusions use these
    groups for every inner choice (regularization, block evidence, stacking and its
    calibration, ``auto``'s comparison) when ``fit`` gets no ``groups``.

    Returns
    -------
    ndarray of int, shape (n_samples,)
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _pseudo_groups(emb, np.asarray(y), n_classes, n_clusters, min_rows, random_state)


def _pseudo_groups(emb, y, n_classes, n_clusters, min_rows, random_state) -> np.ndarray:
    from sklearn.cluster import KMeans

    if n_classes is not None:
        strata = y.astype(int)
    else:
        edges = np.quantile(y, [0.2, 0.4, 0.6, 0.8])
        strata = np.searchsorted(edges, y, side="right")
    blocks = BlockScaler().fit(emb, balance=True).transform(emb)
    parts = [_without_label_directions(blocks[n], strata) for n in emb.names]
    X = np.hstack(parts + [emb.mask.astype(np.float64)])
    k = min(int(n_clusters), len(y) // int(min_rows))
    if k < 2 or not _clustered(X, 2 * k, random_state):
        return np.arange(len(y))
    labels = KMeans(n_clusters=k, n_init=3, random_state=random_state).fit_predict(X)
    labels = _merge_small_clusters(X, labels, int(min_rows))
    if len(np.unique(labels)) < 2:
        return np.arange(len(y))
    return labels


def _merge_small_clusters(X: np.ndarray, labels: np.ndarray, min_rows: int) -> np.ndarray:
    """``labels`` with every cluster of fewer than ``min_rows`` rows merged into the cluster
    whose centre is nearest (smallest first), renumbered 0..k-1. k-means does not bound a
    cluster's size: a cluster of 2 rows made the leave-cluster-out scores so uneven that the
    one-standard-error rule chose the most regularized head, a near-constant model."""
    labels = labels.copy()
    while True:
        ids, counts = np.unique(labels, return_counts=True)
        if len(ids) < 2 or counts.min() >= min_rows:
            break
        small = ids[np.argmin(counts)]
        centres = {i: X[labels == i].mean(axis=0) for i in ids}
        others = [i for i in ids if i != small]
        nearest = min(others, key=lambda i: float(((centres[i] - centres[small]) ** 2).sum()))
        labels[labels == small] = nearest
    return np.unique(labels, return_inverse=True)[1]


def _explained(X: np.ndarray, k: int, seed: int) -> float:
    from sklearn.cluster import KMeans

    total = float(((X - X.mean(axis=0)) ** 2).sum())
    if total <= 0:
        return 0.0
    return 1.0 - KMeans(n_clusters=k, n_init=3, random_state=seed).fit(X).inertia_ / total


def _clustered(X: np.ndarray, k: int, seed: int) -> bool:
    """Whether ``k``-means explains at least :data:`PSEUDO_GROUP_MIN_GAIN` times the variance
    it explains on a Gaussian sample of the same spectrum (no clusters, same correlations),
    on up to :data:`PSEUDO_GROUP_SAMPLE` rows."""
    rng = np.random.default_rng(seed)
    if len(X) > PSEUDO_GROUP_SAMPLE:
        X = X[rng.choice(len(X), PSEUDO_GROUP_SAMPLE, replace=False)]
    k = min(k, len(X) // 2)
    if k < 2:
        return False
    singular = np.linalg.svd(X - X.mean(axis=0), compute_uv=False)
    null = rng.normal(size=(len(X), len(singular))) * (singular / np.sqrt(len(X)))
    return _explained(X, k, seed) >= PSEUDO_GROUP_MIN_GAIN * _explained(null, k, seed)


def _without_label_directions(block: np.ndarray, strata: np.ndarray) -> np.ndarray:
    """``block`` with its projection on the span of the strata's mean shifts removed.

    Within a class, a block also varies along the directions that separate the classes
    (a noisy view that agrees with the label on 80% of the rows is bimodal within each
    class); clustering on them would group rows by how the label shows in the block, not by
    who they come from. Removing them leaves the within-class structure that the label
    does not explain (speaker, patient, site).
    """
    labels = np.unique(strata)
    if len(labels) < 2:
        return block
    means = np.stack([block[strata == k].mean(axis=0) for k in labels])
    shifts = (means - block.mean(axis=0)).T
    basis, r = np.linalg.qr(shifts)
    keep = np.abs(np.diag(r)) > 1e-10
    basis = basis[:, keep]
    return block - (block @ basis) @ basis.T


#: Inside :func:`groups_inferred`, the groups a fusion's ``fit`` gets are pseudo-groups.
_GROUPS_INFERRED: ContextVar[bool] = ContextVar("toolkit_groups_inferred", default=False)


@contextmanager
def groups_inferred():
    """Within this block, ``groups`` passed to a fusion's ``fit`` are pseudo-groups (inferred
    by a caller, as ``fusion="auto"`` does), so its no-groups rule applies
    (:meth:`BaseFusion._inner_groups`)."""
    token = _GROUPS_INFERRED.set(True)
    try:
        yield
    finally:
        _GROUPS_INFERRED.reset(token)


def _check_modality_classes(emb: Embeddings, codes: np.ndarray) -> None:
    """Refuse a modality present in the rows of one class only (of 2+): its head cannot
    tell classes apart, and its availability alone gives the label away."""
    if len(np.unique(codes)) < 2:
        return
    for m, name in enumerate(emb.names):
        found = np.unique(codes[emb.mask[:, m]])
        if len(found) == 1:
            others = int(np.sum(codes != found[0]))
            raise ValueError(
                f"modality '{name}' is present only in rows of class code {int(found[0])} "
                f"({int(emb.mask[:, m].sum())} rows; absent from all {others} rows of the other "
                "classes): its head cannot learn to tell the classes apart, and whether a row "
                "has it alone predicts the label. Check how the data were collected; remove "
                "the modality or add rows of the other classes that have it"
            )


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
            _check_modality_classes(emb, y.astype(int))
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
        self.target_exponent_ = target_exponent(y)
        y = np.ldexp(y, -self.target_exponent_)
        self.prior_ = np.array([float(np.ldexp(np.mean(y), self.target_exponent_))])
        return y

    def _inner_groups(self, emb: Embeddings, y, groups, seed: int):
        """The groups every inner split of ``fit`` uses: ``groups`` when given; else, with
        ``self.pseudo_groups``, the clusters of :func:`pseudo_groups` (None when each row
        would be its own group). Sets ``n_pseudo_groups_`` (None when none were inferred)
        and ``prior_rule_``: True when the inner splits use pseudo-groups (inferred here, or
        passed inside :func:`groups_inferred`); the fusions then compare their tuned choices
        with an untuned prior on those folds, since clusters recover people only in part
        and folds that are not whole people overrate a person-specific modality."""
        self.n_pseudo_groups_ = None
        robust = bool(getattr(self, "pseudo_groups", False))
        self.prior_rule_ = robust and groups is not None and _GROUPS_INFERRED.get()
        if groups is not None or not robust:
            return groups
        inferred = pseudo_groups(emb, y, self.n_classes_, random_state=seed)
        count = len(np.unique(inferred))
        if count == len(inferred):
            return None
        self.n_pseudo_groups_, self.prior_rule_ = count, True
        return inferred

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
