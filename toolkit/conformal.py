"""Split-conformal prediction sets and intervals around a multimodal estimator,
Mondrian-calibrated per modality-availability pattern.

A model that sees every modality is usually more certain than one that sees a single
modality, so one pooled calibration gives too-wide sets for complete rows and too-narrow
ones (under-coverage) for rows that lack a strong modality. A Mondrian conformal predictor
calibrates each *availability pattern* (which modalities a row has, e.g. ``note+scan``)
on its own rows, so the coverage guarantee holds within every pattern (Vovk et al. 2005,
"Algorithmic Learning in a Random World", ch. 4.5; Boström et al. 2021 for Mondrian
regressors).

The conformal arithmetic is the ``crepes`` library's (``ConformalClassifier`` with
``bins`` for sets, ``ConformalRegressor`` with ``bins`` for intervals); this module holds
the split, the patterns and the checks. Non-conformity scores: 1 - p(class) (the hinge
score) for classification, |y - prediction| for regression. p-values are not smoothed, so
results are deterministic and at least as conservative as smoothed ones.

What the guarantee needs, and what happens when it cannot hold:

- the calibration rows and the new rows are exchangeable within a pattern (rows of the
  same group, e.g. one patient's visits, are kept together by ``groups``);
- a pattern needs at least ``ceil(1 / (1 - confidence)) - 1`` calibration rows (9 at 90%)
  for a finite quantile; with fewer its rows get the full set / an infinite interval (valid
  but useless), and ``calibration_counts_`` shows it;
- a pattern never seen in calibration has no guarantee at all: its rows get the full set /
  an infinite interval and a warning names the pattern.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit
from sklearn.utils.validation import check_is_fitted

__all__ = ["ConformalPredictor", "availability_patterns", "min_calibration_rows"]

#: Fewest rows :meth:`ConformalPredictor.fit` leaves to fit the estimator on.
MIN_FIT_ROWS = 2


def min_calibration_rows(confidence: float) -> int:
    """Calibration rows a pattern needs for a finite quantile at ``confidence``:
    ``ceil(1 / alpha) - 1`` with ``alpha = 1 - confidence`` (9 at 90%, 19 at 95%); with
    fewer, every set holds every class and every interval is infinite."""
    return max(math.ceil(1 / (1 - confidence) - 1e-9) - 1, 1)


def check_split_sizes(n: int, calibration_size: float, confidence: float, key: str) -> None:
    """Refuse a ``calibration_size`` share of ``n`` rows that holds out fewer calibration
    rows than ``confidence`` needs, or leaves fewer than MIN_FIT_ROWS to fit on. ``key``
    names the setting in the message."""
    n_cal = math.ceil(calibration_size * n)
    n_fit = n - n_cal
    need = min_calibration_rows(confidence)
    if need <= n_cal and n_fit >= MIN_FIT_ROWS:
        return
    lowest, highest = need / n, (n - MIN_FIT_ROWS) / n
    if lowest > highest:
        fix = f"use at least {need + MIN_FIT_ROWS} rows, or a lower confidence"
    else:
        low, high = math.ceil(lowest * 100) / 100, math.floor(highest * 100) / 100
        fix = f"use {key} between {low:g} and {high:g}"
    raise ValueError(
        f"{key}={calibration_size:g} of {n} rows holds out {n_cal} calibration rows and leaves "
        f"{n_fit} to fit the model on; confidence={confidence:g} (alpha = {1 - confidence:.3g}) "
        f"needs at least {need} calibration rows (ceil(1 / alpha) - 1; with fewer every set "
        f"holds every class and every interval is infinite) and at least {MIN_FIT_ROWS} to "
        f"fit on: {fix}"
    )


def availability_patterns(mask, names) -> np.ndarray:
    """One label per row naming the modalities it has, e.g. ``"note+scan"`` (``"none"``
    when it has none).

    Parameters
    ----------
    mask : array-like of bool, shape (n_samples, n_modalities)
        The availability mask (``Embeddings.mask``).
    names : sequence of str
        The modality names, in the mask's column order.
    """
    mask = np.asarray(mask, dtype=bool)
    labels = ["+".join(n for n, keep in zip(names, row, strict=True) if keep) for row in mask]
    return np.array([label or "none" for label in labels], dtype=object)


def _rows(X, idx):
    return X.iloc[idx] if isinstance(X, pd.DataFrame) else X[idx]


class ConformalPredictor(BaseEstimator):
    """Split-conformal prediction sets (classifier) or intervals (regressor), calibrated
    per modality-availability pattern (Mondrian).

    Parameters
    ----------
    estimator : MultimodalClassifier or MultimodalRegressor
        Cloned and fitted on the proper training rows by :meth:`fit` (or, already fitted,
        calibrated as it is by :meth:`calibrate`).
    confidence : float in (0, 1), default=0.9
        Coverage asked for: the probability that the set / interval holds the true value,
        within each availability pattern.
    calibration_size : float in (0, 1), default=0.25
        Share of the rows (of the groups, with ``groups``) that :meth:`fit` holds out to
        calibrate.
    mondrian : bool, default=True
        Calibrate each availability pattern on its own rows; False pools every row (the
        guarantee then holds on average over patterns only).
    random_state : int or None, default=None
        Seed of the train / calibration split.

    Attributes
    ----------
    estimator_ : fitted estimator
    conformal_ : crepes.ConformalClassifier or crepes.ConformalRegressor
    calibration_counts_ : dict
        Calibration rows per availability pattern.
    classes_ : ndarray (classifier only)

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from toolkit import MultimodalClassifier, TabularEncoder
    >>> from toolkit.conformal import ConformalPredictor
    >>> rng = np.random.RandomState(0)
    >>> X = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    >>> y = (X["a"] + X["b"] + rng.normal(size=400) > 0).astype(int)
    >>> X.loc[:99, "b"] = np.nan          # modality "b" is missing on 100 rows
    >>> clf = MultimodalClassifier([("a", TabularEncoder(), ["a"]), ("b", TabularEncoder(), ["b"])],
    ...                            fusion="early", random_state=0)
    >>> cp = ConformalPredictor(clf, confidence=0.9, random_state=0).fit(X, y)
    >>> sorted(cp.calibration_counts_)
    ['a', 'a+b']
    >>> cp.predict_set(X.head(3)).shape
    (3, 2)
    """

    def __init__(
        self, estimator, *, confidence=0.9, calibration_size=0.25, mondrian=True, random_state=None
    ):
        self.estimator = estimator
        self.confidence = confidence
        self.calibration_size = calibration_size
        self.mondrian = mondrian
        self.random_state = random_state

    # -- checks -----------------------------------------------------------------------------

    def _check_params(self) -> None:
        for name in ("confidence", "calibration_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
                raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
        if not isinstance(self.mondrian, bool):
            raise TypeError(f"mondrian must be True or False, got {self.mondrian!r}")

    @property
    def _classifier(self) -> bool:
        return is_classifier(self.estimator)

    @property
    def min_calibration_rows(self) -> int:
        """Calibration rows a pattern needs for a finite quantile at ``confidence``."""
        return min_calibration_rows(self.confidence)

    # -- fitting ----------------------------------------------------------------------------

    def _split(self, n: int, y, groups):
        if groups is None:
            splitter = ShuffleSplit(
                1, test_size=self.calibration_size, random_state=self.random_state
            )
            return next(splitter.split(np.zeros(n)))
        splitter = GroupShuffleSplit(
            1, test_size=self.calibration_size, random_state=self.random_state
        )
        return next(splitter.split(np.zeros(n), y, groups))

    def fit(self, X, y, groups=None):
        """Fit a clone of ``estimator`` on the proper training rows and calibrate on the
        held-out ``calibration_size`` share (whole groups with ``groups``).

        Parameters
        ----------
        X : pandas DataFrame or Embeddings of shape (n_samples, ...)
        y : array-like of shape (n_samples,)
        groups : array-like of shape (n_samples,), optional
            Group labels (patients, speakers); a group is either in the training rows or in
            the calibration rows, and the estimator's own inner splits get them too.

        Raises
        ------
        ValueError
            ``calibration_size`` of the rows holds out fewer calibration rows than
            ``confidence`` needs (:func:`min_calibration_rows`), or leaves fewer than
            ``MIN_FIT_ROWS`` to fit on; the message gives the shares that would work.
        """
        from toolkit.estimators.checks import align_to_rows

        self._check_params()
        # a pandas y / groups indexed like X in another order is paired by label
        y = np.asarray(align_to_rows(X, y))
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)} values; they must match")
        groups = None if groups is None else np.asarray(align_to_rows(X, groups, "groups"))
        check_split_sizes(len(y), self.calibration_size, self.confidence, "calibration_size")
        train, cal = self._split(len(y), y, groups)
        model = clone(self.estimator)
        fit_groups = {} if groups is None else {"groups": groups[train]}
        model.fit(_rows(X, train), y[train], **fit_groups)
        self.estimator_ = model
        return self.calibrate(_rows(X, cal), y[cal])

    def calibrate(self, X, y):
        """Calibrate the fitted ``estimator_`` (or a fitted ``estimator``) on ``X``, ``y``:
        rows it was not trained on."""
        from crepes import ConformalClassifier, ConformalRegressor  # 0.6 s: on first use

        self._check_params()
        if not hasattr(self, "estimator_"):
            check_is_fitted(self.estimator, "fusion_")
            self.estimator_ = self.estimator
        from toolkit.estimators.checks import align_to_rows

        emb = self.estimator_.encode(X)
        patterns = self._bins(emb)
        y = np.asarray(align_to_rows(X, y))
        if self._classifier:
            self.classes_ = np.asarray(self.estimator_.classes_)
            position = {c: i for i, c in enumerate(self.classes_.tolist())}
            unknown = [v for v in pd.unique(y).tolist() if v not in position]
            if unknown:
                raise ValueError(
                    f"calibration labels {unknown[:5]} are not classes of the estimator "
                    f"({self.classes_.tolist()})"
                )
            proba = self.estimator_.predict_proba(emb)
            index = np.array([position[v] for v in y])
            scores = 1 - proba[np.arange(len(y)), index]
            self.conformal_ = ConformalClassifier().fit(scores, bins=patterns)
        else:
            residuals = y.astype(float) - self.estimator_.predict(emb)
            self.conformal_ = ConformalRegressor().fit(residuals, bins=patterns)
        labels, counts = np.unique(patterns, return_counts=True)
        self.calibration_counts_ = {str(k): int(v) for k, v in zip(labels, counts, strict=True)}
        self.modality_names_ = list(emb.names)
        return self

    def _bins(self, emb) -> np.ndarray:
        if not self.mondrian:
            return np.full(emb.n_samples, "all", dtype=object)
        return availability_patterns(emb.mask, emb.names)

    # -- prediction -------------------------------------------------------------------------

    def _unseen(self, patterns) -> np.ndarray:
        """Rows whose pattern had no calibration row (warned about, given everything)."""
        unseen = ~np.isin(patterns, list(self.calibration_counts_))
        if unseen.any():
            names = sorted(set(patterns[unseen].tolist()))
            warnings.warn(
                f"availability pattern(s) {names} had no calibration rows, so "
                f"{int(unseen.sum())} row(s) get the full prediction set / an infinite "
                "interval (no coverage guarantee can be given for them); calibrate on rows "
                "that include these patterns",
                UserWarning,
                stacklevel=3,
            )
        return unseen

    def patterns(self, X) -> np.ndarray:
        """The availability pattern of each row of ``X`` (``"none"`` for no modality)."""
        check_is_fitted(self, "conformal_")
        emb = self.estimator_.encode(X)
        return availability_patterns(emb.mask, emb.names)

    def predict(self, X) -> np.ndarray:
        """The estimator's point predictions."""
        check_is_fitted(self, "conformal_")
        return self.estimator_.predict(X)

    def predict_set(self, X) -> np.ndarray:
        """Prediction sets, as a bool array of shape (n_samples, n_classes) whose columns
        follow ``classes_``: True where the class is in the row's set."""
        check_is_fitted(self, "conformal_")
        if not self._classifier:
            raise TypeError("predict_set is for classifiers; use predict_interval")
        emb = self.estimator_.encode(X)
        bins = self._bins(emb)
        scores = 1 - self.estimator_.predict_proba(emb)
        unseen = self._unseen(bins)
        sets = np.ones(scores.shape, dtype=bool)
        seen = ~unseen
        if seen.any():
            sets[seen] = self.conformal_.predict_set(
                scores[seen], bins=bins[seen], confidence=self.confidence, smoothing=False
            ).astype(bool)
        return sets

    def predict_interval(self, X) -> np.ndarray:
        """Prediction intervals, shape (n_samples, 2): lower and upper bound (infinite for
        a pattern calibrated on too few rows or none)."""
        check_is_fitted(self, "conformal_")
        if self._classifier:
            raise TypeError("predict_interval is for regressors; use predict_set")
        emb = self.estimator_.encode(X)
        bins = self._bins(emb)
        pred = self.estimator_.predict(emb)
        unseen = self._unseen(bins)
        intervals = np.column_stack([np.full(len(pred), -np.inf), np.full(len(pred), np.inf)])
        seen = ~unseen
        if seen.any():
            with warnings.catch_warnings():  # too-small patterns: infinite, as documented
                warnings.simplefilter("ignore", UserWarning)
                intervals[seen] = self.conformal_.predict_int(
                    pred[seen], bins=bins[seen], confidence=self.confidence
                )
        return intervals

    def coverage(self, X, y) -> pd.DataFrame:
        """Coverage per availability pattern on labelled rows ``X``, ``y``.

        Returns
        -------
        DataFrame indexed by pattern (plus ``"all"``) with the rows ``n``, the share of
        rows whose set / interval holds the true value ``coverage``, and ``mean_size``
        (classes per set) or ``mean_width`` (interval width).
        """
        check_is_fitted(self, "conformal_")
        y = np.asarray(y)
        patterns = self.patterns(X)
        if self._classifier:
            sets = self.predict_set(X)
            position = {c: i for i, c in enumerate(self.classes_.tolist())}
            index = np.array([position.get(v, -1) for v in y])
            covered = np.where(index >= 0, sets[np.arange(len(y)), np.maximum(index, 0)], False)
            size = sets.sum(axis=1).astype(float)
            column = "mean_size"
        else:
            intervals = self.predict_interval(X)
            covered = (intervals[:, 0] <= y) & (y <= intervals[:, 1])
            size = intervals[:, 1] - intervals[:, 0]
            column = "mean_width"
        return coverage_table(patterns, covered, size, column)


def coverage_table(
    patterns, covered, size, column: str = "mean_size", uninformative=None
) -> pd.DataFrame:
    """Rows, coverage and mean set size (or interval width) per pattern and over all rows.

    ``uninformative`` (one flag per row: a set holding every class, an infinite interval)
    adds the column ``uninformative``, the share of such rows: they are covered by
    construction, so a coverage reached through them says nothing about the model.
    """
    flags = np.zeros(len(covered), bool) if uninformative is None else np.asarray(uninformative)
    frame = pd.DataFrame({"pattern": patterns, "covered": covered, "size": size, "flag": flags})
    table = frame.groupby("pattern").agg(
        n=("covered", "size"),
        coverage=("covered", "mean"),
        size=("size", "mean"),
        uninformative=("flag", "mean"),
    )
    table.loc["all"] = [
        len(frame),
        frame["covered"].mean(),
        frame["size"].mean(),
        frame["flag"].mean(),
    ]
    table["n"] = table["n"].astype(int)
    if uninformative is None:
        table = table.drop(columns="uninformative")
    return table.rename(columns={"size": column})
