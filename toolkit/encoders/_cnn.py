"""Encoders that learn from the labels: a small CNN trained inside ``fit``.

:class:`TrainableMixin` gives an encoder a trainable backend (``backend="cnn"``): ``fit(X,
y, groups=None)`` reads the training items as usual, turns them into a float32 tensor of
shape (n, C, H, W) (the encoder's ``_cnn_inputs``), and trains
:class:`~toolkit.encoders._cnn_modules.SmallCNN` on the labels with AdamW and early stopping
on an inner validation split of the rows (whole groups when ``groups`` are given, see
:func:`toolkit.model_selection.validation_split`). ``encode`` returns the pooled features
that feed the network's head (the penultimate layer). The network is described by a plain
dict (``network_spec_``, saved in ``model.skops``) so that a saved model's weights are
checked against a network built on the meta device before anything is loaded.

Such an encoder is ``supervised`` and not ``fixed``: its output depends on its training rows,
so it is never cached, and the estimators give the fusion out-of-fold embeddings of it.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from toolkit._utils import (
    check_random_state_seed,
    is_missing,
    resolve_device,
    tensor_table,
)
from toolkit.training import (
    chunks,
    head_target,
    mean_loss,
    shuffled_batches,
    train,
    training_constraints,
)

_MAX_NETWORKS = 16

#: Training parameters of every trainable backend (documented in each encoder): the CNN's
#: own and those of the shared loop (:data:`toolkit.training.TRAINING_CONSTRAINTS`), less
#: ``batch_size`` and ``device``, which the encoders declare themselves (``"auto"`` allowed).
TRAINING_CONSTRAINTS = {
    "widths": [tuple, list],
    **training_constraints(exclude=("batch_size", "device")),
    "n_networks": [Interval(Integral, 1, _MAX_NETWORKS, closed="both")],
}

_MAX_WIDTH = 1024
_MAX_BLOCKS = 6


def check_widths(widths) -> list[int]:
    """``widths`` as 1 to 6 positive channel counts (at most 1024 each), or ValueError."""
    ok = (
        isinstance(widths, (tuple, list))
        and 1 <= len(widths) <= _MAX_BLOCKS
        and all(isinstance(w, Integral) and not isinstance(w, bool) for w in widths)
        and all(1 <= int(w) <= _MAX_WIDTH for w in widths)
    )
    if not ok:
        raise ValueError(
            f"widths must list 1 to {_MAX_BLOCKS} channel counts between 1 and {_MAX_WIDTH} "
            f"(one per conv block), e.g. (16, 32, 64); got {widths!r}"
        )
    return [int(w) for w in widths]


def cnn_spec(in_channels: int, widths, n_out: int, dropout: float, pool, n_networks=1) -> dict:
    """The plain-dict description of a :class:`SmallCNN` (saved in ``model.skops``), or of
    an ensemble of ``n_networks`` of them."""
    return {
        "in_channels": int(in_channels),
        "widths": check_widths(widths),
        "n_out": int(n_out),
        "dropout": float(dropout),
        "pool": [int(pool[0]), int(pool[1])],
        "n_networks": int(n_networks),
    }


def build_cnn(spec):
    """The untrained network ``spec`` describes (float32, on torch's current device)."""
    bad = "the CNN's description (network_spec_) is malformed"
    try:
        in_channels, n_out = int(spec["in_channels"]), int(spec["n_out"])
        dropout = float(spec["dropout"])
        widths = check_widths(list(spec["widths"]))
        pool = [int(p) for p in spec["pool"]]
        k = int(spec.get("n_networks", 1))
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"{bad} ({exc})") from exc
    ok = 1 <= in_channels <= 4 and 1 <= n_out <= 100_000 and 0 <= dropout < 1
    ok = ok and 1 <= k <= _MAX_NETWORKS
    if not ok or len(pool) != 2 or not all(1 <= p <= 16 for p in pool):
        raise ValueError(
            f"{bad} (in_channels {in_channels}, n_out {n_out}, dropout {dropout}, pool {pool})"
        )
    from toolkit.encoders._cnn_modules import CNNEnsemble, SmallCNN

    if k > 1:
        return CNNEnsemble([SmallCNN(in_channels, widths, n_out, dropout, pool) for _ in range(k)])
    return SmallCNN(in_channels, widths, n_out, dropout, pool)


def _targets(y: np.ndarray, labels: list):
    """(target array, is classification, number of outputs) of the training labels.

    Integer, boolean, string or categorical labels are classes (class codes 0..K-1 are kept
    as they are, other labels are numbered in sorted order); float labels are a regression
    target, standardized by the caller.
    """
    import pandas as pd

    missing = pd.isna(pd.Series(y, dtype=object)).to_numpy()
    if missing.any():
        rows = [labels[i] for i in np.flatnonzero(missing)[:5]]
        raise ValueError(f"y holds missing labels at rows {rows}; drop those rows or fill them")
    if y.dtype.kind == "f":
        y = y.astype(np.float64)
        bad = ~np.isfinite(y)
        if bad.any():  # checked here: training on them fails in a way that looks like a bad rate
            rows = [labels[i] for i in np.flatnonzero(bad)[:5]]
            raise ValueError(
                f"y holds {int(bad.sum())} NaN or infinite target(s) at rows {rows} "
                f"(e.g. {float(y[bad][0])!r}); a network cannot learn from them, whatever the "
                "learning rate. Drop or fix those rows"
            )
        return y, False, 1
    if y.dtype.kind in "iub":
        codes = y.astype(np.int64)
        if codes.min() >= 0:
            return codes, True, int(codes.max()) + 1
    classes, codes = np.unique(y.astype(str) if y.dtype.kind == "O" else y, return_inverse=True)
    return codes.astype(np.int64), True, len(classes)


def labelled_column(encoder, X, y, groups, *, learner: str, otherwise: str):
    """The raw column of ``X`` with its labels, checked: (items, labels, y as an array,
    groups checked for that many rows or None). ``learner`` and ``otherwise`` word the error
    for a missing ``y`` (e.g. "ImageEncoder(backend='cnn') learns its features", "choose a
    backend that needs no labels"); the column is recorded as ``encoder.column_``."""
    if y is None:
        raise ValueError(
            f"{learner} from the labels: call fit(X, y) with one label per item (an "
            f"estimator passes them itself), or {otherwise}"
        )
    items, labels, column = encoder._column(X)
    encoder.column_ = column
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(items):
        raise ValueError(
            f"y must hold one label per item of {encoder._where()} ({len(items)}), got shape "
            f"{y.shape}"
        )
    from toolkit.model_selection import check_groups

    return items, labels, y, check_groups(groups, len(items))


def read_present(encoder, items: list, labels: list) -> tuple[list[int], list]:
    """(row positions, read values) of the items that are present and readable; missing
    and (with ``on_error="missing"``) unreadable items are skipped, as the encoder's
    ``_read_or_skip`` decides."""
    kept, values = [], []
    for i, item in enumerate(items):
        if is_missing(item):
            continue
        value = encoder._read_or_skip(item, labels[i])
        if value is not None:
            kept.append(i)
            values.append(value)
    return kept, values


def _torch_threads(device):
    """One torch thread on the CPU (the network's operations are small: two threads
    waiting at a barrier per operation ran 5x slower than one on a busy machine, see
    :func:`toolkit.encoders.base.one_torch_thread`); nothing on a GPU."""
    import contextlib

    from toolkit.encoders.base import one_torch_thread

    return one_torch_thread() if device.type == "cpu" else contextlib.nullcontext()


class TrainableMixin:
    """A trainable ``backend="cnn"`` for a :class:`~toolkit.encoders.base.BaseEncoder`.

    The encoder (listed after this mixin in its bases) has the parameters of
    :data:`TRAINING_CONSTRAINTS` plus ``backend``, ``weights``, ``device``, ``batch_size``, and
    implements ``_cnn_prepare(decoded)`` (fitted input settings, e.g. image size, from the
    training items) and ``_cnn_inputs(decoded) -> float32 tensor (n, C, H, W)``, and sets
    ``_cnn_pool`` (the (rows, columns) grid the last feature map is averaged over).
    """

    _cnn_pool: tuple = (2, 2)

    @property
    def supervised(self) -> bool:
        """Whether this encoder learns from the labels (its backend trains a network)."""
        return self._trains()

    @property
    def fixed(self) -> bool:
        """Output independent of the fitting data (False for a trainable backend)."""
        if self.backend not in self.backends:
            return False
        return self.backend_object().fixed and not self.supervised

    # -- fitting --------------------------------------------------------------------------

    def fit(self, X, y=None, groups=None):
        """Fit the encoder on one column of raw items (and, for a trainable backend, its labels).

        Parameters
        ----------
        X : pandas Series, list or 1-D array of shape (n_samples,)
            Raw items; missing cells are skipped (and so are their labels).
        y : array-like of shape (n_samples,), default=None
            Needed by a trainable backend: class labels (integers, strings; class codes
            0..K-1 are kept as they are) or float regression targets. Ignored otherwise.
        groups : array-like of shape (n_samples,), default=None
            Group of each row (patient, speaker): the early-stopping validation rows are
            then whole groups. Ignored by the other backends.

        Returns
        -------
        self
        """
        if not self.supervised:
            return super().fit(X, y)
        self._validate_params()
        self._check_n_jobs()
        self._check_trainable()
        decoded, target, classify, n_out, groups = self._labelled_items(X, y, groups)
        self._train_on(decoded, target, classify, n_out, groups)
        return self

    def _check_trainable(self) -> None:
        """Settings of the trainable backend checked before anything is read."""
        name = type(self).__name__
        if self.weights is not None:
            raise ValueError(
                f"{name}(backend={self.backend!r}) trains its network from scratch and loads "
                f"no weights; leave weights=None (got {self.weights!r})"
            )
        check_widths(self.widths)

    def _labelled_items(self, X, y, groups):
        """Read the training items and their labels: (decoded items, target array, is
        classification, number of outputs, groups of the kept rows or None). Missing and
        (with ``on_error="missing"``) unreadable items are dropped with their labels."""
        name = type(self).__name__
        items, labels, y, groups = labelled_column(
            self, X, y, groups,
            learner=f"{name}(backend={self.backend!r}) learns its features",
            otherwise="choose a backend that needs no labels",
        )  # fmt: skip
        kept, decoded = read_present(self, items, labels)
        kept, decoded = self._finish_or_skip(kept, decoded, [labels[i] for i in kept])
        if not decoded:
            raise ValueError(
                f"{name} found no readable {self.modality} item in {self._where()} to train "
                f"on ({len(items)} rows, all missing or unreadable)"
            )
        self._check_fit_items(decoded, [labels[i] for i in kept])
        rows = np.asarray(kept)
        target, classify, n_out = _targets(y[rows], [labels[i] for i in kept])
        return decoded, target, classify, n_out, None if groups is None else groups[rows]

    def _train_on(self, decoded: list, target, classify: bool, n_out: int, groups) -> None:
        """Train the backend's network on the decoded training items."""
        self._cnn_prepare(decoded)
        x = self._cnn_inputs(decoded)
        del decoded
        with _torch_threads(resolve_device(self.device)):
            self._train_cnn(x, target, classify, n_out, groups)

    def _train_cnn(self, x, target: np.ndarray, classify: bool, n_out: int, groups) -> None:
        import torch

        seed = check_random_state_seed(self.random_state)
        self.device_ = resolve_device(self.device)
        k = int(getattr(self, "n_networks", 1))
        spec = cnn_spec(x.shape[1], self.widths, n_out, self.dropout, self._cnn_pool, k)
        self.network_spec_ = spec
        x_dev = x.to(self.device_)
        members, history, best, epochs, scale = [], [], [], [], None
        for j in range(k):
            # member j: its own validation split, initialization, shuffling and shifts
            member_seed = (seed + 7919 * j) % (2**32)
            split = self._split_and_target(len(x), target, classify, groups, member_seed, scale)
            scale = None if classify else (self.y_mean_, self.y_scale_)  # one target scale
            fit_x = x[torch.as_tensor(split[0])]
            mean = fit_x.mean(dim=(0, 2, 3))
            std = fit_x.std(dim=(0, 2, 3)).nan_to_num(1.0).clamp_min(1e-6)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(member_seed)
                net = build_cnn({**spec, "n_networks": 1})
                net.mean.copy_(mean)
                net.std.copy_(std)
                net = net.to(self.device_)
                aug = torch.Generator(device=self.device_).manual_seed(member_seed + 1)

                def forward(idx, net=net, aug=aug):
                    # training batches only (validation runs the network in eval mode)
                    xb = x_dev[idx]
                    return net(self._cnn_augment(xb, aug) if net.training else xb)

                members.append(self._train_network(net, forward, member_seed, split))
            history += [{**r, "network": j} if k > 1 else r for r in self.history_]
            best.append(self.best_epoch_)
            epochs.append(self.n_epochs_)
        if k > 1:
            from toolkit.encoders._cnn_modules import CNNEnsemble

            self.model_ = CNNEnsemble(members).eval()
            self.history_, self.best_epoch_, self.n_epochs_ = history, best, epochs
        else:
            self.model_ = members[0]
        self.n_features_out_ = k * int(spec["widths"][-1] * spec["pool"][0] * spec["pool"][1])

    def _cnn_augment(self, x, generator):
        """A training batch as the network sees it (augmented by encoders that define it)."""
        return x

    def _split_and_target(self, n: int, target, classify: bool, groups, seed: int, scale=None):
        """(training rows, early-stopping validation rows, target tensor) for
        :meth:`_train_network`: the target is the class codes, or the float target
        standardized on the training rows (``y_mean_`` and ``y_scale_``; ``scale``: that
        (mean, scale) instead, so that an ensemble's members share one), see
        :func:`toolkit.training.head_target`."""
        from toolkit import model_selection

        train_idx, val_idx = model_selection.validation_split(
            n, groups, self.validation_fraction, seed
        )
        self.is_classifier_ = classify
        y, _ = head_target(self, target, classify, train_idx, scale=scale)
        return train_idx, val_idx, y

    def _train_network(
        self, net, forward, seed: int, split, params=None, train_mode=None, keep=None
    ):
        """Train ``net`` on ``split`` (from :meth:`_split_and_target`) with the shared loop
        (:func:`toolkit.training.train`); return it in eval mode with the best epoch's
        weights (sets ``history_``, ``best_epoch_``, ``n_epochs_``).

        ``forward(idx)`` gives the network's outputs (n, n_out) for the rows ``idx`` (a
        tensor of row indices on the device). ``params``: the parameters to train (all of
        ``net``'s by default); ``train_mode()``: puts the trained parts in training mode
        (``net.train()`` by default); ``keep``: the state-dict keys that training changes,
        copied at the best epoch (all by default). Mini-batches of ``batch_size`` (a last
        batch of one row joins the one before, so batch normalization has two values),
        early stopping on the validation rows' loss (the training loss without validation
        rows), bfloat16 autocast on a GPU. Call inside ``torch.random.fork_rng`` seeded with
        ``seed``, so the same seed gives the same network on the CPU.
        """
        import torch

        train_idx, val_idx, y = split
        classify = self.is_classifier_
        loss_fn = torch.nn.CrossEntropyLoss() if classify else torch.nn.MSELoss()
        y = y.to(self.device_)
        size = self._train_batch_size()
        va = torch.as_tensor(val_idx).to(self.device_)

        def loss(idx):
            out = forward(idx).float()
            return loss_fn(out if classify else out[:, 0], y[idx])

        def batches(generator):
            return shuffled_batches(train_idx, size, generator, self.device_, join_single=True)

        return train(
            self,
            net,
            loss,
            batches,
            generator=torch.Generator().manual_seed(seed),
            device=self.device_,
            validation=(lambda: mean_loss(loss, chunks(va))) if len(va) else None,
            params=params,
            train_mode=train_mode,
            keep=keep,
            name=f"{type(self).__name__}(backend={self.backend!r})",
            hint="check the items for extreme values",
            desc=f"training {self.modality} {self.backend}",
        )

    def _cnn_embed(self, decoded: list) -> np.ndarray:
        """Pooled features (n, n_features_out_) of decoded items (or, inside
        :meth:`encode_scores`, the network's head outputs)."""
        import torch

        x = self._cnn_inputs(decoded).to(self.device_)
        layer = self.model_ if getattr(self, "_emit_scores", False) else self.model_.embed
        with _torch_threads(self.device_), torch.inference_mode():
            return layer(x).float().cpu().numpy()

    def encode_scores(self, X) -> tuple[np.ndarray, np.ndarray]:
        """The trained network's head outputs (class scores, or the standardized regression
        prediction) and the availability vector, as :meth:`encode` returns its features.

        Unlike the pooled features, whose coordinates depend on the training run, each column
        of the scores means the same thing whichever rows trained the network: the
        estimators cross-fit these (out-of-fold scores for the fusion's training rows).
        """
        check_is_fitted(self, "model_")
        saved = self.n_features_out_
        self.n_features_out_ = self._n_scores()
        self._emit_scores = True
        try:
            return self.encode(X)
        finally:
            del self._emit_scores
            self.n_features_out_ = saved

    def _n_scores(self) -> int:
        """Outputs of the trained network's head (classes, or 1 for a regression)."""
        return int(self.network_spec_["n_out"])

    # -- persistence protocol (toolkit.save / toolkit.load) -------------------------------

    def _trains(self) -> bool:
        """Whether the backend trains its network from scratch (``Backend.trains``)."""
        return self.backend in self.backends and self.backend_object().trains

    def expected_weights(self) -> dict[str, dict] | None:
        """Tensor names, dtypes and shapes of the trained network, built on the meta device
        (the backend's ``build_network``: the one ``network_spec_`` describes)."""
        if not self._trains():
            return super().expected_weights()
        import torch

        with torch.device("meta"):
            net = self.build_network()
        return tensor_table(net.state_dict())

    def load_weights(self, paths: dict[str, str]) -> None:
        """Load the trained network from the safetensors file ``paths["weights"]`` on the CPU
        (nothing is trained again)."""
        if not self._trains():
            return super().load_weights(paths)
        if set(paths) != {"weights"}:
            raise ValueError(
                f"{type(self).__name__}(backend={self.backend!r}) is restored from ['weights'], "
                f"got {sorted(paths)}"
            )
        import torch
        from safetensors.torch import load_file

        net = self.build_network()
        net.load_state_dict(load_file(paths["weights"]), strict=True)
        self.model_ = net.eval()
        self.device_ = torch.device("cpu")
        return None
