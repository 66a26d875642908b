"""The folds of a study: each fold is encoded once and every strategy and single-modality
baseline is fitted, predicted and explained on the same fold embeddings, through the
estimators' public API. Every fit gets the fold's group labels, so the strategies' inner
splits (stacking, early stopping, inner CV) keep each group on one side. Folds run through
joblib (on a Dask cluster with ``--scheduler``) and are yielded as they finish.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import clone

from toolkit.embeddings import Embeddings
from toolkit.study.errors import SchedulerError
from toolkit.utils import progress

#: Seconds to wait for a ``--scheduler`` to answer before giving up.
SCHEDULER_TIMEOUT = 5.0
#: Most training rows of a fold used as background with ``explanation.removal: background``.
MAX_BACKGROUND = 100


def log(enabled: bool, message: str) -> None:
    """Print a progress line to stderr when ``enabled``."""
    if enabled:
        print(f"[mmtk] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class FoldPlan:
    """Everything a fold needs (sent to each joblib worker)."""

    frame: pd.DataFrame
    y: np.ndarray
    modalities: list
    fusions: dict
    seed: int
    n_classes: int | None = None  # None: regression
    robustness: bool = True
    baselines: bool = True
    explain: bool = True
    interactions: bool = True  # pairwise interaction values from the same coalitions
    removal: str = "missing"
    groups: np.ndarray | None = None
    conformal: dict | None = None  # {"confidence", "calibration"} when enabled
    verbose: bool = False  # progress bars inside the fold (encoding per modality)

    @classmethod
    def from_study(cls, config, study) -> FoldPlan:
        """The plan of a :class:`~toolkit.study.config.StudyConfig` and its
        :func:`~toolkit.study.data.prepare_study`."""
        ev, explanation = config.evaluation, config.explanation
        return cls(
            frame=study.frame,
            y=study.y,
            modalities=study.modalities,
            fusions=study.fusions,
            seed=config.seed,
            n_classes=None if study.classes is None else len(study.classes),
            robustness=ev.robustness,
            baselines=ev.baselines,
            explain=explanation.enabled,
            interactions=config.output.interactions,
            removal=explanation.removal,
            groups=None if study.groups is None else np.asarray(study.groups),
            conformal=dataclasses.asdict(ev.conformal) if ev.conformal.enabled else None,
        )

    def fit_groups(self, rows) -> dict:
        """``{"groups": ...}`` for the rows ``rows`` (nothing when the study has no groups)."""
        return {} if self.groups is None else {"groups": self.groups[rows]}

    @property
    def names(self) -> list[str]:
        return [m[0] for m in self.modalities]

    @property
    def classification(self) -> bool:
        return self.n_classes is not None

    def model(self, modalities, fusion="late", memory=None):
        """An unfitted estimator of the plan's task; a classifier knows every class."""
        from toolkit.estimators import MultimodalClassifier, MultimodalRegressor

        if not self.classification:
            return MultimodalRegressor(
                modalities, fusion=fusion, memory=memory, random_state=self.seed
            )
        return MultimodalClassifier(
            modalities,
            fusion=fusion,
            memory=memory,
            random_state=self.seed,
            classes=np.arange(self.n_classes),
        )


@dataclass
class FoldResult:
    """One fold's outputs on its test rows, keyed by strategy label (and removed modality)."""

    fold: int
    test_index: np.ndarray
    oof: dict = field(default_factory=dict)
    robust: dict = field(default_factory=dict)
    contributions: dict = field(default_factory=dict)
    interactions: dict = field(default_factory=dict)  # label -> (n, M, M[, K])
    baselines: dict = field(default_factory=dict)
    conformal: dict = field(default_factory=dict)  # label -> sets (n, C) or intervals (n, 2)
    mask: np.ndarray | None = None  # availability of each modality on the test rows


@dataclass(frozen=True)
class FoldData:
    """A fold's embeddings (encoders fitted on its training rows), training targets and
    the training rows' positions (to pick their groups)."""

    train: Embeddings
    test: Embeddings
    y_train: np.ndarray
    train_index: np.ndarray


def _background(plan: FoldPlan, data: FoldData):
    """Up to MAX_BACKGROUND training rows of the fold (seeded), for background removal."""
    if plan.removal != "background":
        return None
    pick = np.random.RandomState(plan.seed).permutation(data.train.n_samples)[:MAX_BACKGROUND]
    return data.train[np.sort(pick)]


def _strategy(plan: FoldPlan, label: str, data: FoldData, result: FoldResult) -> None:
    """Fit one fusion strategy on the fold and record its outputs in ``result``."""
    model = plan.model(plan.modalities, fusion=clone(plan.fusions[label]))
    model.fit(data.train, data.y_train, **plan.fit_groups(data.train_index))
    result.oof[label] = model.output(data.test)
    for m, name in enumerate(plan.names if plan.robustness else []):
        mask = data.test.mask.copy()
        mask[:, m] = False
        result.robust[(label, name)] = model.output(data.test.with_mask(mask))
    if plan.explain:
        values, interactions = _explain(plan, model, data)
        result.contributions[label] = values
        if interactions is not None:
            result.interactions[label] = interactions


def _explain(plan: FoldPlan, model, data: FoldData):
    """The test rows' modality Shapley values and, when asked (``output.interactions``),
    their pairwise interaction values, both from one evaluation of the 2^M coalitions
    (each interaction row adds up to the Shapley value). Above the explainer's exact limit
    the Shapley values are sampled and there are no interactions (None)."""
    from toolkit.explain import ModalityExplainer, exact_interactions, exact_shapley

    explainer = ModalityExplainer(model, removal=plan.removal, background=_background(plan, data))
    M = len(plan.names)
    if M > explainer.max_exact_modalities:
        return explainer(data.test).values, None
    V = explainer.value_function(data.test).all_coalitions()  # (2^M, n[, K])
    values = np.moveaxis(exact_shapley(V, M), 0, 1)  # (n, M[, K])
    if not plan.interactions:
        return values, None
    return values, np.moveaxis(exact_interactions(V, M), 2, 0)  # (n, M, M[, K])


def _baseline(plan: FoldPlan, name: str, data: FoldData) -> np.ndarray:
    """Late fusion on one modality, fitted on the training rows that have it; test rows
    without it get the training prior."""
    from toolkit.fusion import LateFusion

    spec = [m for m in plan.modalities if m[0] == name]
    single_train, single_test = data.train.select([name]), data.test.select([name])
    keep = single_train.mask[:, 0]
    model = plan.model(spec, fusion=LateFusion(random_state=plan.seed))
    model.fit(single_train[keep], data.y_train[keep], **plan.fit_groups(data.train_index[keep]))
    return model.output(single_test)


def _conformal(plan: FoldPlan, label: str, data: FoldData) -> np.ndarray:
    """Split-conformal sets (classification) or intervals (regression) of one strategy on
    the test rows: fitted on part of the training rows, calibrated per availability
    pattern on the rest (whole groups on one side)."""
    from toolkit.conformal import ConformalPredictor

    model = plan.model(plan.modalities, fusion=clone(plan.fusions[label]))
    wrapper = ConformalPredictor(
        model,
        confidence=plan.conformal["confidence"],
        calibration_size=plan.conformal["calibration"],
        random_state=plan.seed,
    )
    wrapper.fit(data.train, data.y_train, **plan.fit_groups(data.train_index))
    with warnings.catch_warnings():
        # a pattern absent from the calibration rows gets the full set / infinite interval;
        # the report's coverage table shows it per pattern
        warnings.filterwarnings("ignore", message="availability pattern", category=UserWarning)
        if plan.classification:
            return wrapper.predict_set(data.test)
        return wrapper.predict_interval(data.test)


def encode_fold(plan: FoldPlan, k: int, train, test, cache_dir) -> FoldData:
    """Fit the encoders on the training rows of fold ``k`` and encode its training and test
    rows, one modality at a time (a progress bar per modality on a terminal).

    Encoders are fitted by the estimators' ``fit_encode``, with the fold's training labels
    and groups: an encoder that learns from the labels (``encoder.supervised``, e.g. a CNN
    backend) gives the training rows its cross-fitted (out-of-fold) outputs, as ``fit``
    gives them to the fusion, and encodes the test rows with the encoder trained on every
    training row of the fold. The other encoders do not see the labels.

    A row that lacks a modality cannot be encoded by that modality's model alone (it would
    have no modality); then the fold is encoded by the full model instead, which finds the
    fixed encoders' items in the fold's cache and refits the learned ones (deterministic,
    so the embeddings are the same).
    """
    from toolkit.cache import EmbeddingCache
    from toolkit.exceptions import MissingModalityError

    frames = {"train": plan.frame.iloc[train], "test": plan.frame.iloc[test]}
    y_train, groups = plan.y[train], plan.fit_groups(train)
    parts = {"train": [], "test": []}
    try:
        bar = progress(plan.modalities, desc=f"fold {k}: encoding", verbose=plan.verbose)
        for spec in bar:
            bar.set_postfix_str(spec[0], refresh=False)
            encoder = plan.model([spec], memory=EmbeddingCache(cache_dir))
            parts["train"].append(encoder.fit_encode(frames["train"], y_train, **groups))
            parts["test"].append(encoder.encode(frames["test"]))
        train_emb, test_emb = (_joined(parts[part]) for part in ("train", "test"))
    except MissingModalityError:
        encoder = plan.model(plan.modalities, memory=EmbeddingCache(cache_dir))
        train_emb = encoder.fit_encode(frames["train"], y_train, **groups)
        test_emb = encoder.encode(frames["test"])
    return FoldData(train_emb, test_emb, y_train, np.asarray(train))


def _joined(parts) -> Embeddings:
    """Single-modality Embeddings of the same rows as one Embeddings."""
    blocks = {name: part.blocks[name] for part in parts for name in part.names}
    return Embeddings(blocks, np.column_stack([part.mask for part in parts]))


def run_fold(plan: FoldPlan, k: int, train, test, cache_dir) -> FoldResult:
    """Encode fold ``k`` once, fit every strategy and baseline on it, predict its test rows
    (also with each modality removed), explain them and, when asked, give conformal sets
    or intervals. Runs in a joblib worker."""
    train, test = np.asarray(train), np.asarray(test)
    data = encode_fold(plan, k, train, test, cache_dir)
    result = FoldResult(fold=k, test_index=test, mask=data.test.mask.copy())
    for label in plan.fusions:
        _strategy(plan, label, data, result)
        if plan.conformal:
            result.conformal[label] = _conformal(plan, label, data)
    for name in plan.names if plan.baselines else []:
        result.baselines[f"{name} only"] = _baseline(plan, name, data)
    return result


def _quiet_collect() -> None:
    """Collect a half-made dask Client without its ``__del__`` complaining."""
    import gc

    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook


def connect_scheduler(address: str, timeout: float = SCHEDULER_TIMEOUT):
    """A ``dask.distributed.Client`` for ``address``, or SchedulerError within ``timeout`` s.

    Refused with one line (no traceback): dask.distributed not installed, an address
    Dask cannot parse (``http://...``, no port), nothing answering within ``timeout``
    seconds (default :data:`SCHEDULER_TIMEOUT`), or a server that is not a Dask scheduler.
    """
    if not isinstance(address, str) or not address.strip():
        raise SchedulerError(
            f"--scheduler: expected an address such as tcp://host:8786, got {address!r}"
        )
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 600:
        raise SchedulerError(f"--scheduler-timeout: expected seconds in (0, 600], got {timeout!r}")
    try:
        from dask.distributed import Client
    except ImportError as exc:
        raise SchedulerError(
            f"--scheduler {address}: dask.distributed is not installed; install the "
            "'distributed' extra (pip install 'multimodal-toolkit[distributed]') or drop --scheduler"
        ) from exc
    try:
        return Client(address, timeout=timeout)
    except Exception as exc:  # OSError, TimeoutError, ValueError, garbage from a non-Dask server
        detail = " ".join(str(exc).split())[:200]
        message = (
            f"--scheduler {address}: not a reachable Dask scheduler ({type(exc).__name__}: "
            f"{detail}); start one with 'dask scheduler', check the address "
            f"(tcp://host:port), or drop --scheduler"
        )
    _quiet_collect()
    raise SchedulerError(message)


@contextlib.contextmanager
def fold_results(
    plan: FoldPlan, splits, cache_dir, *, n_jobs: int = 1, client=None, progress: bool = False
) -> Iterator[Iterator[FoldResult]]:
    """Run every fold through joblib; yields an iterator of FoldResults in finishing order.

    With a Dask ``client`` the folds run on its cluster (joblib's dask backend, one job per
    worker); otherwise on ``n_jobs`` local processes.
    """
    from joblib import Parallel, delayed, parallel_config

    with contextlib.ExitStack() as stack:
        if client is not None:
            stack.enter_context(parallel_config(backend="dask"))
            n_jobs = len(client.scheduler_info()["workers"]) or 1
            log(progress, f"running folds on the Dask cluster ({n_jobs} workers)")
        jobs = (
            delayed(run_fold)(plan, k, train, test, cache_dir)
            for k, (train, test) in enumerate(splits)
        )
        yield Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs)


def refit_on_rows(plan: FoldPlan, label: str, results, train, cache_dir=None):
    """The model ``label`` (a strategy, or a single-modality baseline ``"<name> only"``)
    fitted on the rows ``train`` as the fold fitted it (same seed, encoders, labels and
    groups; a baseline on the rows that have its modality)."""
    from toolkit.cache import EmbeddingCache
    from toolkit.fusion import LateFusion

    memory = None if cache_dir is None else EmbeddingCache(cache_dir)
    if label in plan.fusions:
        model = plan.model(plan.modalities, fusion=clone(plan.fusions[label]), memory=memory)
        return model.fit(plan.frame.iloc[train], plan.y[train], **plan.fit_groups(train))
    name = label.removesuffix(" only")
    spec = [m for m in plan.modalities if m[0] == name]
    train = train[results.mask[train, plan.names.index(name)]]  # the rows that have it
    model = plan.model(spec, fusion=LateFusion(random_state=plan.seed), memory=memory)
    return model.fit(plan.frame.iloc[train], plan.y[train], **plan.fit_groups(train))


class LastFoldModels:
    """Models refitted on the last fold's training rows, each fitted once per study: the
    drill-down and the lab drill-down of one model share its refit."""

    def __init__(self, plan: FoldPlan, results, splits, cache_dir=None):
        self.plan, self.results, self.cache_dir = plan, results, cache_dir
        self.train = np.asarray(splits[-1][0])
        self._fitted: dict = {}

    def __call__(self, label: str):
        if label not in self._fitted:
            self._fitted[label] = refit_on_rows(
                self.plan, label, self.results, self.train, self.cache_dir
            )
        return self._fitted[label]
