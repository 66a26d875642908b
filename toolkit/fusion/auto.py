"""``fusion="auto"``: choose a strategy, or a single modality, by inner CV on the training rows."""

from __future__ import annotations

import time
import warnings
from numbers import Integral

import numpy as np
from sklearn.base import clone
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from toolkit._utils import check_random_state_seed, seed_if_unset
from toolkit.embeddings import Embeddings
from toolkit.fusion.base import BaseFusion, groups_inferred

#: Strategies ``AutoFusion`` compares by default (besides each single modality). Gated
#: fusion is not among them: on every held-out task of the generalization table
#: (``docs/benchmarks.md``, issue 24: AV-Digits with two unseen speakers, UCI sentences
#: across sources, MOSI by video, MIMIC-IV by patient; 23 rows) it was below late fusion
#: but on one (by 0.004), the costliest candidate in the inner folds, and auto's pick only
#: where late fusion would have been better. List it to compare it.
DEFAULT_CANDIDATES = ("early", "late")
_EPS = 1e-6
_ONLY = "only "


def _score(output: np.ndarray, y: np.ndarray, classification: bool) -> tuple[float, float]:
    """(selection score, reported score): (-log loss, accuracy) or (-MSE, R²)."""
    if classification:
        p = np.clip(output[np.arange(len(y)), y.astype(int)], _EPS, 1.0)
        return float(np.mean(np.log(p))), float(np.mean(output.argmax(1) == y))
    mse = float(np.mean((output - y) ** 2))
    var = float(np.var(y))
    return -mse, (1.0 - mse / var) if var > 0 else float("nan")


class AutoFusion(BaseFusion):
    """Choose among fusion strategies and single modalities by inner cross-validation.

    Every candidate (each strategy in ``candidates`` and, with ``singles=True``, a model of
    each modality alone: the default late fusion on that one block) is fitted on the
    training folds of an inner ``cv``-fold split of the *training rows only* (whole groups
    per fold when ``groups`` is given; without ``groups``, whole clusters of similar rows
    within a class, :func:`toolkit.fusion.base.pseudo_groups`, so a modality that
    recognizes people is not preferred for scores it owes to near-copies of its training
    rows) and scored on the held-out fold. The candidate with
    the best mean held-out score (log loss for classification, squared error for
    regression: proper scores, steadier than accuracy on a few hundred rows) is refitted on
    all training rows and used to predict; ties go to the candidate listed first (single
    modalities come last). The table it chose from is ``cv_results_``.

    Cost: the groups (given or inferred) are computed once and passed to every candidate;
    the encoders are never called (candidates see the same ``Embeddings``); and on each
    inner fold the per-modality heads that late fusion, early fusion's block scales, the
    neural fusions' block scales and the single-modality candidates need are the same
    heads, fitted once and shared (:func:`toolkit.fusion._heads.shared_heads`). With
    ``cv=2`` every candidate is fitted on two halves of the rows (about one full fit's
    work) before the winner is refitted on all rows, so ``auto`` costs about the sum of
    its candidates' fits plus one, within 3 times its slowest candidate's fit when that
    candidate dominates (``docs/benchmarks.md``, ``benchmarks/robust_defaults.py``).

    When a single modality wins, ``chosen_`` says so (``"only <modality>"``) and the model
    predicts from that modality alone: its explanations give every other modality exactly 0,
    and a row without that modality gets the training prior.

    Parameters
    ----------
    candidates : sequence of str or fusion objects, default=None
        Strategies to compare: names from :data:`toolkit.fusion.FUSIONS` or BaseFusion
        instances. None: ``DEFAULT_CANDIDATES``, early and late fusion (list ``"gated"``,
        ``"attention"``, ``"tensor"`` or ``"lowrank"``, which learn cross-modal
        interactions, to compare them too, at the cost of network training in every
        inner fold; on the held-out tasks of ``docs/benchmarks.md`` gated fusion did not
        beat late fusion).
    singles : bool, default=True
        Also compare each modality alone.
    cv : int, default=2
        Inner folds (reduced when a class is rare or the groups are few). Each candidate
        is fitted ``cv`` times on ``(cv - 1) / cv`` of the rows: 2 keeps ``auto``'s cost
        near the sum of one fit of each candidate.
    pseudo_groups : bool, default=True
        Without ``groups``, split by :func:`toolkit.fusion.base.pseudo_groups` and pass
        those groups to every candidate, as if they had been given. False: row-level
        splits, and candidates fitted without groups.
    random_state : int, RandomState or None
        Seeds the inner folds and every candidate whose own ``random_state`` is None.

    Attributes
    ----------
    chosen_ : str
        The winning candidate (a strategy's name, or ``"only <modality>"``).
    single_modality_ : str or None
        The modality the model uses alone, when a single modality won.
    fusion_ : BaseFusion
        The winner refitted on every training row.
    cv_results_ : dict of str to list
        One entry per candidate: ``candidate``, ``mean_test_score`` / ``std_test_score``
        (mean log-likelihood per row, or minus the mean squared error), ``split<k>_test_score``,
        ``mean_test_accuracy`` (classification) or ``mean_test_r2`` (regression),
        ``mean_fit_time`` (seconds) and ``rank_test_score`` (1 = chosen).
    n_pseudo_groups_ : int or None
        Number of inferred groups (None: ``groups`` given, or none inferred).
    fallback_reason_ : str or None
        Why the candidates could not be compared (a single group, a class with one row,
        no candidate fitted on the inner folds): the first candidate is then used
        untested, with a warning that says so, and ``cv_results_`` holds NaN scores.
        None when the choice was made by inner cross-validation.
    prior_ : ndarray

    Examples
    --------
    >>> import numpy as np
    >>> from toolkit import Embeddings
    >>> from toolkit.fusion import AutoFusion
    >>> rng = np.random.default_rng(0)
    >>> emb = Embeddings({"a": rng.normal(size=(90, 2)), "b": rng.normal(size=(90, 3))})
    >>> y = (emb.blocks["a"][:, 0] > 0).astype(int)
    >>> auto = AutoFusion(candidates=["early", "late"], random_state=0)
    >>> auto.fit(emb, y, n_classes=2).chosen_ in {"early", "late", "only a"}
    True
    >>> auto.cv_results_["candidate"]
    ['early', 'late', 'only a', 'only b']
    """

    _parameter_constraints = {
        "candidates": [list, tuple, None],
        "singles": ["boolean"],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "pseudo_groups": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(self, candidates=None, singles=True, cv=2, pseudo_groups=True, random_state=None):
        self.candidates = candidates
        self.singles = singles
        self.cv = cv
        self.pseudo_groups = pseudo_groups
        self.random_state = random_state

    # -- candidates -----------------------------------------------------------------------

    def _candidates(self, names: list[str]) -> dict:
        from toolkit.fusion import FUSIONS, make_fusion

        wanted = self.candidates
        if wanted is None:
            wanted = [n for n in DEFAULT_CANDIDATES if n in FUSIONS]
        if len(wanted) == 0 and not self.singles:
            raise ValueError(
                "AutoFusion has nothing to choose from: give candidates or singles=True"
            )
        out = {}
        listed = [entry for entry in wanted if isinstance(entry, str)]
        twice = sorted({name for name in listed if listed.count(name) > 1})
        if twice:
            raise ValueError(
                f"AutoFusion's candidates list {twice[0]!r} twice; list each strategy once (two "
                "differently set fusions of one kind may be given as objects)"
            )
        for entry in wanted:
            if isinstance(entry, str) and entry == "auto":
                raise ValueError("'auto' cannot be one of AutoFusion's candidates")
            if isinstance(entry, AutoFusion):
                raise ValueError("an AutoFusion cannot be one of AutoFusion's candidates")
            fusion = make_fusion(entry)
            label = entry if isinstance(entry, str) else type(fusion).__name__
            base, k = label, 2
            while label in out:
                label, k = f"{base}#{k}", k + 1
            out[label] = fusion
        if self.singles and len(names) > 1:
            from toolkit.fusion.late import LateFusion

            for name in names:
                out[f"{_ONLY}{name}"] = (name, LateFusion())
        if not out:  # one modality, singles only: the single model is the only choice
            from toolkit.fusion.late import LateFusion

            out[f"{_ONLY}{names[0]}"] = (names[0], LateFusion())
        return out

    @staticmethod
    def _view(candidate, emb: Embeddings) -> Embeddings:
        return emb.select([candidate[0]]) if isinstance(candidate, tuple) else emb

    def _fit_one(self, candidate, emb, y, groups, seed):
        fusion = candidate[1] if isinstance(candidate, tuple) else candidate
        fusion = seed_if_unset(clone(fusion), seed)
        view = self._view(candidate, emb)
        if isinstance(candidate, tuple):
            # the single model learns from the rows that have its modality
            rows = view.mask[:, 0]
            view, y = view[rows], y[rows]
            groups = None if groups is None else groups[rows]
        kwargs = {} if groups is None else {"groups": groups}
        if self.n_pseudo_groups_ is None:
            return fusion.fit(view, y, n_classes=self.n_classes_, **kwargs)
        with groups_inferred():  # the candidates apply their no-groups rule
            return fusion.fit(view, y, n_classes=self.n_classes_, **kwargs)

    def _output(self, candidate, fitted, emb: Embeddings) -> np.ndarray:
        view = self._view(candidate, emb)
        if not isinstance(candidate, tuple):
            return np.asarray(fitted.predict_output(view), dtype=np.float64)
        present = view.mask[:, 0]
        if self.is_classifier_:
            out = np.tile(self.prior_.astype(np.float64), (emb.n_samples, 1))
        else:
            out = np.full(emb.n_samples, self._scaled_prior())
        if present.any():
            out[present] = np.asarray(fitted.predict_output(view[present]), dtype=np.float64)
        return out

    # -- fit / predict ----------------------------------------------------------------------

    def fit(self, emb: Embeddings, y, n_classes=None, groups=None):
        """Score every candidate by inner CV on ``emb``, then refit the best on all rows."""
        from toolkit.fusion._heads import shared_heads

        # the candidates share their identical per-modality heads (fitted once per fold)
        with shared_heads():
            return self._fit(emb, y, n_classes, groups)

    def _fit(self, emb: Embeddings, y, n_classes, groups):
        from toolkit.model_selection import check_groups, inner_folds

        self._validate_params()
        self.fallback_reason_ = None
        y = self._setup(emb, y, n_classes)
        groups = check_groups(groups, len(y))
        seed = check_random_state_seed(self.random_state)
        groups = self._inner_groups(emb, y, groups, seed)
        candidates = self._candidates(list(emb.names))
        folds = inner_folds(y, groups, self.cv, self.is_classifier_, seed)
        labels = list(candidates)
        results = {"candidate": labels}
        if folds is None or len(labels) == 1:
            # nothing to compare on: no score (NaN), the first candidate, said when it matters
            scores = np.full((len(labels), 1), np.nan)
            reported = np.full((len(labels), 1), np.nan)
            times = np.zeros(len(labels))
            if len(labels) > 1:
                self._warn_fallback(labels[0], self._no_folds_reason(y, groups))
        else:
            scores, reported, times = self._cross_validate(candidates, emb, y, groups, folds, seed)
            for f in range(len(folds)):
                results[f"split{f}_test_score"] = scores[:, f].tolist()
        mean = scores.mean(axis=1)
        if folds is not None and len(labels) > 1 and np.isneginf(mean).all():
            self._warn_fallback(
                labels[0], "no candidate could be fitted on the inner training folds"
            )
        results["mean_test_score"] = mean.tolist()
        results["std_test_score"] = scores.std(axis=1).tolist()
        key = "mean_test_accuracy" if self.is_classifier_ else "mean_test_r2"
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            # a candidate that no fold could fit has no accuracy: NaN, said in cv_results_
            warnings.simplefilter("ignore", RuntimeWarning)
            results[key] = np.nanmean(reported, axis=1).tolist() if reported.size else []
        results["mean_fit_time"] = times.tolist()
        order = np.argsort(-np.nan_to_num(mean, nan=-np.inf), kind="stable")
        rank = np.empty(len(labels), dtype=int)
        rank[order] = np.arange(1, len(labels) + 1)
        results["rank_test_score"] = rank.tolist()
        self.cv_results_ = results
        best = labels[int(order[0])]
        self.chosen_ = best
        chosen = candidates[best]
        self.single_modality_ = chosen[0] if isinstance(chosen, tuple) else None
        self.fusion_ = self._fit_one(chosen, emb, y, groups, seed)
        return self

    def _cross_validate(self, candidates: dict, emb, y, groups, folds, seed):
        """(held-out scores, reported scores) of shape (n_candidates, n_folds), and the mean
        fit time of each candidate; -inf where a candidate could not be fitted."""
        scores = np.full((len(candidates), len(folds)), -np.inf)
        reported = np.full((len(candidates), len(folds)), np.nan)
        times = np.zeros(len(candidates))
        for i, cand in enumerate(candidates.values()):
            start = time.perf_counter()
            for f, (train, test) in enumerate(folds):
                g = None if groups is None else groups[train]
                try:
                    fitted = self._fit_one(cand, emb[train], y[train], g, seed)
                except ValueError:
                    # e.g. a modality absent from every row of this fold: the candidate
                    # cannot be fitted here, so it cannot be chosen
                    continue
                out = self._output(cand, fitted, emb[test])
                scores[i, f], reported[i, f] = _score(out, y[test], self.is_classifier_)
            times[i] = (time.perf_counter() - start) / len(folds)
        return scores, reported, times

    def _no_folds_reason(self, y, groups) -> str:
        """Why no inner split was possible (one group, a class with one row, ...)."""
        if groups is not None and len(np.unique(groups)) < 2:
            given = "the given groups" if self.n_pseudo_groups_ is None else "pseudo-groups"
            return f"every training row is in one group ({given}), so no split keeps groups apart"
        if self.is_classifier_:
            counts = np.bincount(np.asarray(y, dtype=int), minlength=self.n_classes_)
            present = counts[counts > 0]
            if len(present) < 2:
                return "the training rows hold one class only"
            return f"the smallest class has {int(present.min())} training row(s)"
        return f"{len(y)} training row(s) are too few to split"

    def _warn_fallback(self, label: str, reason: str) -> None:
        """Warn that ``label`` is used without comparison, and why."""
        self.fallback_reason_ = reason
        warnings.warn(
            f"fusion='auto' could not compare its candidates on held-out rows: {reason}. It "
            f"falls back to its first candidate, '{label}', untested (cv_results_ holds no "
            "scores); pass groups with 2 or more groups and enough rows of every class, or "
            "choose the fusion yourself",
            UserWarning,
            stacklevel=4,
        )

    def predict_output(self, emb: Embeddings) -> np.ndarray:
        """The chosen model's probabilities (n_samples, n_classes) or predictions (n_samples,)."""
        check_is_fitted(self, "fusion_")
        if emb.names != self.modality_names_:
            raise ValueError(f"fitted on modalities {self.modality_names_}, got {emb.names}")
        # candidates were fitted on the target in the heads' units (see BaseFusion)
        candidate = (self.single_modality_, None) if self.single_modality_ else self.fusion_
        out = self._output(candidate, self.fusion_, emb)
        return out if self.is_classifier_ else self._unscale(out)

    def decision_function(self, emb: Embeddings) -> np.ndarray:
        """The chosen model's decision function (when it has one)."""
        check_is_fitted(self, "fusion_")
        if self.single_modality_ is not None or not hasattr(self.fusion_, "decision_function"):
            raise AttributeError(f"the chosen model ({self.chosen_}) has no decision_function")
        return self.fusion_.decision_function(emb)

    # -- persistence protocol: the chosen model's torch state, if any -------------------------

    @property
    def torch_attributes(self) -> tuple:
        inner = getattr(getattr(self, "fusion_", None), "torch_attributes", ())
        return tuple(f"fusion_.{a}" for a in inner)

    def weight_parameters(self) -> tuple[str, ...]:
        fusion = getattr(self, "fusion_", None)
        return tuple(fusion.weight_parameters()) if fusion is not None else ()

    def save_weights(self, folder):
        return self.fusion_.save_weights(folder)

    def expected_weights(self):
        return self.fusion_.expected_weights()

    def load_weights(self, paths) -> None:
        self.fusion_.load_weights(paths)
