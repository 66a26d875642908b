"""MultimodalClassifier and MultimodalRegressor: encoders + a fusion strategy, sklearn-style."""

from __future__ import annotations

from collections.abc import Hashable
from numbers import Integral
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin, RegressorMixin, clone
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.metaestimators import _BaseComposition, available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from toolkit._utils import (
    check_column_labels,
    check_random_state_seed,
    describe_kinds,
    raise_non_numeric,
    rows_by_kind,
    seed_if_unset,
    value_kind,
)
from toolkit.cache import EmbeddingCache, as_cache, ensure_fitted
from toolkit.embeddings import Embeddings
from toolkit.exceptions import MissingModalityError


def _column_items(df: pd.DataFrame, columns):
    """One modality's input: a Series for a single column, a DataFrame for several."""
    if isinstance(columns, (list, tuple)):
        return df[list(columns)]
    return df[columns]


def _check_columns(name: str, cols) -> None:
    """A modality's columns: one column label, or a non-empty list/tuple of distinct ones."""
    if isinstance(cols, list | tuple):
        if not cols:
            raise ValueError(
                f"modality '{name}' selects no columns (an empty list); name at least one"
            )
        for c in cols:
            if not isinstance(c, Hashable) or c is None:
                raise TypeError(
                    f"modality '{name}': column {c!r} is not a column name; give names as "
                    "strings (or the DataFrame's column labels)"
                )
        seen = set()
        dupes = [c for c in cols if c in seen or seen.add(c)]
        if dupes:
            raise ValueError(
                f"modality '{name}' lists column(s) {dupes} more than once; list each once"
            )
        return
    if cols is None or not isinstance(cols, Hashable):
        raise TypeError(
            f"modality '{name}': columns must be a column name or a list of names, got "
            f"{type(cols).__name__}"
            + ("; use a list (a set has no order)" if isinstance(cols, set | frozenset) else "")
        )


def _label_positions(y, bad: np.ndarray) -> list:
    """Row labels (a pandas y) or positions of the first flagged entries of ``y``."""
    labels = y.index if isinstance(y, pd.Series) else np.arange(len(bad))
    return np.asarray(labels[np.asarray(bad, dtype=bool)][:10]).tolist()


def _check_y_shape(y):
    """``y`` as a 1-D array (a single column is raveled, as scikit-learn does)."""
    if y is None:
        raise ValueError("requires y to be passed, but the target y is None")
    wrong = TypeError(
        f"y must be an array-like with one value per row of X, got {type(y).__name__}"
    )
    if isinstance(y, str | bytes | dict | set):
        raise wrong
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 1:
            raise ValueError(
                f"y must be one column (one value per row of X), got a DataFrame with "
                f"{y.shape[1]} columns {list(y.columns)[:5]}; select the target column"
            )
        y = y.iloc[:, 0]
    if isinstance(y, pd.Series):
        return y
    try:
        arr = np.asarray(y) if not isinstance(y, list | tuple) else _object_array(y)
    except ValueError as exc:
        raise ValueError(f"y is not a rectangular array ({exc})") from None
    if arr.ndim == 0:
        raise wrong
    if arr.ndim == 2 and arr.shape[1] == 1:
        return column_or_1d(arr, warn=True)
    if arr.ndim != 1:
        raise ValueError(
            f"y must be 1-D (one value per row of X), got an array of shape {arr.shape}"
        )
    return arr


def _object_array(values) -> np.ndarray:
    """A list of labels as an array without numpy's silent conversions (1 and '1' -> '1')."""
    if any(isinstance(v, list | tuple | np.ndarray) for v in values):
        return np.asarray(values)
    if len({value_kind(v) for v in values} - {None}) <= 1:
        return np.asarray(values)
    arr = np.empty(len(values), dtype=object)
    arr[:] = list(values)
    return arr


def _check_class_labels(y) -> np.ndarray:
    """Class labels as a 1-D array: one kind of label, none missing or infinite."""
    y = _check_y_shape(y)
    values = y.to_numpy() if isinstance(y, pd.Series) else y
    n_missing = int(pd.isna(pd.Series(values)).sum())
    if n_missing:
        raise ValueError(f"y holds {n_missing} missing label(s); drop those rows or label them")
    kinds: dict = {}
    if values.dtype == object:
        labels = y.index if isinstance(y, pd.Series) else range(len(values))
        kinds = rows_by_kind(values, labels)
        if len(kinds) > 1:
            raise TypeError(
                f"y mixes label types: {describe_kinds(kinds)}. Labels such as 1 and '1' look "
                "alike but are different classes; give every label the same type, e.g. "
                "y.astype(str)"
            )
        odd = set(kinds) - {"str", "number", "bool"}
        if odd:
            raise TypeError(
                f"y holds labels of type {sorted(odd)} (rows {kinds[min(odd)]}); class labels "
                "must be strings, numbers or booleans"
            )
    if values.dtype.kind == "c":
        raise ValueError("y holds complex numbers; class labels must be strings or real numbers")
    numeric = values.dtype.kind == "f" or (values.dtype == object and set(kinds) == {"number"})
    if numeric:
        as_float = values.astype(np.float64)
        bad = np.isinf(as_float)
        if bad.any():
            raise ValueError(
                f"y holds infinite label(s) at rows {_label_positions(y, bad)}; drop or fix them"
            )
        fractional = as_float != np.round(as_float)
        if fractional.any():
            first = _label_positions(y, fractional)
            raise ValueError(
                f"Unknown label type: continuous. y holds non-integer numbers (e.g. "
                f"{as_float[fractional][0].item()!r} at row {first[0]!r}) but a classifier needs "
                "discrete class labels; use MultimodalRegressor for a continuous target, or "
                "bin y"
            )
    check_classification_targets(values)
    return values


def _check_target(y) -> np.ndarray:
    """A regression target as a finite 1-D float64 array."""
    y = _check_y_shape(y)
    values = y.to_numpy() if isinstance(y, pd.Series) else y
    if values.dtype.kind == "c":
        raise ValueError(
            "y holds complex numbers; a regression target must be real (e.g. its magnitude)"
        )
    if values.dtype.kind in "mM" or isinstance(getattr(y, "dtype", None), pd.DatetimeTZDtype):
        raise TypeError(
            f"y holds dates or durations (dtype {getattr(y, 'dtype', values.dtype)}); convert "
            "them to numbers first, e.g. days since a reference date"
        )
    if values.dtype.kind not in "biuf":
        converted = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)
        bad = pd.notna(pd.Series(values)).to_numpy() & np.isnan(converted)
        if bad.any():
            first = values[bad][0]
            first = first.item() if isinstance(first, np.generic) else first
            raise ValueError(
                f"y must be numeric for a regressor, got dtype {values.dtype} with "
                f"non-numeric values at rows {_label_positions(y, bad)} (e.g. {first!r}); "
                "convert the target to numbers"
            )
        values = converted
    values = values.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"y holds {int(bad.sum())} NaN or infinite value(s) at rows "
            f"{_label_positions(y, bad)}; drop or fix those rows"
        )
    return values


def _unique_index(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a unique index: messages name rows by index label, or else by position."""
    return df if df.index.is_unique else df.reset_index(drop=True)


def _refuse_empty_rows(emb: Embeddings, labels=None) -> None:
    """Raise MissingModalityError naming the rows of ``emb`` where every modality is missing
    (by ``labels``, e.g. the DataFrame's index, or by position)."""
    none = ~emb.mask.any(axis=1)
    if none.any():
        rows = (np.arange(len(none)) if labels is None else np.asarray(labels))[none][:10]
        raise MissingModalityError(
            f"{int(none.sum())} row(s) have every modality missing (rows {rows.tolist()}); "
            "there is nothing to predict from. Remove them or provide at least one modality"
        )


def _supervised(encoder) -> bool:
    """Whether an encoder learns from the labels (``encoder.supervised``)."""
    return bool(getattr(encoder, "supervised", False))


def _accepts_groups(fusion) -> bool:
    import inspect

    try:
        return "groups" in inspect.signature(fusion.fit).parameters
    except (TypeError, ValueError):
        return False


def _fusion_has(method):
    def check(self):
        fusion = getattr(self, "fusion_", None)
        if fusion is None:
            from toolkit.fusion import make_fusion

            fusion = make_fusion(self.fusion)
        return hasattr(fusion, method)

    return check


class _MultimodalBase(_BaseComposition):
    """Shared machinery of :class:`MultimodalClassifier` and :class:`MultimodalRegressor`."""

    _parameter_constraints: dict = {
        "modalities": [list, None],
        "fusion": [str, HasMethods(["fit", "predict_output"])],
        "memory": [None, str, Path, HasMethods(["cache"]), EmbeddingCache],
        "random_state": ["random_state"],
        "encoder_cv": [Interval(Integral, 2, None, closed="left")],
    }

    def __init__(
        self, modalities=None, fusion="late", memory=None, random_state=None, encoder_cv=5
    ):
        self.modalities = modalities
        self.fusion = fusion
        self.memory = memory
        self.random_state = random_state
        self.encoder_cv = encoder_cv

    # -- nested parameters (name__param), as ColumnTransformer does -----------------------

    @property
    def _encoders(self):
        if not isinstance(self.modalities, list):
            return []
        return [
            (entry[0], entry[1])
            for entry in self.modalities
            if isinstance(entry, tuple | list) and len(entry) == 3
        ]

    @_encoders.setter
    def _encoders(self, value):
        self.modalities = [
            (name, enc, cols)
            for (name, enc), (_, _, cols) in zip(value, self.modalities, strict=True)
        ]

    def get_params(self, deep=True):
        return self._get_params("_encoders", deep=deep)

    def set_params(self, **params):
        self._set_params("_encoders", **params)
        return self

    # -- input handling -------------------------------------------------------------------

    def _spec(self):
        if self.modalities is None:
            from toolkit.encoders.tabular import TabularEncoder

            return [("tabular", TabularEncoder(), None)]
        spec = []
        names = set()
        reserved = set(type(self)._parameter_constraints)
        for entry in self.modalities:
            if not (isinstance(entry, tuple | list) and len(entry) == 3):
                raise ValueError(
                    f"each modality must be a (name, encoder, columns) triple, got {entry!r}"
                )
            name, enc, cols = entry
            if not isinstance(name, str) or "__" in name or not name:
                raise ValueError(f"modality name {name!r} must be a non-empty string without '__'")
            if name in names:
                raise ValueError(f"modality name '{name}' is used twice; names must be unique")
            if name in reserved:
                raise ValueError(
                    f"modality name '{name}' is also a parameter of {type(self).__name__}, so "
                    f"'{name}__...' parameters would be ambiguous; rename the modality "
                    f"(e.g. '{name}_data')"
                )
            if isinstance(enc, type):
                raise TypeError(
                    f"modality '{name}': encoder must be an instance, got the class "
                    f"{enc.__name__}; write {enc.__name__}()"
                )
            if not hasattr(enc, "fit") or not hasattr(enc, "encode"):
                raise TypeError(
                    f"modality '{name}': encoder must be a toolkit encoder with fit/encode "
                    f"(e.g. TabularEncoder(), TextEncoder()), got {type(enc).__name__}"
                )
            _check_columns(name, cols)
            names.add(name)
            spec.append((name, enc, cols))
        if not spec:
            raise ValueError("modalities is empty; give at least one (name, encoder, columns)")
        return spec

    def _frame(self, X, reset: bool) -> pd.DataFrame:
        import scipy.sparse

        if scipy.sparse.issparse(X):
            raise TypeError(
                "sparse input is not supported; pass a dense array or a DataFrame of columns"
            )
        if isinstance(X, dict):
            X = self._dict_frame(X)
        if self.modalities is None:
            if isinstance(X, pd.DataFrame):
                check_column_labels(X.columns)
                if X.shape[1] == 0:
                    raise ValueError(
                        f"X has 0 columns ({len(X)} rows); pass at least one feature column"
                    )
                validate_data(
                    self,
                    X,
                    reset=reset,
                    dtype=None,
                    ensure_all_finite="allow-nan",
                    skip_check_array=True,
                )
                return X
            return self._array_frame(X, reset)
        if not isinstance(X, pd.DataFrame):
            hint = "; e.g. X.to_frame()" if isinstance(X, pd.Series) else ""
            raise TypeError(
                f"X must be a pandas DataFrame (or dict of columns) holding the columns named in "
                f"modalities, got {type(X).__name__}{hint}"
            )
        check_column_labels(X.columns, mixed_types=True)  # modalities name their columns
        if reset:
            self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
            self.n_features_in_ = X.shape[1]
        if len(X) == 0:
            raise ValueError("X has 0 rows; at least one is required")
        for name, _, cols in self._spec():
            wanted = list(cols) if isinstance(cols, list | tuple) else [cols]
            missing = [c for c in wanted if c not in X.columns]
            if missing:
                raise ValueError(
                    f"modality '{name}' needs column(s) {missing}, which X does not have "
                    f"(X has {list(X.columns)[:10]}{'...' if X.shape[1] > 10 else ''})"
                )
        return X

    @staticmethod
    def _dict_frame(X: dict) -> pd.DataFrame:
        """A dict of columns (lists, arrays or Series of equal length) as a DataFrame."""
        for key, value in X.items():
            if isinstance(value, str | bytes) or not hasattr(value, "__len__"):
                raise TypeError(
                    f"X['{key}'] holds a single {type(value).__name__}; a dict input maps "
                    "each column name to a list or array with one value per row"
                )
        lengths = {k: len(v) for k, v in X.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"columns of the dict have different lengths: {lengths}; give every column one "
                "value per row"
            )
        return pd.DataFrame(
            {k: list(v) if not isinstance(v, pd.Series) else v for k, v in X.items()}
        )

    def _array_frame(self, X, reset: bool) -> pd.DataFrame:
        """A numeric 2-D array (``modalities=None``) as a DataFrame with columns x0..x{p-1}."""
        raw = X if isinstance(X, np.ndarray) else None
        if raw is not None and raw.ndim > 2:
            raise ValueError(
                f"X has {raw.ndim} dimensions (shape {raw.shape}); pass a 2-D table of "
                "shape (n_samples, n_features), or a DataFrame and named modalities"
            )
        if raw is not None and raw.dtype.kind == "c":
            raise ValueError(
                "Complex data not supported: X holds complex numbers; pass real features "
                "(e.g. the magnitude np.abs(X), or real and imaginary parts as columns)"
            )
        try:
            arr = validate_data(
                self, X, reset=reset, ensure_all_finite="allow-nan", dtype=np.float64
            )
        except (TypeError, ValueError) as exc:
            raise_non_numeric(
                exc,
                X,
                lambda i, j, value, first: (
                    f"X[{i}, {j}] (column x{j}) holds {value!r} of type {type(value).__name__}: "
                    f"{first} With modalities=None X must be numeric; to encode text or "
                    "categories pass a DataFrame and name the modalities"
                ),
            )
        return pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])])

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
            if _supervised(enc):
                if y is None:
                    raise ValueError(
                        f"modality '{name}': {type(enc).__name__} learns from the labels; fit "
                        "the model with fit(X, y) (which also cross-fits its outputs), or pass "
                        "y to fit_encoders"
                    )
                kwargs = {} if groups is None else {"groups": groups}
                enc.fit(items, y, **kwargs)
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
        from toolkit.model_selection import inner_folds

        df = _unique_index(df)
        seed = check_random_state_seed(self.random_state)
        out = {}
        for name, _, cols in self._spec():
            enc = self.encoders_[name]
            if not _supervised(enc):
                continue
            items = df if cols is None else _column_items(df, cols)
            folds = inner_folds(
                y, groups, self.encoder_cv, isinstance(self, ClassifierMixin), seed
            )
            if folds is None:
                raise ValueError(
                    f"modality '{name}': cannot cross-fit {type(enc).__name__} (fewer than 2 "
                    "inner folds possible: a class or the groups are too few); give more rows "
                    "per class and group, or use an encoder that does not learn from labels"
                )
            block = None
            for train, test in folds:
                fold_enc = clone(enc)
                kwargs = {} if groups is None else {"groups": groups[train]}
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
            enc = self.encoders_[name]
            if _supervised(enc):
                block, present = self._supervised_block(enc, items)
            elif getattr(enc, "fixed", False) and cache is not None:
                # Fixed encoders do not learn from data: with a cache, each raw item is
                # encoded once across fits, folds and candidates.
                block, present = cache.encode(enc, items)
            elif getattr(enc, "fixed", False):
                block, present = ensure_fitted(enc, items).encode(items)
            else:
                block, present = enc.encode(items)
            blocks[name] = block
            masks.append(present)
        emb = Embeddings(blocks, np.column_stack(masks))
        _refuse_empty_rows(emb, df.index)
        return emb

    def _fusion(self):
        from toolkit.fusion import make_fusion

        return seed_if_unset(
            clone(make_fusion(self.fusion)), check_random_state_seed(self.random_state)
        )

    # -- public API shared by both estimators ---------------------------------------------

    def _check_embeddings(
        self, emb: Embeddings, allow_empty: bool = False, check_widths: bool = True
    ) -> Embeddings:
        """Precomputed Embeddings (e.g. from toolkit.distributed.load_embeddings) as input."""
        expected = getattr(self, "modality_names_", None)
        if expected is None and self.modalities is not None:
            expected = [name for name, _, _ in self._spec()]
        if expected is not None and list(emb.names) != list(expected):
            raise ValueError(
                f"Embeddings hold modalities {emb.names}; the model expects {expected}"
            )
        widths = getattr(self, "embedding_widths_", None) if check_widths else None
        wrong = {
            n: (int(emb.blocks[n].shape[1]), w)
            for n, w in (widths or {}).items()
            if emb.blocks[n].shape[1] != w
        }
        if wrong:
            detail = ", ".join(
                f"'{n}' is {got} wide, not {want}" for n, (got, want) in wrong.items()
            )
            raise ValueError(
                f"Embeddings do not match the model: {detail}; encode the data with the "
                "encoders the model was fitted with (model.encode(X))"
            )
        if not allow_empty:
            _refuse_empty_rows(emb)
        return emb

    def _fit(self, X, y, n_classes, groups=None):
        """Fit on a validated frame or on Embeddings; ``y`` is already checked."""
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)} values; they must match")
        from toolkit.model_selection import check_groups

        groups = check_groups(groups, len(y))
        if isinstance(X, Embeddings):
            # Fitted on stored embeddings: predict / explain take Embeddings too. Encoders
            # fitted by fit_encoders for these modalities are kept, so the model still
            # encodes raw data (the Embeddings are taken to come from them).
            emb = self._check_embeddings(X, check_widths=False)
            kept = getattr(self, "encoders_", None) or {}
            if list(kept) != list(emb.names):
                self.encoders_ = {}
        else:
            emb = self._fit_encode(X, y, groups)
        self.modality_names_ = list(emb.names)
        self.embedding_widths_ = {n: int(emb.blocks[n].shape[1]) for n in emb.names}
        fusion = self._fusion()
        if groups is None:
            self.fusion_ = fusion.fit(emb, y, n_classes=n_classes)
        else:
            if not _accepts_groups(fusion):
                raise TypeError(
                    f"{type(fusion).__name__}.fit takes no groups argument, so it cannot keep "
                    "groups apart in its inner splits; add a 'groups=None' parameter to its fit "
                    "or fit without groups"
                )
            self.fusion_ = fusion.fit(emb, y, n_classes=n_classes, groups=groups)
        self.prior_ = self.fusion_.prior_
        return self

    def fit_encoders(self, X, y=None):
        """Fit the modalities' encoders on ``X`` only (no fusion strategy is fitted).

        ``X`` is validated as :meth:`fit` validates it. Together with :meth:`encode` this
        lets a caller encode a training set and a test set once and then fit one or more
        models on the embeddings (``fit(embeddings, y)``), as a study does for each fold.
        ``fit(embeddings, y)`` keeps these encoders (the embeddings are taken to come from
        them), so the fitted model still encodes and predicts raw data.

        Parameters
        ----------
        X : pandas DataFrame or dict of columns (or a 2-D array when ``modalities=None``)
        y : array-like of shape (n_samples,), default=None
            Labels for encoders that learn from them (``encoder.supervised``, e.g.
            ``ImageEncoder(backend="cnn")``); ignored by the others. Note that
            :meth:`encode` of the training rows then gives the encoder's in-sample outputs:
            ``fit(X, y)`` cross-fits them instead.

        Returns
        -------
        self
            With ``encoders_``, ``modality_names_``, ``n_features_in_`` and
            ``feature_names_in_`` set.

        Examples
        --------
        >>> import numpy as np, pandas as pd
        >>> from toolkit import MultimodalClassifier, TabularEncoder
        >>> df = pd.DataFrame({"x": np.arange(6.0), "z": np.ones(6)})
        >>> clf = MultimodalClassifier([("a", TabularEncoder(), ["x"]),
        ...                             ("b", TabularEncoder(), ["z"])], random_state=0)
        >>> emb = clf.fit_encoders(df).encode(df)
        >>> emb.names, emb.n_samples
        (['a', 'b'], 6)
        >>> clf.fit(emb, [0, 1, 0, 1, 0, 1]).predict(emb).shape
        (6,)
        """
        self._validate_params()
        if isinstance(X, Embeddings):
            raise TypeError(
                "fit_encoders needs raw data (a DataFrame or dict of columns); Embeddings are "
                "already encoded: pass them to fit, predict or explain directly"
            )
        frame = self._frame(X, reset=True)
        if y is not None:
            y = _check_y_shape(y)
            y = y.to_numpy() if isinstance(y, pd.Series) else np.asarray(y)
            if len(y) != len(frame):
                raise ValueError(
                    f"X has {len(frame)} rows but y has {len(y)} values; they must match"
                )
        self._fit_encoders(frame, y)
        return self

    def fit_encode(self, X, y, groups=None) -> Embeddings:
        """Fit the encoders on ``X`` and return ``X``'s embeddings as :meth:`fit` trains
        the fusion on them (no fusion strategy is fitted).

        Unlike ``fit_encoders(X, y).encode(X)``, an encoder that learns from the labels
        (``encoder.supervised``) contributes its cross-fitted outputs: each row's block
        comes from a clone trained on the other ``encoder_cv`` inner folds (whole groups
        with ``groups``), while ``encoders_`` (used by :meth:`encode` on new rows) is
        trained on every row. ``fit(fit_encode(X, y, groups), y, groups=groups)`` is then
        the same model as ``fit(X, y, groups=groups)``, as a study does for each fold.

        Parameters
        ----------
        X : pandas DataFrame or dict of columns (or a 2-D array when ``modalities=None``)
        y : array-like of shape (n_samples,)
            Class labels (classifier: ``classes_`` is set as :meth:`fit` sets it) or
            targets (regressor).
        groups : array-like of shape (n_samples,), default=None

        Returns
        -------
        Embeddings
        """
        self._validate_params()
        if isinstance(X, Embeddings):
            raise TypeError(
                "fit_encode needs raw data (a DataFrame or dict of columns); Embeddings are "
                "already encoded: pass them to fit, predict or explain directly"
            )
        from toolkit.model_selection import check_groups

        frame = self._frame(X, reset=True)
        y = self._fit_target(y)
        if len(y) != len(frame):
            raise ValueError(f"X has {len(frame)} rows but y has {len(y)} values; they must match")
        return self._fit_encode(frame, y, check_groups(groups, len(y)))

    def encode(self, X) -> Embeddings:
        """Encode ``X`` with the fitted encoders (each raw item read once; ``memory`` is used).

        Parameters
        ----------
        X : pandas DataFrame or dict of columns (or a 2-D array when ``modalities=None``), or
            Embeddings (checked against ``modality_names_`` and returned as they are)

        Returns
        -------
        Embeddings
            One block per modality and the availability mask (n_samples, n_modalities).

        Raises
        ------
        MissingModalityError
            A row has every modality missing.
        """
        check_is_fitted(self, "encoders_")
        if isinstance(X, Embeddings):
            return self._check_embeddings(X)
        if not self.encoders_:
            raise ValueError(
                "this model was fitted on precomputed Embeddings and has no encoders; pass "
                "Embeddings (e.g. from toolkit.distributed.load_embeddings), or fit on raw data"
            )
        return self._encode(self._frame(X, reset=False))

    def embed(self, X) -> Embeddings:
        """:meth:`encode` for a fully fitted model (raises NotFittedError before ``fit``)."""
        check_is_fitted(self, "fusion_")
        return self.encode(X)

    def output(self, X) -> np.ndarray:
        """The model's output: class probabilities (classifier) or predictions (regressor).

        Unlike :meth:`predict_proba` / :meth:`predict`, Embeddings may hold rows where no
        modality is available (e.g. every modality removed from a coalition): those rows
        get the prior ``prior_`` (training class frequencies or target mean), the answer
        of a model that knows nothing about the row.

        Parameters
        ----------
        X : pandas DataFrame or dict of columns (or a 2-D array when ``modalities=None``), or
            Embeddings of the model's modalities (any availability mask)

        Returns
        -------
        ndarray of shape (n_samples, n_classes) or (n_samples,)
        """
        check_is_fitted(self, "fusion_")
        if isinstance(X, Embeddings):
            return self._output(self._check_embeddings(X, allow_empty=True))
        return self._output(self.encode(X))

    def _output(self, emb: Embeddings) -> np.ndarray:
        """The fusion's output on (possibly masked) Embeddings, the prior where no modality is
        available; never NaN or infinite."""
        out = np.asarray(self.fusion_.predict_output(emb))
        if out.ndim == 2 and (self.prior_ == 0).any():
            # a class absent from training (``classes=``) gets probability 0 whatever the
            # strategy (a neural head can leave it a small value)
            out = np.where(self.prior_ == 0, 0.0, out)
            total = out.sum(axis=1, keepdims=True)
            out = np.divide(out, total, out=np.tile(self.prior_, (len(out), 1)), where=total > 0)
        empty = ~emb.mask.any(axis=1)
        if empty.any():
            out[empty] = self.prior_ if out.ndim == 2 else self.prior_[0]
        bad = ~np.isfinite(out).reshape(len(out), -1).all(axis=1)
        if bad.any():
            raise ValueError(
                f"the fusion ({type(self.fusion_).__name__}) produced NaN or infinite outputs "
                f"for rows {np.flatnonzero(bad)[:10].tolist()}; check those rows' inputs for "
                "extreme values"
            )
        return out

    def explain(self, X, **kwargs):
        """Exact modality-level Shapley values of the predictions on ``X``.

        Shortcut for ``ModalityExplainer(self, **kwargs)(X)``; returns a
        ``shap.Explanation`` with one feature per modality.
        """
        from toolkit.explain import ModalityExplainer

        return ModalityExplainer(self, **kwargs)(X)

    @available_if(_fusion_has("gate_values"))
    def gate_values(self, X) -> pd.DataFrame:
        """Gated fusion's per-sample gate weights, one column per modality (model-internal)."""
        check_is_fitted(self, "fusion_")
        values = self.fusion_.gate_values(self.embed(X))
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(values, columns=self.modality_names_, index=index)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        if self.modalities is not None:
            tags.input_tags.two_d_array = False
            tags.input_tags.string = True
        return tags


class MultimodalClassifier(ClassifierMixin, _MultimodalBase):
    """Classify rows whose columns hold text, images, audio, scans and tabular data.

    Each modality is a ``(name, encoder, columns)`` triple, as in scikit-learn's
    ``ColumnTransformer``; encoders turn their column(s) into an embedding block and the
    fusion strategy predicts from the blocks. Missing cells (None, NaN, empty text)
    mark the modality absent for that row; every strategy predicts from the modalities
    a row has. Nested parameters route with ``name__param`` and ``fusion__param``.

    Parameters
    ----------
    modalities : list of (str, encoder, str or list of str), default=None
        ``None`` treats the whole input (e.g. a 2-D numeric array) as one tabular
        modality named ``"tabular"``.
    fusion : {"late", "early", "gated"} or fusion object, default="late"
        ``"late"`` is ``LateFusion()`` (stacked per-modality heads), ``"early"`` is
        ``EarlyFusion()``, ``"gated"`` is ``GatedFusion()``.
    memory : str, path, joblib.Memory, EmbeddingCache or None, default=None
        Folder of a per-item cache for the embeddings of *fixed* encoders (pretrained
        networks and feature extractors, whose output does not depend on the training
        data): each raw item is encoded once across fits, folds and grid-search
        candidates (see :class:`toolkit.cache.EmbeddingCache`). Files are keyed on a
        sampled content fingerprint (size, times, inode and three 64 KiB blocks); pass
        ``EmbeddingCache(folder, fingerprint="full")`` to hash every byte instead.
    random_state : int, RandomState or None
        Seeds every encoder and fusion strategy whose own ``random_state`` is None.
    encoder_cv : int, default=5
        Inner folds for cross-fitting encoders that learn from the labels
        (``encoder.supervised``, e.g. ``ImageEncoder(backend="cnn")``): the fusion is
        trained on each training row's output from a network trained on the other folds
        (whole groups per fold with ``groups``), never on an encoder's in-sample outputs;
        the network used to predict is trained on every row. Such an encoder contributes
        its head outputs (class scores) to the fusion, the layer whose meaning does not
        depend on which rows trained it.
    classes : array-like of shape (n_classes,), default=None
        Every class label the model knows, when ``y`` may lack some of them (a
        cross-validation fold missing a rare class): ``classes_`` is then their sorted
        values and ``predict_proba`` has one column per class whatever ``fit`` saw (a class
        absent from ``y`` gets prior 0). As ``OneHotEncoder(categories=...)`` does, this is
        a constructor parameter, so it survives ``clone`` and grid searches. ``None``: the
        classes of ``y``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    encoders_ : dict of str to fitted encoder
    fusion_ : fitted fusion strategy
    modality_names_ : list of str
    prior_ : ndarray of shape (n_classes,)
        Training class frequencies (the output when no modality is known).
    n_features_in_, feature_names_in_

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from toolkit import MultimodalClassifier, TabularEncoder, TextEncoder
    >>> rng = np.random.default_rng(0)
    >>> words = np.array(["great", "awful"])
    >>> y = rng.integers(0, 2, 80)
    >>> df = pd.DataFrame({"note": [f"a {w} day" for w in words[y]],
    ...                    "age": rng.normal(50, 10, 80)})
    >>> clf = MultimodalClassifier(
    ...     modalities=[("text", TextEncoder(n_components=8), "note"),
    ...                 ("clinical", TabularEncoder(), ["age"])],
    ...     fusion="early", random_state=0).fit(df, y)
    >>> clf.score(df, y)
    1.0
    """

    _parameter_constraints: dict = {
        **_MultimodalBase._parameter_constraints,
        "classes": ["array-like", None],
    }

    def __init__(
        self,
        modalities=None,
        fusion="late",
        memory=None,
        random_state=None,
        classes=None,
        encoder_cv=5,
    ):
        super().__init__(
            modalities=modalities,
            fusion=fusion,
            memory=memory,
            random_state=random_state,
            encoder_cv=encoder_cv,
        )
        self.classes = classes

    def _classes(self, y: np.ndarray) -> np.ndarray:
        """The ``classes`` parameter as distinct labels that include every label of ``y``."""
        classes = _check_y_shape(self.classes)
        classes = classes.to_numpy() if isinstance(classes, pd.Series) else classes
        if len(np.unique(classes)) != len(classes):
            raise ValueError(f"classes lists a label more than once: {classes.tolist()}")
        unknown = np.unique(y[~np.isin(y, classes)])
        if unknown.size:
            raise ValueError(
                f"y holds label(s) {unknown[:10].tolist()} that are not in classes="
                f"{classes[:10].tolist()}; add them to classes or leave classes=None"
            )
        return classes

    def fit(self, X, y, groups=None):
        """Encode every modality once and fit the fusion strategy.

        Parameters
        ----------
        X : pandas DataFrame or dict of columns (or a 2-D array when ``modalities=None``), or
            precomputed :class:`~toolkit.Embeddings` (then predict and explain take
            Embeddings too)
        y : array-like of shape (n_samples,)
            Class labels (any hashable type).
        groups : array-like of shape (n_samples,), default=None
            Group label of each row (patient, speaker, site). Every split the fusion makes
            inside ``fit`` (stacking's out-of-fold predictions, inner cross-validation,
            early stopping, ``fusion="auto"``) keeps each group on one side. Routed by
            scikit-learn's metadata routing: ``clf.set_fit_request(groups=True)`` makes
            ``cross_validate(..., params={"groups": g})`` and ``GridSearchCV`` pass it.
        """
        self._validate_params()
        df = X if isinstance(X, Embeddings) else self._frame(X, reset=True)
        codes = self._fit_target(y)
        return self._fit(df, codes, n_classes=len(self.classes_), groups=groups)

    def _fit_target(self, y) -> np.ndarray:
        """Checked labels as class codes; sets ``classes_``."""
        y = _check_class_labels(y)
        from sklearn.preprocessing import LabelEncoder

        self._label_encoder = LabelEncoder().fit(y if self.classes is None else self._classes(y))
        self.classes_ = self._label_encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                f"y has only one class ({getattr(self.classes_[0], 'item', lambda: self.classes_[0])()!r}); "
                "a classifier needs at least 2 classes"
            )
        return self._label_encoder.transform(y)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns in ``classes_`` order."""
        return self._output(self.embed(X))

    def predict_log_proba(self, X) -> np.ndarray:
        return np.log(np.clip(self.predict_proba(X), 1e-300, 1.0))

    def predict(self, X) -> np.ndarray:
        """Most probable class of each row."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    @available_if(_fusion_has("decision_function"))
    def decision_function(self, X) -> np.ndarray:
        """Decision function of the fusion head (early and gated fusion)."""
        check_is_fitted(self, "fusion_")
        return self.fusion_.decision_function(self.embed(X))


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

    def fit(self, X, y, groups=None):
        """Encode every modality once and fit the fusion strategy on a numeric target.

        ``groups`` (one label per row) keeps each group on one side of every split the
        fusion makes inside ``fit``; see :meth:`MultimodalClassifier.fit`.
        """
        self._validate_params()
        df = X if isinstance(X, Embeddings) else self._frame(X, reset=True)
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
        from sklearn.metrics import r2_score

        from toolkit.fusion.base import _target_exponent

        y = _check_target(y)
        pred = self.predict(X)
        e = _target_exponent(np.concatenate([y, pred]))
        return float(r2_score(np.ldexp(y, -e), np.ldexp(pred, -e), sample_weight=sample_weight))


__all__ = ["MultimodalClassifier", "MultimodalRegressor"]
