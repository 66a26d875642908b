"""Gated fusion: a gated multimodal unit generalized to M modalities, trained with torch."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from toolkit._utils import check_random_state_seed, resolve_device
from toolkit.embeddings import Embeddings
from toolkit.fusion.base import BaseFusion, BlockScaler, drop_modalities


class GatedFusion(BaseFusion):
    """Gated fusion of M modalities (torch), with modality dropout and early stopping.

    Each standardized block (weighted by 1/sqrt(d_m), as in early fusion) is projected
    to ``hidden_size`` units, p_m = tanh(P_m x_m). From the context c = [p_1, ..., p_M,
    availability mask] every modality gets a reset gate r_m = sigmoid(W_r,m c) and an
    update gate z_m = sigmoid(W_z,m c) (per hidden unit); its candidate is
    h~_m = tanh(U_m (r_m * p_m)), and the fused state is h = sum_m z_m * h~_m. This
    generalizes the gated multimodal unit (z = sigmoid(W_z [x, y]),
    h = (1 - z) * h~_x + z * h~_y) and its GRU-style reset gate to M modalities: the
    gates see every modality, the content of each path comes from its own modality, and
    an absent modality has zero gate (no imputation).

    Training uses AdamW, dropout, and modality dropout (each available modality of a
    training row is hidden with probability ``modality_dropout``, one always kept), so
    predictions without a modality are learned. Early stopping (best weights restored)
    monitors the validation loss on the full rows *and* on every leave-one-modality-out
    view of them, so the missing-modality paths cannot memorize noise unchecked.

    Parameters
    ----------
    hidden_size : int, default=32
    modality_dropout : float in [0, 1), default=0.2
    max_epochs : int, default=200
    batch_size : int, default=64
    learning_rate : float, default=3e-3
    weight_decay : float, default=1e-3
    dropout : float in [0, 1), default=0.3
        Dropout on the modality inputs and on the fused state during training.
    patience : int, default=15
        Epochs without validation improvement before stopping.
    validation_fraction : float, default=0.15
        Share of training rows held out for early stopping (none below 20 rows).
    device : str, default="auto"
    random_state : int, RandomState or None
        Seeds initialization, batching, dropout and the validation split: the same
        seed and data give identical predictions on CPU.

    Attributes
    ----------
    module_ : torch.nn.Module
    n_epochs_ : int
        Epochs trained (including the patience window).
    best_epoch_ : int
    history_ : list of dict
        Per-epoch training and validation loss.
    prior_ : ndarray

    Examples
    --------
    >>> import numpy as np
    >>> from toolkit import Embeddings, GatedFusion
    >>> rng = np.random.default_rng(0)
    >>> emb = Embeddings({"a": rng.normal(size=(60, 2)), "b": rng.normal(size=(60, 3))})
    >>> y = (emb.blocks["a"][:, 0] > 0).astype(int)
    >>> fusion = GatedFusion(max_epochs=20, random_state=0).fit(emb, y, n_classes=2)
    >>> fusion.gate_values(emb).shape
    (60, 2)
    """

    _parameter_constraints = {
        "hidden_size": [Interval(Integral, 1, None, closed="left")],
        "modality_dropout": [Interval(Real, 0.0, 1.0, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0.0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0.0, None, closed="left")],
        "dropout": [Interval(Real, 0.0, 1.0, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0.0, 1.0, closed="left")],
        "device": [str, None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        hidden_size=32,
        modality_dropout=0.2,
        max_epochs=200,
        batch_size=64,
        learning_rate=3e-3,
        weight_decay=1e-3,
        dropout=0.3,
        patience=15,
        validation_fraction=0.15,
        device="auto",
        random_state=None,
    ):
        self.hidden_size = hidden_size
        self.modality_dropout = modality_dropout
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.device = device
        self.random_state = random_state

    # -- persistence protocol -------------------------------------------------------------

    torch_attributes = ("module_", "device_")

    def weight_parameters(self) -> tuple[str, ...]:
        return ("weights",)

    def save_weights(self, folder) -> dict[str, str] | None:
        """Write the fitted network's float64 state dict to ``folder/fusion.safetensors``."""
        from pathlib import Path

        from safetensors.torch import save_file

        if getattr(self, "module_", None) is None:
            return None
        Path(folder).mkdir(parents=True, exist_ok=True)
        state = {
            k: v.detach().cpu().contiguous().clone() for k, v in self.module_.state_dict().items()
        }
        save_file(state, str(Path(folder) / "fusion.safetensors"))
        return {"weights": "fusion.safetensors"}

    def _spec(self) -> tuple[list[int], int, int, float]:
        spec = self.module_spec_
        try:
            dims = [int(d) for d in spec["dims"]]
            hidden, n_out, dropout = int(spec["hidden"]), int(spec["n_out"]), float(spec["dropout"])
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"the gated network's description is malformed ({exc})") from exc
        if not dims or min([*dims, hidden, n_out]) < 1 or not 0 <= dropout < 1:
            raise ValueError(
                "the gated network's description is malformed (sizes must be positive and "
                "dropout in [0, 1))"
            )
        return dims, hidden, n_out, dropout

    def expected_weights(self) -> dict[str, dict] | None:
        """Float64 tensors of the network ``module_spec_`` describes (built on meta)."""
        import torch

        from toolkit._utils import tensor_table
        from toolkit.fusion._gated_module import GatedUnit

        with torch.device("meta"):
            net = GatedUnit(*self._spec()).to(torch.float64)
        return tensor_table(net.state_dict())

    def load_weights(self, paths: dict[str, str]) -> None:
        import torch
        from safetensors.torch import load_file

        from toolkit.fusion._gated_module import GatedUnit

        module = GatedUnit(*self._spec()).to(torch.float64)
        module.load_state_dict(load_file(paths["weights"]), strict=True)
        self.module_ = module.eval()
        self.device_ = torch.device("cpu")

    def _tensors(self, emb: Embeddings):
        import torch

        blocks = self.scaler_.transform(emb)
        xs = [torch.from_numpy(blocks[n].astype(np.float64)).to(self.device_) for n in emb.names]
        return xs, torch.from_numpy(np.ascontiguousarray(emb.mask)).to(self.device_)

    def fit(self, emb: Embeddings, y, n_classes=None, groups=None):
        """Train the gated unit on ``emb`` (see :class:`BaseFusion`); with ``groups``, the
        early-stopping validation rows are whole groups."""
        import torch

        self._validate_params()
        y = self._setup(emb, y, n_classes)
        self.device_ = resolve_device(self.device)
        seed = check_random_state_seed(self.random_state)
        self.scaler_ = BlockScaler().fit(emb, balance=True)
        if self.is_classifier_:
            target = torch.as_tensor(y.astype(np.int64))
            n_out = self.n_classes_
            loss_fn = torch.nn.CrossEntropyLoss()
        else:
            self.y_mean_, self.y_scale_ = float(np.mean(y)), float(np.std(y)) or 1.0
            target = torch.as_tensor((y - self.y_mean_) / self.y_scale_, dtype=torch.float64)
            n_out = 1
            loss_fn = torch.nn.MSELoss()
        target = target.to(self.device_)
        xs, mask = self._tensors(emb)
        n = emb.n_samples
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            from toolkit.fusion._gated_module import GatedUnit

            dims = [x.shape[1] for x in xs]
            self.module_spec_ = {
                "dims": dims,
                "hidden": self.hidden_size,
                "n_out": n_out,
                "dropout": self.dropout,
            }
            self.module_ = GatedUnit(dims, self.hidden_size, n_out, self.dropout).to(
                self.device_, torch.float64
            )
            perm = torch.randperm(n, generator=gen)
            n_val = int(round(self.validation_fraction * n)) if n >= 20 else 0
            val_idx, train_idx = perm[:n_val], perm[n_val:]
            if groups is not None:
                from toolkit.fusion._inner import check_groups, validation_split

                tr, va = validation_split(
                    n, check_groups(groups, n), self.validation_fraction, seed
                )
                train_idx, val_idx = torch.from_numpy(tr), torch.from_numpy(va)
                n_val = len(va)
            opt = torch.optim.AdamW(
                self.module_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
            )
            best, best_state, since = np.inf, None, 0
            self.history_ = []
            for epoch in range(self.max_epochs):
                self.module_.train()
                order = train_idx[torch.randperm(len(train_idx), generator=gen)]
                total = 0.0
                for start in range(0, len(order), self.batch_size):
                    idx = order[start : start + self.batch_size].to(self.device_)
                    m = mask[idx]
                    if self.modality_dropout > 0:
                        uniform = torch.rand(m.shape, generator=gen).to(self.device_)
                        m = drop_modalities(m, uniform, self.modality_dropout)
                    out, _ = self.module_([x[idx] for x in xs], m)
                    loss = loss_fn(out if self.is_classifier_ else out[:, 0], target[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                record = {"epoch": epoch, "train_loss": total / max(len(order), 1)}
                monitor = record["train_loss"]
                if n_val:
                    monitor = self._validation_loss(xs, mask, target, val_idx, loss_fn)
                    record["valid_loss"] = monitor
                self.history_.append(record)
                if monitor < best - 1e-5:
                    best, since, self.best_epoch_ = monitor, 0, epoch
                    best_state = {
                        k: v.detach().clone() for k, v in self.module_.state_dict().items()
                    }
                else:
                    since += 1
                    if since >= self.patience:
                        break
            if best_state is None:
                raise ValueError(
                    f"GatedFusion training diverged: the loss was NaN or infinite in all "
                    f"{len(self.history_)} epoch(s); lower learning_rate (now "
                    f"{self.learning_rate}) or check the embeddings for extreme values"
                )
            self.module_.load_state_dict(best_state)
        self.module_.eval()
        self.n_epochs_ = len(self.history_)
        return self

    def _validation_loss(self, xs, mask, target, val_idx, loss_fn) -> float:
        """Validation loss on the full rows and on each leave-one-modality-out view.

        Early stopping then also guards the paths used when a modality is missing, which
        the full rows alone never exercise (a network can memorize noise there).
        """
        import torch

        self.module_.eval()
        vi = val_idx.to(self.device_)
        views = [mask[vi]]
        if self.modality_dropout > 0 and mask.shape[1] > 1:
            for m in range(mask.shape[1]):
                view = mask[vi].clone()
                view[:, m] = False
                keep = view.any(dim=1) & mask[vi][:, m]
                if keep.any():
                    views.append((view, keep))
        losses = []
        with torch.no_grad():
            for view in views:
                rows = vi
                if isinstance(view, tuple):
                    view, keep = view
                    rows, view = vi[keep], view[keep]
                out, _ = self.module_([x[rows] for x in xs], view)
                losses.append(
                    float(loss_fn(out if self.is_classifier_ else out[:, 0], target[rows]))
                )
        return float(np.mean(losses))

    def _forward(self, emb: Embeddings):
        import torch

        check_is_fitted(self, "module_")
        xs, mask = self._tensors(emb)
        with torch.inference_mode():
            out, z = self.module_(xs, mask)
        return out.cpu().numpy(), z.cpu().numpy()

    def predict_output(self, emb: Embeddings) -> np.ndarray:
        """Class probabilities (n_samples, n_classes) or predictions (n_samples,)."""
        out, _ = self._forward(emb)
        if not self.is_classifier_:
            return self._unscale(out[:, 0].astype(np.float64) * self.y_scale_ + self.y_mean_)
        out = out.astype(np.float64)
        out -= out.max(axis=1, keepdims=True)
        proba = np.exp(out)
        return proba / proba.sum(axis=1, keepdims=True)

    def decision_function(self, emb: Embeddings) -> np.ndarray:
        """Logits (binary: logit difference of class 1 over class 0)."""
        out, _ = self._forward(emb)
        out = out.astype(np.float64)
        return out[:, 1] - out[:, 0] if out.shape[1] == 2 else out

    def gate_values(self, emb: Embeddings) -> np.ndarray:
        """Per-sample update gate z_m of each modality, averaged over hidden units.

        Returns an array of shape (n_samples, n_modalities) in [0, 1]; absent modalities
        get exactly 0. This is a model-internal view
        of how much each modality's candidate enters the fused state; it is not an
        attribution of the output (use the Shapley explanation for that).
        """
        _, z = self._forward(emb)
        return z.mean(axis=2)
