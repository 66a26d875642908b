"""Device-aware batching: batch sizes chosen by a budget on a GPU, and a background
prefetcher that prepares batch i+1 on the host while the device computes batch i.

``batch_size="auto"`` means: on a CUDA device, batches sized by a budget of padded work
(:data:`GPU_BUDGETS`: tokens for text, pixels for images, voxels for scans, samples for
audio); on the CPU, the encoder's fixed CPU batch size (what it used before "auto"
existed, so CPU work is unchanged). An integer ``batch_size`` always overrides.

The *padded cost* of a batch is its number of items times its largest item's cost (what a
padded tensor of the batch holds): for text the longest sequence's tokens, for images and
scans the (equal) pixels or voxels of the resized inputs, for audio the longest clip's
samples. :func:`plan_batches` groups items, in the order given, so that no batch's padded
cost exceeds the budget; an item over the budget on its own goes alone.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from numbers import Integral
from typing import Any

import numpy as np

AUTO = "auto"

#: Padded work per batch on a CUDA device, by unit. Chosen for MiniLM/BERT-base, ResNet-50,
#: wav2vec 2.0 base and DenseNet121 3-D class networks in float32 on a GPU of 16 GB or more
#: (estimated a few GB of activations; not yet measured on a GPU: see docs/benchmarks.md,
#: issue 19); an integer ``batch_size`` bounds the work where a larger network needs it.
GPU_BUDGETS = {
    "tokens": 1 << 15,  # text: 32,768 padded tokens (e.g. 1,024 sentences of 32 tokens)
    "pixels": 1 << 24,  # images: 16.8 M pixels (334 images at 224 x 224)
    "voxels": 1 << 23,  # scans: 8.4 M voxels (32 volumes at 64^3)
    "samples": 1 << 22,  # audio: 4.2 M samples (16 clips of 16 s at 16 kHz)
}

#: Most items in one automatic batch (very short texts would otherwise make batches of
#: several thousand, whose host work no longer overlaps well).
MAX_AUTO_ITEMS = 2048


def check_batch_size(batch_size, owner: str = "batch_size") -> None:
    """Refuse a batch size that is neither ``"auto"`` nor a positive integer."""
    if isinstance(batch_size, str):
        if batch_size != AUTO:
            raise ValueError(
                f"{owner} must be 'auto' or a positive integer, got {batch_size!r}; "
                "'auto' sizes batches by a work budget on a GPU"
            )
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
        raise ValueError(
            f"{owner} must be 'auto' or a positive integer, got {batch_size!r}"
        )


def check_budget(budget) -> int:
    """A budget must be a positive integer (padded units per batch)."""
    if isinstance(budget, bool) or not isinstance(budget, Integral) or budget < 1:
        raise ValueError(
            f"a batch budget must be a positive integer number of padded units (tokens, "
            f"pixels, voxels or samples per batch), got {budget!r}"
        )
    return int(budget)


def gpu_budget(device, unit: str) -> int | None:
    """The automatic budget in ``unit`` for ``device``; None off CUDA (fixed CPU sizes)."""
    if unit not in GPU_BUDGETS:
        raise ValueError(f"unknown batch budget unit {unit!r}; one of {sorted(GPU_BUDGETS)}")
    if device is None or getattr(device, "type", str(device)) != "cuda":
        return None
    return GPU_BUDGETS[unit]


def items_per_batch(batch_size, device, unit: str, item_cost: int, cpu_default: int) -> int:
    """Items per batch when every item costs the same (resized images, scans): an integer
    ``batch_size`` as given; ``"auto"``: the budget's worth on a GPU (at least 1, at most
    :data:`MAX_AUTO_ITEMS`), ``cpu_default`` on the CPU."""
    check_batch_size(batch_size)
    if batch_size != AUTO:
        return int(batch_size)
    budget = gpu_budget(device, unit)
    if budget is None:
        return int(cpu_default)
    if item_cost < 1:
        raise ValueError(f"an item's cost must be positive, got {item_cost}")
    return int(min(MAX_AUTO_ITEMS, max(1, budget // int(item_cost))))


def plan_batches(
    costs: Sequence[int], budget: int, *, max_items: int | None = MAX_AUTO_ITEMS
) -> list[np.ndarray]:
    """Group items, in the order given, into consecutive batches within a padded budget.

    Parameters
    ----------
    costs : sequence of int, length n
        Each item's cost (tokens, pixels, voxels or samples); sort them first (longest
        first) so that similar items share a batch and little is padded.
    budget : int
        Largest padded cost of a batch: ``len(batch) * max(cost in batch)``. An item whose
        own cost exceeds it forms a batch alone.
    max_items : int or None, default=MAX_AUTO_ITEMS
        Most items per batch (None: no limit).

    Returns
    -------
    list of ndarray of int
        Positions into ``costs``; together they are ``0 .. n-1`` exactly once, in order.

    Examples
    --------
    >>> [b.tolist() for b in plan_batches([5, 4, 4, 2, 1], budget=8)]
    [[0], [1, 2], [3, 4]]
    """
    budget = check_budget(budget)
    if max_items is not None and (
        isinstance(max_items, bool) or not isinstance(max_items, Integral) or max_items < 1
    ):
        raise ValueError(f"max_items must be a positive integer or None, got {max_items!r}")
    costs = np.asarray(costs)
    if costs.ndim != 1:
        raise ValueError(f"costs must be one number per item, got shape {costs.shape}")
    if costs.size and (not np.issubdtype(costs.dtype, np.integer) or costs.min() < 0):
        raise ValueError("costs must be non-negative integers (tokens, pixels, voxels, samples)")
    out, start, n = [], 0, len(costs)
    while start < n:
        stop, widest = start + 1, max(int(costs[start]), 1)
        while stop < n and (max_items is None or stop - start < max_items):
            wider = max(widest, int(costs[stop]))
            if (stop - start + 1) * wider > budget:
                break
            widest, stop = wider, stop + 1
        out.append(np.arange(start, stop))
        start = stop
    return out


def fixed_batches(n: int, batch_size: int) -> list[np.ndarray]:
    """Consecutive batches of ``batch_size`` positions out of ``n``."""
    return [np.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def is_cuda(device) -> bool:
    return device is not None and getattr(device, "type", str(device)) == "cuda"


def pin(obj):
    """Page-locked copies of the CPU tensors in ``obj`` (a tensor, or a dict / list / tuple
    of them), so that copies to a CUDA device can run asynchronously."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.pin_memory() if obj.device.type == "cpu" else obj
    if isinstance(obj, dict):
        return {k: pin(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(pin(v) for v in obj)
    return obj


def to_device(obj, device):
    """Move the tensors in ``obj`` to ``device``: non-blocking from pinned memory to CUDA,
    plain copies otherwise (the CPU: no copy at all)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=obj.is_pinned() and is_cuda(device))
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


class PrefetchError(RuntimeError):
    """Raised when preparing a batch failed with an exception that cannot be re-raised as
    its own type with the batch named (its ``__cause__`` is the original)."""


_DONE = object()


class Prefetcher:
    """Iterate over ``prepare(work)`` for each work item, in order, computing item i+1 in a
    background thread while the caller uses item i.

    Parameters
    ----------
    work : iterable
        What to prepare (e.g. the index arrays of the batches).
    prepare : callable
        ``prepare(work_item) -> batch`` (tokenize, decode, stack: host work). Exceptions are
        re-raised in the caller's thread with the item's name, at the position of that item.
    names : sequence of str, optional
        Names of the work items for error messages (default ``"batch <i>"``).
    threaded : bool, default=True
        Prepare in a background thread; False prepares in the caller's thread (the CPU
        path: host and "device" are the same cores, there is nothing to overlap).
    pin_memory : bool, default=False
        Pin the tensors of each prepared batch (for non-blocking copies to a CUDA device,
        see :func:`to_device`).
    depth : int, default=2
        Batches prepared ahead at most (bounded memory).
    name_errors : bool, default=True
        Re-raise a failure of ``prepare`` with the work item's name prefixed; False
        re-raises it unchanged (its message already names what failed).

    Examples
    --------
    >>> list(Prefetcher(range(4), lambda i: i * i))
    [0, 1, 4, 9]
    """

    def __init__(
        self,
        work: Iterable,
        prepare: Callable[[Any], Any],
        *,
        names: Sequence[str] | None = None,
        threaded: bool = True,
        pin_memory: bool = False,
        depth: int = 2,
        name_errors: bool = True,
    ):
        if isinstance(depth, bool) or not isinstance(depth, Integral) or depth < 1:
            raise ValueError(f"depth must be a positive integer, got {depth!r}")
        self.work = work
        self.prepare = prepare
        self.names = names
        self.threaded = threaded
        self.pin_memory = pin_memory
        self.depth = int(depth)
        self.name_errors = name_errors

    def _name(self, i: int) -> str:
        return str(self.names[i]) if self.names is not None else f"batch {i}"

    def _prepared(self, i: int, item):
        batch = self.prepare(item)
        return pin(batch) if self.pin_memory else batch

    def _reraise(self, i: int, exc: BaseException):
        if not self.name_errors or not isinstance(exc, Exception):
            raise exc
        message = f"while preparing {self._name(i)}: {exc}"
        try:
            new = type(exc)(message)
        except Exception:  # exceptions whose constructor takes other arguments
            new = PrefetchError(message)
        raise new from exc

    def __iter__(self) -> Iterator:
        if not self.threaded:
            for i, item in enumerate(self.work):
                try:
                    batch = self._prepared(i, item)
                except Exception as exc:
                    self._reraise(i, exc)
                yield batch
            return
        results: queue.Queue = queue.Queue(maxsize=self.depth)
        stop = threading.Event()

        def put(entry) -> bool:
            while not stop.is_set():
                try:
                    results.put(entry, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def worker():
            try:
                for i, item in enumerate(self.work):
                    if stop.is_set():
                        return
                    try:
                        entry = (i, True, self._prepared(i, item))
                    except BaseException as exc:  # handed to the caller's thread
                        put((i, False, exc))
                        return
                    if not put(entry):
                        return
            except BaseException as exc:  # the work iterable itself failed
                put((-1, False, exc))
                return
            put((None, True, _DONE))

        thread = threading.Thread(target=worker, name="toolkit-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                i, ok, value = results.get()
                if value is _DONE:
                    return
                if not ok:
                    if i < 0:
                        raise value
                    self._reraise(i, value)
                yield value
        finally:
            stop.set()
            thread.join()
