"""The one training loop of the toolkit's torch networks, and its parameters.

Every network the toolkit trains goes through :func:`train`: the torch fusions
(:class:`~toolkit.fusion.neural.NeuralFusion` and its subclasses), the encoders' small CNNs
(``backend="cnn"``), the fine-tuned torchvision, MONAI and audio transformers backbones
(``fine_tune=True``, both through ``TrainableMixin._train_network`` of
:mod:`toolkit.encoders._cnn`) and text fine-tuning (:mod:`toolkit.encoders._text_finetune`).
The loop is AdamW on the parameters that train, mini-batches an epoch's ``batches`` callback
draws from a seeded generator, bfloat16 autocast on a CUDA device only, a per-epoch record in
``history_`` (and progress with ``verbose``: see :func:`train`), early stopping on the validation loss with
``patience`` epochs of grace (the training loss when there are no validation rows), and the
best epoch's state restored. What differs between its users is passed in: how a batch becomes
a loss (a fusion's modality dropout, a CNN's augmentation, tokenized text), which parameters
train, which state they change, and how the validation loss is computed (a fusion's
leave-one-modality-out views).

Its parameters are declared once, in :data:`TRAINING_CONSTRAINTS` (scikit-learn
``_parameter_constraints`` style); each user merges :func:`training_constraints` into its own
and keeps the same names, which :func:`train` reads from the estimator. The validation rows
come from :func:`toolkit.model_selection.validation_split` (whole groups with ``groups``),
which the users call before training, since they standardize a regression target on the
training rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterable, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.utils._param_validation import Interval

from toolkit._progress import progress

#: The parameters of :func:`train`, declared once for every estimator that trains a network:
#: the fusions, the CNN and fine-tuned encoders and text fine-tuning merge these (through
#: :func:`training_constraints`) into their ``_parameter_constraints``.
TRAINING_CONSTRAINTS = {
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "patience": [Interval(Integral, 1, None, closed="left")],
    "learning_rate": [Interval(Real, 0.0, None, closed="neither")],
    "weight_decay": [Interval(Real, 0.0, None, closed="left")],
    "dropout": [Interval(Real, 0.0, 1.0, closed="left")],
    "validation_fraction": [Interval(Real, 0.0, 1.0, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "device": [str, None],
    "random_state": ["random_state"],
    "verbose": ["boolean"],
}

#: Smallest decrease of the monitored loss that counts as an improvement (resets patience).
MIN_DELTA = 1e-5

#: Rows per validation batch of :func:`chunks` (validation needs no gradients).
VALIDATION_ROWS = 1024


def training_constraints(exclude: Collection[str] = ()) -> dict:
    """A copy of :data:`TRAINING_CONSTRAINTS` without the names in ``exclude`` (those an
    estimator does not have, or declares differently, e.g. an encoder's ``batch_size="auto"``).

    Examples
    --------
    >>> from toolkit.training import training_constraints
    >>> sorted(training_constraints(exclude=("batch_size", "device", "verbose")))[:3]
    ['dropout', 'learning_rate', 'max_epochs']
    """
    unknown = sorted(set(exclude) - set(TRAINING_CONSTRAINTS))
    if unknown:
        raise KeyError(
            f"{unknown} are not training parameters; choose among {sorted(TRAINING_CONSTRAINTS)}"
        )
    return {k: list(v) for k, v in TRAINING_CONSTRAINTS.items() if k not in exclude}


@contextlib.contextmanager
def seeded(seed: int):
    """Inside: torch's CPU random state seeded with ``seed`` (restored on exit, so the
    caller's stream is untouched); yields a ``torch.Generator`` seeded with ``seed`` for the
    loop's shuffling. A network built inside from the same seed is the same network."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed)


def shuffled_batches(rows, size: int, generator, device, *, join_single: bool = False) -> list:
    """One epoch's mini-batches of ``rows``: a permutation drawn from ``generator``, copied
    to ``device`` once and cut into batches of ``size`` (1-D index tensors).

    ``join_single``: a last batch of one row joins the batch before it (batch
    normalization needs two values per channel).
    """
    import torch

    rows = torch.as_tensor(rows)
    order = rows[torch.randperm(len(rows), generator=generator)].to(device)
    starts = list(range(0, len(order), size))
    if join_single and len(starts) > 1 and len(order) - starts[-1] == 1:
        starts.pop()
    ends = [*starts[1:], len(order)]
    return [order[s:e] for s, e in zip(starts, ends, strict=True)]


def chunks(rows, size: int = VALIDATION_ROWS) -> list:
    """``rows`` in consecutive chunks of at most ``size`` (validation batches, in order)."""
    return [rows[s : s + size] for s in range(0, len(rows), size)]


def mean_loss(loss: Callable[[Any], Any], batches: Iterable) -> float:
    """The mean of ``loss(batch)`` over the rows of ``batches`` (each weighted by its rows)."""
    total, n = 0.0, 0
    for batch in batches:
        total += float(loss(batch)) * _n_rows(batch)
        n += _n_rows(batch)
    return total / n


def _n_rows(batch) -> int:
    """Rows of a batch: ``len(batch)``, or of its first item for a tuple ``(rows, extra...)``."""
    return len(batch[0]) if isinstance(batch, tuple) else len(batch)


def head_target(owner, target, classify: bool, rows=None, *, scale=None, dtype=None):
    """(target tensor, loss function) of a network trained on ``target``.

    Classification: the class codes (int64) and cross-entropy. Regression: the float target
    standardized on ``rows`` (all rows by default) with its mean and standard deviation
    (1 where it is 0), stored as ``owner.y_mean_`` / ``owner.y_scale_`` (``scale``: that
    (mean, scale) pair instead, e.g. shared by the members of an ensemble), as ``dtype``
    (float32 by default), and squared error.
    """
    import torch

    target = np.asarray(target)
    if classify:
        return torch.as_tensor(target, dtype=torch.int64), torch.nn.CrossEntropyLoss()
    if scale is None:
        fit = target if rows is None else target[rows]
        scale = (float(np.mean(fit)), float(np.std(fit)))
    owner.y_mean_, owner.y_scale_ = scale[0], scale[1] or 1.0
    standardized = (target - owner.y_mean_) / owner.y_scale_
    return torch.as_tensor(standardized, dtype=dtype or torch.float32), torch.nn.MSELoss()


def train(
    owner,
    net,
    loss: Callable[[Any], Any],
    batches: Callable[[Any], Sequence],
    *,
    generator,
    device,
    validation: Callable[[], float] | None = None,
    params: Iterable | None = None,
    train_mode: Callable[[], Any] | None = None,
    keep: Collection[str] | None = None,
    autocast: bool = True,
    name: str | None = None,
    hint: str = "",
    desc: str = "training",
):
    """Train ``net`` (on ``device``) with AdamW and early stopping; return it in eval mode
    with the state of its epoch of lowest monitored loss.

    Reads ``max_epochs``, ``patience``, ``learning_rate``, ``weight_decay`` and ``verbose``
    (if any) of ``owner``; sets its ``history_`` (per epoch: ``epoch``, ``train_loss`` and,
    with ``validation``, ``valid_loss``), ``best_epoch_`` and ``n_epochs_``.
    ``batches(generator)``: an epoch's batches (:func:`shuffled_batches`), each rows or a
    tuple ``(rows, ...)``, weighed by their rows; ``loss(batch)``: its mean loss (a scalar
    tensor); ``validation()``: the validation loss (:func:`mean_loss`), run in eval mode
    without gradients (None: the training loss is monitored). ``params`` (default: all of
    ``net``'s), ``train_mode`` (``net.train``) and ``keep`` (all keys): what trains, what
    puts it in training mode each epoch, and the state-dict keys copied at the best epoch.
    ``autocast``: bfloat16 on CUDA (never on the CPU). ``name`` and ``hint`` word the error
    when no epoch's loss was finite; ``desc`` labels the progress (prefixed with the
    modality's name inside :func:`toolkit._progress.named`, as the estimators fit each
    modality): with ``verbose``, a bar on a terminal or in Jupyter with ipywidgets, else one
    line per epoch with its losses (stderr, or the ``toolkit.progress`` logger).
    """
    import torch

    params = list(net.parameters() if params is None else params)
    opt = torch.optim.AdamW(params, lr=owner.learning_rate, weight_decay=owner.weight_decay)
    amp = autocast and torch.device(device).type == "cuda"
    train_mode = net.train if train_mode is None else train_mode
    stopping = _EarlyStopping(owner.patience, net, keep)
    owner.history_ = []
    verbose = bool(getattr(owner, "verbose", False))
    bar = progress(range(owner.max_epochs), total=owner.max_epochs, desc=desc, verbose=verbose,
                   unit="epoch", leave=True, lines=True)  # fmt: skip
    for epoch in bar:
        train_mode()
        record = {"epoch": epoch, "train_loss": _epoch(loss, batches(generator), opt, amp, device)}
        if validation is not None:
            record["valid_loss"] = _validate(net, validation, amp)
        owner.history_.append(record)
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
        if stopping.stop(record.get("valid_loss", record["train_loss"]), epoch):
            break
    bar.close()
    owner.n_epochs_ = len(owner.history_)
    stopping.restore(owner, name or type(owner).__name__, hint)
    return net.eval()


class _EarlyStopping:
    """The lowest monitored loss so far (lower by more than :data:`MIN_DELTA` is an
    improvement), its epoch and a copy of the state then (the ``keep`` keys of ``net``)."""

    def __init__(self, patience: int, net, keep):
        self.patience, self.net, self.keep = patience, net, keep
        self.best, self.epoch, self.state, self.since = np.inf, None, None, 0

    def stop(self, monitor: float, epoch: int) -> bool:
        """Record the epoch's loss; True once ``patience`` epochs passed without improving."""
        if monitor < self.best - MIN_DELTA:
            self.best, self.epoch, self.since = monitor, epoch, 0
            self.state = {
                k: v.detach().clone()
                for k, v in self.net.state_dict().items()
                if self.keep is None or k in self.keep
            }
            return False
        self.since += 1
        return self.since >= self.patience

    def restore(self, owner, name: str, hint: str) -> None:
        """Load the best state into ``net`` and set ``owner.best_epoch_``; ValueError
        (naming ``name``, the fix and ``hint``) when no epoch's loss was finite."""
        if self.state is None:
            raise ValueError(
                f"{name} training diverged: the loss was NaN or infinite in all "
                f"{owner.n_epochs_} epoch(s); lower learning_rate (now {owner.learning_rate})"
                + (f" or {hint}" if hint else "")
            )
        owner.best_epoch_ = self.epoch
        self.net.load_state_dict(self.state, strict=self.keep is None)


def _validate(net, validation, amp: bool) -> float:
    """``validation()`` with ``net`` in eval mode, without gradients (autocast with ``amp``)."""
    import torch

    net.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        return float(validation())


def _epoch(loss, batches: Sequence, opt, amp: bool, device) -> float:
    """One pass of AdamW steps over ``batches``; the mean training loss over their rows.

    The loss is summed on the device and read back once per epoch, so a GPU is never
    waited on inside the epoch.
    """
    import torch

    total = torch.zeros((), dtype=torch.float64, device=device)
    n = 0
    for batch in batches:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            value = loss(batch)
        opt.zero_grad()
        value.backward()
        opt.step()
        total += value.detach().double() * _n_rows(batch)
        n += _n_rows(batch)
    return float(total) / max(n, 1)
