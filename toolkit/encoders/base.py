"""Shared machinery of the column encoders: missing items, errors, batching, progress."""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
import weakref
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from toolkit._progress import quiet_library_bars
from toolkit._utils import FLOAT32_MAX, as_item_list, batches, is_missing, progress, tensor_table
from toolkit.exceptions import ReadError

_THREADS_LOCK = threading.Lock()
_THREADS_USERS = [0, 0]  # [active callers, torch's thread count to restore]

# One re-entrant lock per encoder instance, held while it encodes (see BaseEncoder): kept
# beside the instance, not on it, so that pickling, cloning and saving see no lock.
_ENCODE_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ENCODE_LOCKS_GUARD = threading.Lock()


def encode_lock(encoder) -> threading.RLock:
    """The re-entrant lock ``encoder`` holds while it encodes (created on first use)."""
    with _ENCODE_LOCKS_GUARD:
        lock = _ENCODE_LOCKS.get(encoder)
        if lock is None:
            lock = _ENCODE_LOCKS[encoder] = threading.RLock()
        return lock


def _locked(method):
    """``method`` run while holding the instance's :func:`encode_lock`."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with encode_lock(self):
            return method(self, *args, **kwargs)

    run._encode_locked = True
    return run


@contextlib.contextmanager
def one_torch_thread():
    """Run torch's intra-op work on one thread for the duration (restored afterwards).

    The weights-free descriptors (audio statistics, image descriptors) are many small tensor
    operations: each one parallelized over two threads waits at a barrier, and on a busy
    machine (other processes on the cores) that wait costs a scheduler time slice per
    operation, measured at 3-20x the single-thread time. Parallelism across items comes
    from ``n_jobs`` (processes) instead. Nested or concurrent callers share one saved value,
    so the setting is restored when the last one leaves; torch work in other threads of the
    process runs on one thread meanwhile.
    """
    import torch

    with _THREADS_LOCK:
        if _THREADS_USERS[0] == 0:
            _THREADS_USERS[1] = torch.get_num_threads()
            torch.set_num_threads(1)
        _THREADS_USERS[0] += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_USERS[0] -= 1
            if _THREADS_USERS[0] == 0:
                torch.set_num_threads(_THREADS_USERS[1])


class _CountInterval(Interval):
    """An integer interval that refuses booleans (``True`` is an ``Integral`` in Python, but
    ``batch_size=True`` is a mistake, not a batch of one)."""

    def is_satisfied_by(self, val):
        return not isinstance(val, bool) and super().is_satisfied_by(val)


#: ``batch_size`` constraint of the encoders that size batches automatically
#: (``toolkit.encoders._batching``): a positive integer (not a bool) or ``"auto"``.
AUTO_BATCH = [_CountInterval(Integral, 1, None, closed="left"), StrOptions({"auto"})]


class MissingItemsWarning(UserWarning):
    """Some items could not be read and were marked missing (``on_error="missing"``)."""


class BaseEncoder(TransformerMixin, BaseEstimator):
    """Base class of the single-column encoders.

    Subclasses implement ``_read(item)`` (raw item -> decoded object, raising
    :class:`~toolkit.exceptions.ReadError`, or returning None for an item that holds no
    data, such as an all-padding sequence), ``_fit(decoded_items)`` (learn state, set
    ``n_features_out_``) and ``_encode_batch(decoded_items) -> (b, d) array``. Optional
    hooks: ``_check_fit_items(decoded, rows)`` (checks across the training items, e.g. that
    their widths agree), ``_check_item(decoded)`` (checks against the fitted state at
    encode time, raising ``ReadError`` so that ``on_error`` applies) and
    ``_finish_reads(decoded)`` (a batched last reading step over a chunk's items, answering
    a ``ReadError`` for an item that fails it, with the same ``on_error`` handling).
    ``n_jobs`` (on encoders that have it) encodes the chunks in joblib worker processes.
    Encoded features must lie within the float32 range of the block: larger values are
    refused with the rows named, never stored as infinities.
    ``fixed = True`` marks encoders whose output does not depend on the data they were
    fitted on (feature extractors and pretrained networks), which lets estimators cache
    their blocks across fits.

    Thread safety: ``encode``, ``transform`` and ``encode_scores`` of one instance run one
    at a time (a per-instance re-entrant lock, :func:`encode_lock`; a subclass's own
    ``encode_scores`` is wrapped in it when the class is defined): ``encode_scores``
    switches the instance to the head's outputs for its duration and a tokenizer's state
    is not thread-safe, so concurrent ``predict_proba`` calls on one loaded model from
    several threads are serialized per encoder (different encoders still run in parallel).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        method = getattr(cls, "encode_scores", None)
        if method is not None and not getattr(method, "_encode_locked", False):
            cls.encode_scores = _locked(method)

    #: Output does not depend on the fitting data (safe to cache across fits).
    fixed: bool = True
    #: Name used in messages and progress bars.
    modality: str = "item"
    #: Whether ``_fit`` needs the decoded training items (else it gets ``None``).
    _fit_needs_items: bool = False
    #: Whether several threads may read this encoder's items at once (decoders that release
    #: the GIL and hold little memory beyond the decoded item).
    _threaded_reads: bool = False
    #: Items per batch of ``batch_size="auto"`` on the CPU (subclasses that accept "auto").
    _cpu_batch_size: int = 32

    _parameter_constraints: dict = {
        "batch_size": [_CountInterval(Integral, 1, None, closed="left")],
        "on_error": [StrOptions({"raise", "missing"})],
        "progress": ["boolean"],
        "n_jobs": [
            Interval(Integral, None, -1, closed="right"),
            Interval(Integral, 1, None, closed="left"),
            None,
        ],
    }

    #: Attributes holding live torch objects: left out of a saved model's skops file.
    torch_attributes: tuple = ("model_", "tokenizer_", "feature_extractor_", "device_")
    #: The modality's backends (``toolkit.encoders.backends``), for encoders with a
    #: ``backend`` parameter; None for the others.
    backends = None

    def backend_object(self):
        """The :class:`~toolkit.encoders.backends.base.Backend` that ``backend`` names in
        this encoder's registry (ValueError naming the registered backends otherwise)."""
        if self.backends is None:
            raise ValueError(f"{type(self).__name__} has no backends")
        return self.backends.get(self.backend)

    # -- persistence protocol (toolkit.save / toolkit.load) -------------------------------

    def weight_parameters(self) -> tuple[str, ...]:
        """Parameters that name this encoder's pretrained files, as its backend declares
        them (none for weights-free backends): ``("model",)`` for a transformers /
        sentence-transformers folder, ``("weights",)`` for a torch state dict."""
        if self.backends is None or self.backend not in self.backends:
            return ()
        return tuple(self.backend_object().weight_parameters)

    def save_weights(self, folder) -> dict[str, str] | None:
        """Write the fitted pretrained network under ``folder`` (safetensors only) and return
        ``{parameter: path relative to folder}`` for :meth:`load_weights`; None if the encoder
        holds no network."""
        from pathlib import Path

        if not self.weight_parameters() or not hasattr(self, "model_"):
            return None
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with quiet_library_bars():  # no "Writing model shards" bars from transformers
            return self.backend_object().save_weights(self, folder)

    def expected_weights(self) -> dict[str, dict] | None:
        """``{tensor name: {"dtype", "shape"}}`` of the network the parameters describe, built on torch's
        meta device (no memory, no weights read); None where the files themselves describe the
        network (transformers folders). Refuses an architecture name the backend's library does
        not list as a model, before anything is built."""
        if self.weight_parameters() != ("weights",):
            return None
        import torch

        self.backend_object().check_architecture(self.model)
        with torch.device("meta"):
            net = self.build_network()
        return tensor_table(net.state_dict())

    def load_weights(self, paths: dict[str, str]) -> None:
        """Point the weight parameters at ``paths`` (absolute, checked by the caller) and
        load the network on the CPU."""
        if set(paths) != set(self.weight_parameters()):
            raise ValueError(
                f"{type(self).__name__}(backend={getattr(self, 'backend', None)!r}) is restored "
                f"from {list(self.weight_parameters())}, got {sorted(paths)}"
            )
        for param, value in paths.items():
            setattr(self, param, value)
        self.device = "cpu"
        self._restoring = True  # loaders refuse weights that do not fill the network
        try:
            self._fit(None)
        finally:
            del self._restoring

    # -- drill-down (toolkit.explain.drill_down) -----------------------------------------

    def masker(self):
        """The masker that splits one of this encoder's items into parts and puts the kept
        parts back together (``toolkit.explain.Words``, ``ImageGrid``, ...), with its default
        settings; None where an item has no parts to drill into."""
        return None

    def read_item(self, value):
        """One raw item read as this encoder reads it (the form a drill-down cuts into
        parts): raises :class:`~toolkit.exceptions.ReadError` for an unreadable item."""
        return self._read(value)

    def restore_item(self, item):
        """An item as :meth:`read_item` returns it (or a masked copy) in a raw form that this
        encoder reads back to the same values (default: the item itself)."""
        return item

    # -- public API ---------------------------------------------------------------------

    def fit(self, X, y=None):
        """Fit the encoder on one column of raw items.

        Parameters
        ----------
        X : pandas Series, list or 1-D array of shape (n_samples,)
            Raw items; missing cells (None, NaN, empty string) are skipped.
        y : ignored

        Returns
        -------
        self
        """
        self._validate_params()
        self._check_n_jobs()
        items, labels, name = self._column(X)
        self.column_ = name
        decoded = None
        if self._needs_fit_items():
            present = [i for i, it in enumerate(items) if not is_missing(it)]
            decoded, rows = [], []
            for i in present:
                value = self._read_or_skip(items[i], labels[i])
                if value is not None:
                    decoded.append(value)
                    rows.append(labels[i])
            rows, decoded = self._finish_or_skip(rows, decoded, rows)
            if not decoded:
                raise ValueError(
                    f"{type(self).__name__} found no readable {self.modality} item in "
                    f"{self._where()} to fit on ({len(items)} rows, all missing or unreadable)"
                )
            self._check_fit_items(decoded, rows)
        self._fit(decoded)
        return self

    def transform(self, X) -> np.ndarray:
        """Encode one column of raw items.

        Parameters
        ----------
        X : pandas Series, list or 1-D array of shape (n_samples,)

        Returns
        -------
        block : ndarray of shape (n_samples, n_features_out_), float32
            Rows of missing (or, with ``on_error="missing"``, unreadable) items are NaN.
        """
        return self.encode(X)[0]

    @_locked
    def encode(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Encode one column; return the block and the availability of each row.

        Returns
        -------
        block : ndarray of shape (n_samples, n_features_out_), float32 (NaN where absent)
        available : ndarray of shape (n_samples,), bool
        """
        check_is_fitted(self, "n_features_out_")
        items, labels, _ = self._column(X)
        n = len(items)
        out = np.full((n, self.n_features_out_), np.nan, dtype=np.float32)
        available = np.zeros(n, dtype=bool)
        candidates = [i for i, it in enumerate(items) if not is_missing(it)]
        failures: list[tuple[Any, str]] = []
        size = self._chunk_size()
        chunks = list(batches(candidates, size))
        work = ([(items[i], labels[i]) for i in chunk] for chunk in chunks)
        jobs = self._n_workers(len(chunks))
        if jobs == 1 and self._overlaps_reads():
            from toolkit.encoders._batching import Prefetcher

            # Chunk i+1 is read (decoded, resized) in a background thread while the
            # device encodes chunk i; item errors keep their own messages.
            read = Prefetcher(work, self._read_chunk, name_errors=False)
            results = (self._encode_read(r) for r in read)
        elif jobs == 1:
            results = (self._encode_chunk(pairs) for pairs in work)
        else:
            from joblib import Parallel, delayed

            # The same chunks as the serial loop, each read and encoded in a worker process.
            results = Parallel(n_jobs=jobs, return_as="generator")(
                delayed(_encode_chunk)(self, pairs) for pairs in work
            )
        bar = progress(
            zip(chunks, results, strict=True),
            total=len(chunks),
            desc=f"encoding {self.modality}",
            enabled=self.progress and len(candidates) >= 200,
        )
        for chunk, (kept, feats, failed) in bar:
            failures.extend(failed)
            if not kept:
                continue
            rows = [chunk[k] for k in kept]
            self._check_range(feats, [labels[i] for i in rows])
            out[rows] = feats
            available[rows] = True
        if failures:
            shown = "; ".join(f"row {r}: {m}" for r, m in failures[:5])
            more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
            warnings.warn(
                f"{type(self).__name__}: {len(failures)} unreadable {self.modality} item(s) in "
                f"{self._where()} were marked missing: {shown}{more}",
                MissingItemsWarning,
                stacklevel=2,
            )
        bad = available & ~np.isfinite(out).all(axis=1)
        if bad.any():
            raise ValueError(
                f"{type(self).__name__} produced non-finite features for rows "
                f"{[labels[i] for i in np.flatnonzero(bad)[:5]]} of {self._where()}; "
                "check those items for constant or corrupt content"
            )
        return out, available

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the output features: the backend's, else ``"{prefix}{i}"``."""
        check_is_fitted(self, "n_features_out_")
        names = None if self.backends is None else self.backend_object().feature_names(self)
        if names is not None:
            return np.asarray(names, dtype=object)
        prefix = self._feature_prefix()
        return np.asarray([f"{prefix}{i}" for i in range(self.n_features_out_)], dtype=object)

    # -- helpers for subclasses ---------------------------------------------------------

    def _n_workers(self, n_chunks: int) -> int:
        """Worker processes for ``n_chunks`` chunks: ``n_jobs`` as joblib reads it (-1: every
        CPU), never more than the chunks; None is 1 whatever ``parallel_config`` is active."""
        n_jobs = getattr(self, "n_jobs", None)
        if n_chunks <= 1 or n_jobs in (None, 1):
            return 1
        from joblib import effective_n_jobs

        return max(1, min(effective_n_jobs(n_jobs), n_chunks))

    def _check_n_jobs(self) -> None:
        """Refuse ``n_jobs`` for a backend that runs a network (it would be copied per process)."""
        n_jobs = getattr(self, "n_jobs", None)
        if n_jobs not in (None, 1) and self.weight_parameters():
            raise ValueError(
                f"{type(self).__name__}(n_jobs={n_jobs}) parallelizes the weights-free default "
                f"backend only; backend={self.backend!r} batches its network on one device: "
                "leave n_jobs=None"
            )

    def _encode_chunk(self, pairs: list) -> tuple[list[int], np.ndarray | None, list]:
        """Read and encode one chunk of (item, row label) pairs.

        Returns the positions in ``pairs`` that were encoded, their features (float64) and
        the (row, message) of items marked missing. Items are read by a small thread pool
        when the encoder's reader allows it; failures are handled in row order, as a
        serial loop would.
        """
        return self._encode_read(self._read_chunk(pairs))

    def _encode_read(self, read: tuple) -> tuple[list[int], np.ndarray | None, list]:
        """Encode a chunk read by :meth:`_read_chunk`."""
        kept, decoded, failures = read
        if not kept:
            return kept, None, failures
        return kept, np.asarray(self._encode_batch(decoded), dtype=np.float64), failures

    def _read_chunk(self, pairs: list) -> tuple[list[int], list, list]:
        """Read one chunk: the positions in ``pairs`` that were read, their decoded items
        (after ``_finish_reads``) and the (row, message) of items marked missing."""
        from toolkit.io import map_in_threads, read_threads

        def read(pair):
            failed: list = []
            return self._read_or_skip(pair[0], pair[1], failed, fitted=True), failed

        threads = read_threads() if self._threaded_reads else 1
        kept, decoded, failures = [], [], []
        for k, (ok, outcome) in enumerate(map_in_threads(read, pairs, threads)):
            if not ok:
                raise outcome
            value, failed = outcome
            failures.extend(failed)
            if value is not None:
                kept.append(k)
                decoded.append(value)
        kept, decoded = self._finish_or_skip(kept, decoded, [pairs[k][1] for k in kept], failures)
        return kept, decoded, failures

    def _finish_or_skip(self, kept: list, decoded: list, labels: list, failures=None):
        """Run ``_finish_reads`` on a chunk's decoded items; an item it answers with a
        ``ReadError`` is raised with its row (or, with on_error='missing', dropped and
        recorded in ``failures``), as a failed read is."""
        if not decoded:
            return kept, decoded
        finished = self._finish_reads(decoded)
        out_kept, out = [], []
        for k, label, value in zip(kept, labels, finished, strict=True):
            if isinstance(value, ReadError):
                self._item_error(value, label, failures)
            else:
                out_kept.append(k)
                out.append(value)
        return out_kept, out

    def _chunk_size(self) -> int:
        """How many items are decoded and held at once (bounded memory)."""
        return self._batch_items()

    def _batch_items(self) -> int:
        """Items per batch: an integer ``batch_size`` as given; ``"auto"``: on a CUDA
        device the budget's worth of :meth:`_auto_cost` (``toolkit.encoders._batching``),
        else ``_cpu_batch_size`` (the CPU batch size from before "auto")."""
        from toolkit.encoders._batching import items_per_batch

        cost = self._auto_cost() if self.batch_size == "auto" else None
        if cost is None:
            return self._cpu_batch_size if self.batch_size == "auto" else int(self.batch_size)
        unit, per_item = cost
        return items_per_batch(
            "auto", getattr(self, "device_", None), unit, per_item, self._cpu_batch_size
        )

    def _train_batch_size(self) -> int:
        """Items per training step of a trainable backend: ``batch_size``, or
        ``_cpu_batch_size`` for ``"auto"`` (budgets size inference batches only)."""
        return self._cpu_batch_size if self.batch_size == "auto" else int(self.batch_size)

    def _auto_cost(self) -> tuple[str, int] | None:
        """(budget unit, cost of one item) for ``batch_size="auto"`` on a GPU, or None where
        the backend runs no network (the CPU batch size is used)."""
        return None if self.backends is None else self.backend_object().auto_cost(self)

    def _overlaps_reads(self) -> bool:
        """Whether ``encode`` reads chunk i+1 in a background thread while chunk i is
        encoded: for a backend running a network on a CUDA device."""
        from toolkit.encoders._batching import is_cuda

        return bool(self.weight_parameters()) and is_cuda(getattr(self, "device_", None))

    def _feature_prefix(self) -> str:
        if self.backends is not None:
            return self.backend_object().feature_prefix
        return f"{self.modality}_"

    def _where(self) -> str:
        name = getattr(self, "_current_column", None) or getattr(self, "column_", None)
        return f"column '{name}'" if name else "the column"

    def _column(self, X):
        items, name = as_item_list(X, what=f"{self.modality} column")
        import pandas as pd

        labels = (
            list(X.index) if isinstance(X, (pd.Series, pd.DataFrame)) else list(range(len(items)))
        )
        self._current_column = name
        return items, labels, name

    def _check_range(self, feats: np.ndarray, labels: list) -> None:
        """Refuse finite features that float32 cannot hold (they would become inf)."""
        with np.errstate(invalid="ignore"):
            big = np.isfinite(feats) & (np.abs(feats) > FLOAT32_MAX)
        if big.any():
            bad = big.any(axis=1)
            raise ValueError(
                f"{type(self).__name__} produced features beyond the float32 range "
                f"(+-{FLOAT32_MAX:.1e}) for rows {[labels[i] for i in np.flatnonzero(bad)[:5]]} "
                f"of {self._where()} (e.g. {feats[big][0]:.3g}); rescale those items' values"
            )

    def _read_or_skip(self, item, label, failures=None, *, fitted: bool = False):
        """Read one item (and, when ``fitted``, check it against the fitted state); on error
        raise with its row, or record it when on_error='missing'."""
        try:
            value = self._read(item)
            if fitted and value is not None:
                self._check_item(value)
            return value
        except (ReadError, FileNotFoundError) as exc:
            return self._item_error(exc, label, failures)

    def _item_error(self, exc: Exception, label, failures=None) -> None:
        """Raise ``exc`` with its row named, or record it when on_error='missing'."""
        message = f"row {label!r} of {self._where()}: {exc}"
        if self.on_error == "missing":
            if failures is not None:
                failures.append((label, str(exc)))
            return None
        hint = (
            ""
            if "on_error" in str(exc)
            else "; or pass on_error='missing' to mark such items missing"
        )
        raise type(exc)(message + hint) from exc

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.one_d_array = True
        tags.requires_fit = True
        return tags

    def _needs_fit_items(self) -> bool:
        if self.backends is not None and self.backend_object().fit_on_items:
            return True
        return self._fit_needs_items

    def _check_fit_items(self, decoded: list, rows: list) -> None:
        """Checks across the decoded training items (``rows``: their row labels)."""

    def _check_item(self, decoded) -> None:
        """Check one decoded item against the fitted state (raise ReadError)."""
        if self.backends is not None:
            self.backend_object().check_item(self, decoded)

    def _finish_reads(self, decoded: list) -> list:
        """Batched last step of reading, run on each chunk's decoded items together (e.g.
        resizing same-shape scans on the device); returns one item, or a ``ReadError``,
        per input item. Default: the backend's, else the items unchanged."""
        if self.backends is None:
            return decoded
        return self.backend_object().finish_reads(self, decoded)

    # -- to implement (encoders with backends: the backend implements them) ---------------

    def _read(self, item):  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit(self, decoded) -> None:
        if self.backends is None:  # pragma: no cover - abstract
            raise NotImplementedError
        with quiet_library_bars():  # no "Loading weights" bars from transformers
            self.backend_object().fit(self, decoded)

    def _encode_batch(self, decoded: list) -> np.ndarray:
        if self.backends is None:  # pragma: no cover - abstract
            raise NotImplementedError
        return self.backend_object().encode(self, decoded)

    def build_network(self):
        """The bare network the encoder's parameters describe, without weights, on the
        current default device (its backend builds it from the encoder's own parameters
        only: nothing is loaded or downloaded), so it can be built under
        ``with torch.device("meta"):`` to compare its state-dict shapes with a weights
        file. Raises ``ValueError`` for a backend without a network.

        Returns
        -------
        torch.nn.Module
        """
        return self.backend_object().build_network(self)


def _encode_chunk(encoder: BaseEncoder, pairs: list):
    """Module-level entry point of a worker process (see ``BaseEncoder.encode``)."""
    return encoder._encode_chunk(pairs)
