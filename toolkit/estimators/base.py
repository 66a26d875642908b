"""The machinery :class:`MultimodalClassifier` and :class:`MultimodalRegressor` share: nested
parameters, input frames, encoding (with cross-fitting of supervised encoders), the fusion.
"""

from __future__ import annotations

import inspect
from numbers import Integral
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse
from sklearn.base import clone
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.metaestimators import _BaseComposition, available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from toolkit._utils import (
    check_column_labels,
    check_random_state_seed,
    raise_non_numeric,
    seed_if_unset,
)
from toolkit.cache import EmbeddingCache
from toolkit.embeddings import Embeddings
from toolkit.estimators.checks import (
    _check_columns,
    _check_y_shape,
    _refuse_empty_rows,
    align_to_rows,
    check_class_only_modalities,
    check_groups_classes,
    warn_target_columns,
)
from toolkit.estimators.encoding import EncodingMixin
from toolkit.model_selection import check_groups


def _accepts_groups(fusion) -> bool:
    try:
        return "groups" in inspect.signature(fusion.fit).parameters
    except (TypeError, ValueError):
        return False


def _fusion_has(method):
    def check(self):
        fusion = getattr(self, "fusion_", None)
        if fusion is None:
            from toolkit.fusion import make_fusion  # imports torch: on first use

            fusion = make_fusion(self.fusion)
        return hasattr(fusion, method)

    return check


class _MultimodalBase(EncodingMixin, _BaseComposition):
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
            from toolkit.encoders.tabular import TabularEncoder  # imports torch: on first use

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

    def _fusion(self):
        from toolkit.fusion import make_fusion  # imports torch: on first use

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
        groups = self._fit_groups(groups, y)
        classification = n_classes is not None
        if isinstance(X, Embeddings):
            # Fitted on stored embeddings: predict / explain take Embeddings too. Encoders
            # fitted by fit_encoders for these modalities are kept, so the model still
            # encodes raw data (the Embeddings are taken to come from them).
            emb = self._check_embeddings(X, check_widths=False)
            kept = getattr(self, "encoders_", None) or {}
            if list(kept) != list(emb.names):
                self.encoders_ = {}
        else:
            warn_target_columns(X, self._spec(), y, classification)
            emb = self._fit_encode(X, y, groups)
        if classification:
            check_class_only_modalities(emb, y, self.classes_)
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

    def _fit_groups(self, groups, y) -> np.ndarray | None:
        """``groups`` checked for the rows of ``y`` (class codes or targets); a classifier
        refuses groups under which a class lies in one group (e.g. groups = the labels)."""
        groups = check_groups(groups, len(y))
        if hasattr(self, "classes_") and groups is not None:
            check_groups_classes(groups, y, self.classes_)
        return groups

    def _aligned(self, X, y, groups=None):
        """``y`` and ``groups`` paired with ``X``'s rows by label when they are pandas
        objects indexed like ``X`` (see :func:`toolkit.estimators.checks.align_to_rows`)."""
        return align_to_rows(X, y), align_to_rows(X, groups, "groups")

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
            y = _check_y_shape(align_to_rows(X, y))
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
        frame = self._frame(X, reset=True)
        y, groups = self._aligned(X, y, groups)
        y = self._fit_target(y)
        if len(y) != len(frame):
            raise ValueError(f"X has {len(frame)} rows but y has {len(y)} values; they must match")
        return self._fit_encode(frame, y, self._fit_groups(groups, y))

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
        from toolkit.explain import ModalityExplainer  # imports shap: on first use

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
