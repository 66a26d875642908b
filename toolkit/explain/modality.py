"""Exact (or permutation-sampled) Shapley values of the modalities of a fitted model."""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
from sklearn.base import is_classifier
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from toolkit.embeddings import Embeddings


def shapley_weights(n_players: int) -> np.ndarray:
    """Matrix W of shape (n_players, 2**n_players) with phi = W @ v for exact Shapley values.

    Coalitions are bitmasks (bit m set = player m present); ``v[S]`` is the value of
    coalition S. ``phi_m = sum_{S not containing m} |S|! (M-|S|-1)! / M! (v[S+m] - v[S])``.
    """
    M = n_players
    n_coal = 1 << M
    sizes = np.array([bin(s).count("1") for s in range(n_coal)])
    w = np.array(
        [math.factorial(k) * math.factorial(M - k - 1) / math.factorial(M) for k in range(M)]
    )
    W = np.zeros((M, n_coal))
    for m in range(M):
        bit = 1 << m
        without = np.array([s for s in range(n_coal) if not s & bit])
        W[m, without | bit] += w[sizes[without]]
        W[m, without] -= w[sizes[without]]
    return W


def _exact_shapley(V: np.ndarray, M: int) -> np.ndarray:
    """Exact Shapley values from the coalition values V (2^M, ...), as weighted *paired*
    differences v(S + m) - v(S): a modality that changes nothing gets exactly 0."""
    coalitions = np.arange(1 << M)
    sizes = np.array([bin(s).count("1") for s in coalitions])
    w = np.array(
        [math.factorial(k) * math.factorial(M - k - 1) / math.factorial(M) for k in range(M)]
    )
    phi = np.empty((M,) + V.shape[1:])
    for m in range(M):
        without = coalitions[(coalitions >> m) & 1 == 0]
        diffs = V[without | (1 << m)] - V[without]
        phi[m] = np.tensordot(w[sizes[without]], diffs, axes=(0, 0))
    return phi


class ModalityExplainer:
    """Shapley values of each modality's contribution to a fitted multimodal model's output.

    The value of a coalition S of modalities is the model's output when the modalities
    outside S are removed. Raw items are encoded once; the 2^M coalition values are
    computed on the cached :class:`~toolkit.Embeddings`, so the values are exact (no
    sampling) for up to ``max_exact_modalities`` modalities.

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
    ):
        self.model = model
        self.removal = removal
        self.background = background
        self.output = output
        self.max_exact_modalities = max_exact_modalities
        self.n_permutations = n_permutations
        self.max_background = max_background
        self.random_state = random_state

    # -- validation -----------------------------------------------------------------------

    def _check(self):
        check_is_fitted(self.model, "fusion_")
        if self.removal not in ("missing", "background"):
            raise ValueError(f"removal must be 'missing' or 'background', got {self.removal!r}")
        self._classifier = is_classifier(self.model)
        output = self.output
        if output is None:
            output = "probability" if self._classifier else "raw"
        allowed = ("probability", "log_odds") if self._classifier else ("raw",)
        if output not in allowed:
            kind = "classifiers" if self._classifier else "regressors"
            raise ValueError(f"output must be one of {allowed} for {kind}, got {output!r}")
        self._output_scale = output
        for name, value in (
            ("max_exact_modalities", self.max_exact_modalities),
            ("n_permutations", self.n_permutations),
        ):
            if not isinstance(value, Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.removal == "background" and self.background is None:
            raise ValueError(
                "removal='background' needs background rows: pass background=<DataFrame of "
                "typical rows> (e.g. a sample of the training data)"
            )

    # -- output scale ---------------------------------------------------------------------

    def _scale(self, raw: np.ndarray) -> np.ndarray:
        """Model output -> explained output: (n,) for regression/binary, (n, K) multi-class."""
        if not self._classifier:
            return raw
        p = np.clip(raw, 1e-12, 1.0)
        binary = raw.shape[1] == 2
        if self._output_scale == "probability":
            return raw[:, 1] if binary else raw
        return np.log(p[:, 1]) - np.log(p[:, 0]) if binary else np.log(p)

    def _prior(self, n: int) -> np.ndarray:
        prior = np.asarray(self.model.prior_, dtype=np.float64)
        if not self._classifier:
            return np.full(n, prior[0])
        return self._scale(np.tile(prior, (n, 1)))

    # -- coalition values -----------------------------------------------------------------

    def _value_missing(self, emb: Embeddings, coalition: int) -> np.ndarray:
        keep = np.array([(coalition >> m) & 1 for m in range(emb.n_modalities)], dtype=bool)
        mask = emb.mask & keep
        # Always evaluate every row (same batch, same arithmetic), so that coalitions with
        # the same effective mask for a row give bitwise-identical values for it.
        out = self._scale(self.model._output(emb.with_mask(mask)))
        empty = ~mask.any(axis=1)
        if empty.any():
            out[empty] = self._prior(int(empty.sum()))
        return out

    def _value_background(self, emb: Embeddings, bg: Embeddings, coalition: int) -> np.ndarray:
        n, b = emb.n_samples, bg.n_samples
        keep = np.array([(coalition >> m) & 1 for m in range(emb.n_modalities)], dtype=bool)
        blocks, mask = {}, np.empty((n * b, emb.n_modalities), dtype=bool)
        for m, name in enumerate(emb.names):
            if keep[m]:
                blocks[name] = np.repeat(emb.blocks[name], b, axis=0)
                mask[:, m] = np.repeat(emb.mask[:, m], b)
            else:
                blocks[name] = np.tile(bg.blocks[name], (n, 1))
                mask[:, m] = np.tile(bg.mask[:, m], n)
        out = self._scale(self.model._output(Embeddings(blocks, mask)))
        empty = ~mask.any(axis=1)
        if empty.any():
            out[empty] = self._prior(int(empty.sum()))
        return out.reshape((n, b) + out.shape[1:]).mean(axis=1)

    # -- main entry -----------------------------------------------------------------------

    def __call__(self, X):
        """Explain the rows of ``X`` (a DataFrame, dict of columns or Embeddings)."""
        return self.explain(X)

    def explain(self, X):
        """Return a ``shap.Explanation`` of the modalities' contributions for the rows of X.

        Returns
        -------
        shap.Explanation
            ``values`` of shape (n_samples, n_modalities) for regression and binary
            classification (the output for ``classes_[1]``), or (n_samples,
            n_modalities, n_classes) for multi-class; ``base_values``; ``data`` (1 where
            the modality is available); ``feature_names`` = modality names;
            ``output_names`` = class names (multi-class).
        """
        self._check()
        emb = X if isinstance(X, Embeddings) else self.model.embed(X)
        names = list(self.model.modality_names_)
        if emb.names != names:
            raise ValueError(f"Embeddings have modalities {emb.names}, the model {names}")
        M = emb.n_modalities
        if self.removal == "background":
            bg = (
                self.background
                if isinstance(self.background, Embeddings)
                else self.model.embed(self.background)
            )
            if bg.n_samples > self.max_background:
                idx = check_random_state(self.random_state).choice(
                    bg.n_samples, self.max_background, replace=False
                )
                bg = bg[np.sort(idx)]

            def value(s):
                return self._value_background(emb, bg, s)
        else:

            def value(s):
                return self._value_missing(emb, s)

        full = (1 << M) - 1
        if M <= self.max_exact_modalities:
            V = np.stack([value(s) for s in range(1 << M)])  # (2^M, n[, K])
            phi = _exact_shapley(V, M)  # (M, n[, K])
            base, fx = V[0], V[full]
        else:
            phi, base, fx = self._permutation(value, M)
        values = np.moveaxis(phi, 0, 1)  # (n, M[, K])
        return self._explanation(values, base, emb, names, fx)

    def _permutation(self, value, M):
        rng = check_random_state(self.random_state)
        cache: dict[int, np.ndarray] = {}

        def v(s):
            if s not in cache:
                cache[s] = value(s)
            return cache[s]

        phi = None
        n_perm = max(2, self.n_permutations + self.n_permutations % 2)
        for _ in range(n_perm // 2):
            perm = rng.permutation(M)
            for order in (perm, perm[::-1]):  # antithetic pair
                s, prev = 0, v(0)
                for m in order:
                    s |= 1 << m
                    cur = v(s)
                    if phi is None:
                        phi = np.zeros((M,) + cur.shape)
                    phi[m] += cur - prev
                    prev = cur
        return phi / n_perm, v(0), v((1 << M) - 1)

    def _explanation(self, values, base, emb, names, fx):
        import shap

        data = emb.mask.astype(np.float64)
        output_names = None
        if self._classifier and values.ndim == 3:
            output_names = [str(c) for c in self.model.classes_]
        explanation = shap.Explanation(
            values=values,
            base_values=base,
            data=data,
            feature_names=names,
            output_names=output_names,
        )
        return explanation


def global_importance(explanation) -> dict:
    """Mean |phi| per modality (summed over classes for multi-class), by modality name."""
    vals = np.abs(np.asarray(explanation.values))
    if vals.ndim == 3:
        vals = vals.sum(axis=2)
    return dict(zip(explanation.feature_names, vals.mean(axis=0), strict=True))


def modality_shares(explanation, per_sample: bool = False):
    """MM-SHAP modality shares |phi_m| / sum_k |phi_k|.

    Returns the per-sample shares (n_samples, n_modalities) when ``per_sample`` else
    their mean over samples, as a dict keyed by modality name. Rows whose values are
    all zero get zero shares.
    """
    vals = np.abs(np.asarray(explanation.values))
    if vals.ndim == 3:
        vals = vals.sum(axis=2)
    total = vals.sum(axis=1, keepdims=True)
    shares = np.divide(vals, total, out=np.zeros_like(vals), where=total > 0)
    if per_sample:
        return shares
    return dict(zip(explanation.feature_names, shares.mean(axis=0), strict=True))


def plot_contributions(
    explanation, path, kind: str = "bar", class_index: int | None = None, **kwargs
):
    """Save a shap plot of the explanation as a PNG (matplotlib Agg) and return the path.

    ``kind`` is "bar", "beeswarm", "heatmap" or "waterfall" (first row); multi-class
    explanations are sliced to ``class_index`` (default: summed |phi| for "bar", class 0
    otherwise).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import shap

    exp = explanation
    if np.asarray(exp.values).ndim == 3:
        if class_index is None and kind == "bar":
            exp = exp.abs.sum(axis=2) if hasattr(exp, "abs") else exp[:, :, 0]
        else:
            exp = exp[:, :, class_index or 0]
    plots = {"bar": shap.plots.bar, "beeswarm": shap.plots.beeswarm, "heatmap": shap.plots.heatmap}
    plt.figure()
    if kind == "waterfall":
        shap.plots.waterfall(exp[0], show=False, **kwargs)
    elif kind in plots:
        plots[kind](exp, show=False, **kwargs)
    else:
        raise ValueError(f"kind must be 'bar', 'beeswarm', 'heatmap' or 'waterfall', got {kind!r}")
    fig = plt.gcf()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
