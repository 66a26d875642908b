""":class:`MultimodalClassifier`: encoders + a fusion strategy, for class labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from toolkit.embeddings import Embeddings
from toolkit.estimators.base import _fusion_has, _MultimodalBase
from toolkit.estimators.checks import _check_class_labels, _check_y_shape


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

    #: Saved models (``toolkit.save``) and pickles name the class by this path, which
    #: ``toolkit.estimators`` re-exports: the split into modules changed no saved name.
    __module__ = "toolkit.estimators"

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
        y, groups = self._aligned(X, y, groups)
        codes = self._fit_target(y)
        return self._fit(df, codes, n_classes=len(self.classes_), groups=groups)

    def _fit_target(self, y) -> np.ndarray:
        """Checked labels as class codes; sets ``classes_``."""
        y = _check_class_labels(y)
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

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy of ``predict(X)`` against ``y`` (a pandas ``y`` is paired with ``X``'s
        rows by label, as in :meth:`fit`)."""
        return super().score(X, self._aligned(X, y)[0], sample_weight=sample_weight)

    @available_if(_fusion_has("decision_function"))
    def decision_function(self, X) -> np.ndarray:
        """Decision function of the fusion head (early and gated fusion)."""
        check_is_fitted(self, "fusion_")
        return self.fusion_.decision_function(self.embed(X))
