"""MultimodalClassifier and MultimodalRegressor: encoders + a fusion strategy, sklearn-style."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin, RegressorMixin, clone
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.metaestimators import _BaseComposition, available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from toolkit._utils import check_random_state_seed, seed_if_unset
from toolkit.cache import EmbeddingCache, as_cache, ensure_fitted
from toolkit.embeddings import Embeddings
from toolkit.exceptions import MissingModalityError


def _column_items(df: pd.DataFrame, columns):
    """One modality's input: a Series for a single column, a DataFrame for several."""
    if isinstance(columns, (list, tuple)):
        return df[list(columns)]
    return df[columns]


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
    }

    def __init__(self, modalities=None, fusion="late", memory=None, random_state=None):
        self.modalities = modalities
        self.fusion = fusion
        self.memory = memory
        self.random_state = random_state

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
            if not hasattr(enc, "fit") or not hasattr(enc, "encode"):
                raise TypeError(
                    f"modality '{name}': encoder must be a toolkit encoder with fit/encode, "
                    f"got {type(enc).__name__}"
                )
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
        if self.modalities is None:
            if isinstance(X, dict):
                X = pd.DataFrame(X)
            if isinstance(X, pd.DataFrame):
                validate_data(
                    self,
                    X,
                    reset=reset,
                    dtype=None,
                    ensure_all_finite="allow-nan",
                    skip_check_array=True,
                )
                return X
            arr = validate_data(
                self, X, reset=reset, ensure_all_finite="allow-nan", dtype=np.float64
            )
            return pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])])
        if isinstance(X, dict):
            lengths = {k: len(v) for k, v in X.items()}
            if len(set(lengths.values())) > 1:
                raise ValueError(f"columns of the dict have different lengths: {lengths}")
            X = pd.DataFrame(
                {k: list(v) if not isinstance(v, pd.Series) else v for k, v in X.items()}
            )
        if not isinstance(X, pd.DataFrame):
            raise TypeError(
                f"X must be a pandas DataFrame (or dict of columns) holding the columns named in "
                f"modalities, got {type(X).__name__}"
            )
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

    def _encode(self, df: pd.DataFrame, fit: bool) -> Embeddings:
        cache = as_cache(self.memory)
        blocks, masks = {}, []
        if fit:
            self.encoders_ = {}
            seed = check_random_state_seed(self.random_state)
        for name, enc, cols in self._spec():
            items = df if cols is None else _column_items(df, cols)
            if fit:
                enc = clone(enc)
                seed_if_unset(enc, seed)
                self.encoders_[name] = enc
            else:
                enc = self.encoders_[name]
            if getattr(enc, "fixed", False):
                # Fixed encoders do not learn from data: with a cache, each raw item is
                # encoded once across fits, folds and candidates.
                if cache is not None:
                    block, present = cache.encode(enc, items)
                else:
                    block, present = ensure_fitted(enc, items).encode(items)
            elif fit:
                block, present = enc.fit(items).encode(items)
            else:
                block, present = enc.encode(items)
            blocks[name] = block
            masks.append(present)
        emb = Embeddings(blocks, np.column_stack(masks))
        none = ~emb.mask.any(axis=1)
        if none.any():
            rows = list(df.index[none][:10])
            raise MissingModalityError(
                f"{int(none.sum())} row(s) have every modality missing (rows {rows}); there is "
                "nothing to predict from. Remove them or provide at least one modality"
            )
        return emb

    def _fusion(self):
        from toolkit.fusion import make_fusion

        return seed_if_unset(
            clone(make_fusion(self.fusion)), check_random_state_seed(self.random_state)
        )

    # -- public API shared by both estimators ---------------------------------------------

    def _check_embeddings(self, emb: Embeddings) -> Embeddings:
        """Precomputed Embeddings (e.g. from toolkit.distributed.load_embeddings) as input."""
        expected = getattr(self, "modality_names_", None)
        if expected is None and self.modalities is not None:
            expected = [name for name, _, _ in self._spec()]
        if expected is not None and list(emb.names) != list(expected):
            raise ValueError(
                f"Embeddings hold modalities {emb.names}; the model expects {expected}"
            )
        none = ~emb.mask.any(axis=1)
        if none.any():
            raise MissingModalityError(
                f"{int(none.sum())} row(s) have every modality missing (rows {list(np.flatnonzero(none)[:10])})"
            )
        return emb

    def _fit(self, df, y, n_classes):
        if len(y) != len(df):
            raise ValueError(f"X has {len(df)} rows but y has {len(y)} values; they must match")
        if isinstance(df, Embeddings):
            # Fitted on stored embeddings: predict / explain take Embeddings too.
            emb = self._check_embeddings(df)
            self.encoders_ = {}
        else:
            emb = self._encode(df, fit=True)
        self.modality_names_ = list(emb.names)
        self.fusion_ = self._fusion().fit(emb, y, n_classes=n_classes)
        self.prior_ = self.fusion_.prior_
        return self

    def embed(self, X) -> Embeddings:
        """Encode ``X`` with the fitted encoders (raw items read once).

        Returns
        -------
        Embeddings
            One block per modality and the availability mask (n_samples, n_modalities).
        """
        check_is_fitted(self, "fusion_")
        if isinstance(X, Embeddings):
            return self._check_embeddings(X)
        if not self.encoders_:
            raise ValueError(
                "this model was fitted on precomputed Embeddings and has no encoders; pass "
                "Embeddings (e.g. from toolkit.distributed.load_embeddings), or fit on raw data"
            )
        return self._encode(self._frame(X, reset=False), fit=False)

    def _output(self, emb: Embeddings) -> np.ndarray:
        """The fusion's output on (possibly masked) Embeddings."""
        return self.fusion_.predict_output(emb)

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
        candidates (see :class:`toolkit.cache.EmbeddingCache`).
    random_state : int, RandomState or None
        Seeds every encoder and fusion strategy whose own ``random_state`` is None.

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

    def fit(self, X, y):
        """Encode every modality once and fit the fusion strategy.

        Parameters
        ----------
        X : pandas DataFrame or dict of columns (or a 2-D array when ``modalities=None``), or
            precomputed :class:`~toolkit.Embeddings` (then predict and explain take
            Embeddings too)
        y : array-like of shape (n_samples,)
            Class labels (any hashable type).
        """
        self._validate_params()
        df = X if isinstance(X, Embeddings) else self._frame(X, reset=True)
        if y is None:
            raise ValueError("requires y to be passed, but the target y is None")
        y = column_or_1d(np.asarray(y), warn=True)
        n_missing = int(pd.isna(pd.Series(y)).sum())
        if n_missing:
            raise ValueError(f"y holds {n_missing} missing label(s); drop those rows or label them")
        check_classification_targets(y)
        from sklearn.preprocessing import LabelEncoder

        self._label_encoder = LabelEncoder().fit(y)
        self.classes_ = self._label_encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                f"y has only one class ({getattr(self.classes_[0], 'item', lambda: self.classes_[0])()!r}); "
                "a classifier needs at least 2 classes"
            )
        return self._fit(df, self._label_encoder.transform(y), n_classes=len(self.classes_))

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
    training target mean.

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

    def fit(self, X, y):
        """Encode every modality once and fit the fusion strategy on a numeric target."""
        self._validate_params()
        df = X if isinstance(X, Embeddings) else self._frame(X, reset=True)
        if y is None:
            raise ValueError("requires y to be passed, but the target y is None")
        y = column_or_1d(np.asarray(y), warn=True)
        if not np.issubdtype(y.dtype, np.number):
            try:
                y = y.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError(
                    f"y must be numeric for a regressor, got dtype {y.dtype}"
                ) from None
        y = y.astype(np.float64)
        if not np.all(np.isfinite(y)):
            raise ValueError(
                f"y holds {int((~np.isfinite(y)).sum())} NaN or infinite value(s); drop or fix those rows"
            )
        return self._fit(df, y, n_classes=None)

    def predict(self, X) -> np.ndarray:
        """Predicted target of each row, shape (n_samples,)."""
        return self._output(self.embed(X))


__all__ = ["MultimodalClassifier", "MultimodalRegressor"]
