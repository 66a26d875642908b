"""The value function v(S): a fitted model's output on some rows when only the modalities in
coalition S are kept. The explainer, the drill-down and any other game over modalities
evaluate coalitions through it."""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
from sklearn.base import is_classifier
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from toolkit.embeddings import Embeddings

#: How a modality outside the coalition is removed.
REMOVALS = ("missing", "background")


class ModalityValue:
    """v(S) for a fitted model and fixed rows; built by :func:`value_function`.

    Calling it with a coalition returns the model's output for every row, on the explained
    scale: shape (n_samples,) for regressors and binary classifiers (the output for
    ``classes_[1]``), (n_samples, n_classes) for multi-class classifiers.

    Attributes
    ----------
    model : the fitted MultimodalClassifier or MultimodalRegressor
    embeddings : Embeddings
        The rows whose outputs are valued.
    background : Embeddings or None
        Background rows (``removal="background"``), already subsampled.
    removal : {"missing", "background"}
    output : {"probability", "log_odds", "raw"}
        The scale of the values (``"raw"`` for regressors).
    names : list of str
        The players: the model's modalities, in order (bit m of a bitmask is ``names[m]``).
    """

    def __init__(self, model, embeddings, removal, background, output):
        self.model = model
        self.embeddings = embeddings
        self.removal = removal
        self.background = background
        self.output = output
        self.names = list(embeddings.names)

    @property
    def n_players(self) -> int:
        return len(self.names)

    @property
    def n_samples(self) -> int:
        return self.embeddings.n_samples

    @property
    def classifier(self) -> bool:
        return is_classifier(self.model)

    def keep(self, coalition) -> np.ndarray:
        """A coalition as a boolean vector over ``names``.

        ``coalition`` is a bitmask (int, bit m = ``names[m]``), an iterable of modality
        names, or a boolean array of shape (n_players,).
        """
        M = self.n_players
        if isinstance(coalition, int | np.integer) and not isinstance(coalition, bool):
            if not 0 <= coalition < 1 << M:
                raise ValueError(
                    f"coalition bitmask {coalition} is outside 0..{(1 << M) - 1} for the "
                    f"{M} modalities {self.names}"
                )
            return np.array([(coalition >> m) & 1 for m in range(M)], dtype=bool)
        if isinstance(coalition, np.ndarray) and coalition.dtype == bool:
            if coalition.shape != (M,):
                raise ValueError(
                    f"a boolean coalition must have shape ({M},), got {coalition.shape}"
                )
            return coalition
        if isinstance(coalition, Iterable) and not isinstance(coalition, str | bytes):
            chosen = list(coalition)
            unknown = [n for n in chosen if n not in self.names]
            if unknown:
                raise KeyError(f"unknown modality {unknown}; available: {self.names}")
            return np.array([n in chosen for n in self.names], dtype=bool)
        raise TypeError(
            "a coalition is a bitmask (int), a list of modality names or a boolean array, got "
            f"{type(coalition).__name__}"
        )

    def __call__(self, coalition) -> np.ndarray:
        """v(S): the output on every row with only the modalities in ``coalition`` kept."""
        keep = self.keep(coalition)
        if self.removal == "background":
            return self._with_background(keep)
        emb = self.embeddings
        # Always evaluate every row (same batch, same arithmetic), so that coalitions with
        # the same effective mask for a row give bitwise-identical values for it.
        return self.scale(self.model.output(emb.with_mask(emb.mask & keep)))

    def _with_background(self, keep: np.ndarray) -> np.ndarray:
        emb, bg = self.embeddings, self.background
        n, b = emb.n_samples, bg.n_samples
        blocks, mask = {}, np.empty((n * b, emb.n_modalities), dtype=bool)
        for m, name in enumerate(emb.names):
            if keep[m]:
                blocks[name] = np.repeat(emb.blocks[name], b, axis=0)
                mask[:, m] = np.repeat(emb.mask[:, m], b)
            else:
                blocks[name] = np.tile(bg.blocks[name], (n, 1))
                mask[:, m] = np.tile(bg.mask[:, m], n)
        out = self.scale(self.model.output(Embeddings(blocks, mask)))
        return out.reshape((n, b) + out.shape[1:]).mean(axis=1)

    def all_coalitions(self) -> np.ndarray:
        """The values of every coalition 0 .. 2**M - 1, shape (2**M, n_samples[, n_classes])."""
        return np.stack([self(s) for s in range(1 << self.n_players)])

    def scale(self, raw: np.ndarray) -> np.ndarray:
        """The model's output (``model.output``) on the value scale: (n,) for regression and
        binary classification, (n, K) for multi-class."""
        if not self.classifier:
            return raw
        binary = raw.shape[1] == 2
        if self.output == "probability":
            return raw[:, 1] if binary else raw
        p = np.clip(raw, 1e-12, 1.0)
        return np.log(p[:, 1]) - np.log(p[:, 0]) if binary else np.log(p)


def check_output(model, output) -> str:
    """The output scale for ``model``: ``output`` checked, or its default."""
    classifier = is_classifier(model)
    if output is None:
        return "probability" if classifier else "raw"
    allowed = ("probability", "log_odds") if classifier else ("raw",)
    if output not in allowed:
        kind = "classifiers" if classifier else "regressors"
        raise ValueError(f"output must be one of {allowed} for {kind}, got {output!r}")
    return output


def _background(model, background, names: list) -> Embeddings:
    """The background rows encoded and checked; an error names the background (not X)."""
    if isinstance(background, Embeddings) and background.names != names:
        raise ValueError(
            f"background: the Embeddings hold modalities {background.names}, the model "
            f"{names}; encode the background rows with the model (model.encode(rows))"
        )
    if hasattr(background, "__len__") and len(background) == 0:
        raise ValueError(
            "background holds no rows; pass background=<typical rows, e.g. a sample of the "
            "training data> with at least one row"
        )
    try:
        return model.embed(background)  # Embeddings are checked against the model too
    except (ValueError, TypeError) as exc:
        message = re.sub(r"\bX\b", "the background", str(exc))
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        raise kind(
            f"background (the rows that stand in for a removed modality) is not usable: "
            f"{message}. Pass background=<rows with the model's columns, as given to fit>"
        ) from exc


def value_function(
    model,
    X,
    *,
    removal="missing",
    background=None,
    output=None,
    max_background=100,
    random_state=None,
) -> ModalityValue:
    """v(S): the output of a fitted model on the rows of ``X`` with only coalition S kept.

    Parameters
    ----------
    model : fitted MultimodalClassifier or MultimodalRegressor
    X : DataFrame, dict of columns or Embeddings
        The rows to value; raw data is encoded once, by ``model.embed``. Embeddings may hold
        rows with no available modality (their value is the prior for every coalition).
    removal : {"missing", "background"}, default="missing"
        ``"missing"``: a removed modality is marked absent and the model's own
        missing-modality path answers; a row left with no modality gets the prior
        (training class frequencies or target mean), so v(empty) is the prior.
        ``"background"``: a removed modality takes the embeddings of each background row
        and the value is the mean output over them (interventional).
    background : DataFrame, dict or Embeddings, optional
        Background rows, required for ``removal="background"``.
    output : {"probability", "log_odds"} or None
        Classifier output scale (binary: the output for ``classes_[1]``; ``"log_odds"`` is
        its logit, multi-class log-probabilities). Regressors value the raw prediction.
    max_background : int, default=100
        At most this many background rows are used, drawn without replacement with
        ``random_state``.
    random_state : int, RandomState or None

    Returns
    -------
    ModalityValue
        Call it with a coalition (a bitmask, a list of modality names or a boolean array
        over ``model.modality_names_``) to get an array of shape (n_samples,) or
        (n_samples, n_classes).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from toolkit import MultimodalClassifier, TabularEncoder
    >>> from toolkit.explain import value_function
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"x": rng.normal(size=60), "z": rng.normal(size=60)})
    >>> clf = MultimodalClassifier([("a", TabularEncoder(), ["x"]),
    ...                             ("b", TabularEncoder(), ["z"])], random_state=0)
    >>> clf = clf.fit(df, (df["x"] > 0).astype(int))
    >>> v = value_function(clf, df)
    >>> bool(np.allclose(v([]), clf.prior_[1]))
    True
    >>> bool(np.allclose(v(["a", "b"]), clf.predict_proba(df)[:, 1]))
    True
    """
    check_is_fitted(model, "fusion_")
    if removal not in REMOVALS:
        raise ValueError(f"removal must be 'missing' or 'background', got {removal!r}")
    output = check_output(model, output)
    if removal == "background" and background is None:
        raise ValueError(
            "removal='background' needs background rows: pass background=<DataFrame of "
            "typical rows> (e.g. a sample of the training data)"
        )
    emb = X if isinstance(X, Embeddings) else model.embed(X)
    names = list(model.modality_names_)
    if emb.names != names:
        raise ValueError(f"Embeddings have modalities {emb.names}, the model {names}")
    bg = None
    if removal == "background":
        bg = _background(model, background, names)
        if bg.n_samples > max_background:
            idx = check_random_state(random_state).choice(
                bg.n_samples, max_background, replace=False
            )
            bg = bg[np.sort(idx)]
    return ModalityValue(model, emb, removal, bg, output)
