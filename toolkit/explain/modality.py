"""Exact (or permutation-sampled) Shapley values of the modalities of a fitted model."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import is_classifier
from sklearn.utils import check_random_state

from toolkit.explain.shapley import exact_interactions, exact_shapley, permutation_shapley
from toolkit.explain.value import value_function


class ModalityExplainer:
    """Shapley values of each modality's contribution to a fitted multimodal model's output.

    The value of a coalition S of modalities is the model's output when the modalities
    outside S are removed. Raw items are encoded once; the 2^M coalition values are
    computed on the cached :class:`~toolkit.Embeddings`, so the values are exact (no
    sampling) for up to ``max_exact_modalities`` modalities. Coalition values come from
    :func:`toolkit.explain.value_function`, the v(S) that the drill-down also uses
    (:meth:`value_function` returns this explainer's).

    Parameters
    ----------
    model : fitted MultimodalClassifier or MultimodalRegressor
    removal : {"missing", "background"}, default="missing"
        ``"missing"``: a removed modality is marked absent and the model's own
        missing-modality path answers (what it would predict without that modality);
        the empty coalition's value is the prior (training class frequencies or target
        mean), so ``base_values`` mean the same for every fusion strategy, and a
        modality absent from a row gets exactly 0 for that row. ``"background"``: a
        removed modality takes the embeddings of background rows, and the value is
        averaged over them (interventional Shapley values; base = mean background output).
    background : DataFrame, dict or Embeddings, optional
        Background rows for ``removal="background"`` (at most ``max_background`` are
        used, drawn with ``random_state``).
    output : {"probability", "log_odds"} or None
        Classifier output scale: probabilities (default) or log-odds (binary: logit of
        ``classes_[1]``; multi-class: log-probabilities). Regressors explain the raw
        prediction.
    max_exact_modalities : int, default=12
        Above this, Shapley values are estimated from ``n_permutations`` random
        permutations of the modalities (antithetic pairs, seeded), each walked from the
        empty to the full coalition; efficiency still holds exactly.
    n_permutations : int, default=64
    max_background : int, default=100
    random_state : int, RandomState or None
    interactions : bool, default=False
        Return pairwise Shapley interaction values instead (see :meth:`interaction_values`):
        ``model.explain(X, interactions=True)``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from toolkit import ModalityExplainer, MultimodalClassifier, TabularEncoder
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"x": rng.normal(size=200), "z": rng.normal(size=200)})
    >>> y = (df["x"] > 0).astype(int)
    >>> clf = MultimodalClassifier(
    ...     modalities=[("a", TabularEncoder(), ["x"]), ("b", TabularEncoder(), ["z"])],
    ...     random_state=0).fit(df, y)
    >>> explanation = ModalityExplainer(clf)(df)
    >>> explanation.values.shape, list(explanation.feature_names)
    ((200, 2), ['a', 'b'])
    """

    def __init__(
        self,
        model,
        removal="missing",
        background=None,
        output=None,
        max_exact_modalities=12,
        n_permutations=64,
        max_background=100,
        random_state=None,
        interactions=False,
    ):
        self.model = model
        self.removal = removal
        self.background = background
        self.output = output
        self.max_exact_modalities = max_exact_modalities
        self.n_permutations = n_permutations
        self.max_background = max_background
        self.random_state = random_state
        self.interactions = interactions

    # -- main entry -----------------------------------------------------------------------

    def __call__(self, X):
        """Explain the rows of ``X`` (a DataFrame, dict of columns or Embeddings)."""
        return self.explain(X)

    def value_function(self, X):
        """This explainer's v(S) on the rows of ``X``: see :func:`toolkit.explain.value_function`."""
        for name, value in (
            ("max_exact_modalities", self.max_exact_modalities),
            ("n_permutations", self.n_permutations),
        ):
            if not isinstance(value, Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        return value_function(
            self.model,
            X,
            removal=self.removal,
            background=self.background,
            output=self.output,
            max_background=self.max_background,
            random_state=self.random_state,
        )

    def explain(self, X):
        """Return a ``shap.Explanation`` of the modalities' contributions for the rows of X.

        With ``interactions=True`` this is :meth:`interaction_values`.

        Returns
        -------
        shap.Explanation
            ``values`` of shape (n_samples, n_modalities) for regression and binary
            classification (the output for ``classes_[1]``), or (n_samples,
            n_modalities, n_classes) for multi-class; ``base_values``; ``data`` (1 where
            the modality is available); ``feature_names`` = modality names;
            ``output_names`` = class names (multi-class).
        """
        if self.interactions:
            return self.interaction_values(X)
        value = self.value_function(X)
        M = value.n_players
        if M <= self.max_exact_modalities:
            V = value.all_coalitions()  # (2^M, n[, K])
            phi = exact_shapley(V, M)  # (M, n[, K])
            base = V[0]
        else:
            rng = check_random_state(self.random_state)
            phi, base, _ = permutation_shapley(value, M, self.n_permutations, rng)
        values = np.moveaxis(phi, 0, 1)  # (n, M[, K])
        return self._explanation(values, base, value.embeddings, value.names)

    def interaction_values(self, X):
        """Exact pairwise Shapley interaction values of the modalities for the rows of X.

        From the same 2^M coalition values as the Shapley values (no extra fusion
        evaluation): ``values[i, a, b]`` (a != b) is half the Shapley interaction index of
        modalities a and b for row i (Grabisch and Roubens), shared equally between
        ``[a, b]`` and ``[b, a]``; ``values[i, a, a]`` is a's main effect, so that each row
        of the matrix adds up to the modality's Shapley value and the matrix to the output
        minus ``base_values`` (shap's TreeExplainer convention). A modality absent from a
        row gets exactly 0 in its row and column.

        Returns
        -------
        shap.Explanation
            ``values`` of shape (n_samples, n_modalities, n_modalities) for regression and
            binary classification, (n_samples, n_modalities, n_modalities, n_classes) for
            multi-class; ``base_values``, ``data`` (availability), ``feature_names`` and
            ``output_names`` as for :meth:`explain`. shap's plots do not draw matrices: use
            :func:`toolkit.explain.plot_interactions`, or slice one row of the matrix
            (``values[:, a]``) for a per-modality view.

        Raises
        ------
        ValueError
            More than ``max_exact_modalities`` modalities (no sampled estimate is offered).
        """
        value = self.value_function(X)
        M = value.n_players
        if M > self.max_exact_modalities:
            raise ValueError(
                f"interaction values are computed exactly over 2^M coalitions; the model has "
                f"M = {M} modalities, above max_exact_modalities={self.max_exact_modalities}: "
                "raise max_exact_modalities (cost doubles with each modality) or group modalities"
            )
        V = value.all_coalitions()  # (2^M, n[, K])
        values = np.moveaxis(exact_interactions(V, M), 2, 0)  # (n, M, M[, K])
        return self._explanation(values, V[0], value.embeddings, value.names, V.ndim == 3)

    def _explanation(self, values, base, emb, names, multiclass=None):
        import shap

        if multiclass is None:
            multiclass = values.ndim == 3
        output_names = None
        if is_classifier(self.model) and multiclass:
            output_names = [str(c) for c in self.model.classes_]
        return shap.Explanation(
            values=values,
            base_values=base,
            data=emb.mask.astype(np.float64),
            feature_names=names,
            output_names=output_names,
        )


def class_position(explanation, class_index) -> int:
    """The position of ``class_index`` (a position, negative counting from the end, or a
    class name as in ``output_names``) among the explanation's classes.

    Raises ``KeyError`` for an unknown name and ``IndexError`` for a position out of range,
    naming the classes.
    """
    names = getattr(explanation, "output_names", None)
    names = [str(c) for c in names] if names is not None else None
    n_out = np.asarray(explanation.values).shape[-1]
    if isinstance(class_index, str):
        if names is None or class_index not in names:
            raise KeyError(f"unknown class {class_index!r}; the explanation's classes are {names}")
        return names.index(class_index)
    if isinstance(class_index, Integral) and not isinstance(class_index, bool):
        if not -n_out <= class_index < n_out:
            raise IndexError(
                f"class_index {class_index} is out of range for the {n_out} classes {names}"
            )
        return int(class_index) % n_out
    raise TypeError(
        f"class_index must be a class position (int) or a class name (str), got {class_index!r}"
    )


def select_class(explanation, class_index):
    """One class of a multi-class explanation, as shap's plots take it.

    ``select_class(exp, k)`` is ``exp[:, :, k]`` and ``select_class(exp, "positive")`` is
    ``exp[:, :, "positive"]`` (shap's own slicing, which also selects the class's
    ``base_values``); for interaction values (n, M, M, K) the last axis is selected.
    ``shap.plots.bar``, ``beeswarm`` and ``waterfall`` (one row: ``select_class(exp, k)[0]``)
    then draw it.

    Parameters
    ----------
    explanation : shap.Explanation with values (n, M, K) or (n, M, M, K)
    class_index : int or str
        Class position or class name (``explanation.output_names``, the model's
        ``classes_`` as strings).

    Returns
    -------
    shap.Explanation
        Values of shape (n, M) (or (n, M, M)), ``base_values`` of shape (n,).

    Examples
    --------
    >>> import numpy as np, shap
    >>> from toolkit.explain import select_class
    >>> exp = shap.Explanation(np.arange(12.0).reshape(2, 2, 3), base_values=np.zeros((2, 3)),
    ...                        feature_names=["a", "b"], output_names=["neg", "neu", "pos"])
    >>> select_class(exp, "pos").values.tolist()
    [[2.0, 5.0], [8.0, 11.0]]
    """
    values = np.asarray(explanation.values)
    multiclass = values.ndim == 3 or (values.ndim == 4 and values.shape[1] == values.shape[2])
    if not multiclass:
        raise ValueError(
            f"the explanation has values of shape {values.shape}: one output, nothing to "
            "select (multi-class explanations have values (n_samples, n_modalities, n_classes))"
        )
    k = class_position(explanation, class_index)
    return explanation[:, :, k] if values.ndim == 3 else explanation[:, :, :, k]


def contribution_magnitudes(explanation) -> np.ndarray:
    """|phi| per row and modality, summed over classes for multi-class.

    Parameters
    ----------
    explanation : shap.Explanation or array-like of shape (n_samples, n_modalities[, n_classes])

    Returns
    -------
    ndarray of shape (n_samples, n_modalities)
    """
    vals = np.abs(np.asarray(getattr(explanation, "values", explanation)))
    return vals.sum(axis=2) if vals.ndim == 3 else vals


def _by_name(explanation, feature_names, per_modality: np.ndarray) -> dict:
    names = getattr(explanation, "feature_names", None) if feature_names is None else feature_names
    if names is None:
        raise ValueError("pass feature_names (the modality names) with an array of values")
    return dict(zip(names, per_modality, strict=True))


def global_importance(explanation, feature_names=None) -> dict:
    """Mean |phi| per modality (summed over classes for multi-class), by modality name.

    ``explanation`` is a ``shap.Explanation`` or its values, an array of shape
    (n_samples, n_modalities[, n_classes]), with ``feature_names`` then naming the modalities.
    """
    mean_abs = contribution_magnitudes(explanation).mean(axis=0)
    return _by_name(explanation, feature_names, mean_abs)


def modality_shares(explanation, per_sample: bool = False, feature_names=None):
    """MM-SHAP modality shares |phi_m| / sum_k |phi_k|.

    Returns the per-sample shares (n_samples, n_modalities) when ``per_sample`` else
    their mean over samples, as a dict keyed by modality name. Rows whose values are
    all zero get zero shares. ``explanation`` is a ``shap.Explanation`` or its values
    (see :func:`global_importance`).
    """
    vals = contribution_magnitudes(explanation)
    total = vals.sum(axis=1, keepdims=True)
    shares = np.divide(vals, total, out=np.zeros_like(vals), where=total > 0)
    if per_sample:
        return shares
    return _by_name(explanation, feature_names, shares.mean(axis=0))


def plot_contributions(explanation, path, kind: str = "bar", class_index=None, **kwargs):
    """Save a shap plot of the explanation as a PNG (matplotlib Agg) and return the path.

    ``kind`` is "bar", "beeswarm", "heatmap" or "waterfall" (first row). Multi-class
    explanations are sliced to ``class_index`` (a position or a class name, see
    :func:`select_class`); without one, "bar" draws |phi| summed over classes and the
    other kinds class 0.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import shap

    plots = {"bar": shap.plots.bar, "beeswarm": shap.plots.beeswarm, "heatmap": shap.plots.heatmap}
    if kind not in plots and kind != "waterfall":
        raise ValueError(f"kind must be 'bar', 'beeswarm', 'heatmap' or 'waterfall', got {kind!r}")
    exp = explanation
    if np.asarray(exp.values).ndim == 3:
        if class_index is None and kind == "bar":
            exp = exp.abs.sum(axis=2)
        else:
            exp = select_class(exp, 0 if class_index is None else class_index)
    plt.figure()
    if kind == "waterfall":
        shap.plots.waterfall(exp[0], show=False, **kwargs)
    else:
        plots[kind](exp, show=False, **kwargs)
    fig = plt.gcf()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
