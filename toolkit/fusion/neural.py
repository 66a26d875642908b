"""The shared base of the torch fusions: training loop, early stopping, modality dropout,
persistence protocol and outputs.

A subclass says which network it trains: ``_module_spec(dims, n_out)`` describes it as a
plain dict (stored in ``module_spec_``, so a saved model can check its weights before
building it) and ``_build_module(spec)`` builds it from that dict, on any device including
``meta``. Everything else (standardized inputs, dropout of whole modalities, early stopping
on the full rows and every leave-one-modality-out view, safetensors weights) is here, once;
the epochs themselves (AdamW, early stopping, seeded determinism) are the shared loop of
:func:`toolkit.training.train`.
"""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from toolkit import model_selection
from toolkit._utils import check_random_state_seed, resolve_device
from toolkit.embeddings import Embeddings
from toolkit.fusion.base import BaseFusion, BlockScaler, drop_modalities
from toolkit.training import (
    head_target,
    seeded,
    shuffled_batches,
    train,
    training_constraints,
)

#: The parameters every torch fusion shares: modality dropout and those of the shared
#: training loop (:data:`toolkit.training.TRAINING_CONSTRAINTS`; the fusions show no
#: progress bar, so no ``verbose``).
TRAINING_CONSTRAINTS = {
    "modality_dropout": [Interval(Real, 0.0, 1.0, closed="left")],
    **training_constraints(exclude=("verbose",)),
}


#: Rows per forward pass when a fitted network predicts on a GPU.
_PREDICT_ROWS = 1 << 16


class NeuralFusion(BaseFusion):
    """Base class of the fusions that train a torch network on the standardized blocks.

    Subclasses set the training parameters of :data:`TRAINING_CONSTRAINTS` in ``__init__``
    (plus their own), and implement ``_module_spec`` and ``_build_module``. The network's
    ``forward(xs, mask)`` takes the list of float64 blocks in modality order and the boolean
    availability mask (n_samples, n_modalities) and returns logits (n_samples, n_out) (or a
    tuple whose first item they are). Blocks are standardized on the rows where each modality
    is present (absent rows hold 0); with ``_balance_blocks`` each is also weighted by
    1/sqrt(d_m), as in early fusion.

    Training: AdamW, ``modality_dropout`` (each available modality of a training row is
    hidden with that probability, one always kept), mini-batches of ``batch_size``, and
    early stopping (best weights restored) on the validation loss over the full rows *and*
    over every leave-one-modality-out view of them (when modality dropout is on), so the
    paths used when a modality is missing cannot memorize noise unchecked. With ``groups``
    the validation rows are whole groups (:func:`toolkit.model_selection.validation_split`).

    Fitted attributes: ``module_``, ``module_spec_``, ``device_``, ``history_`` (per-epoch
    ``train_loss`` and ``valid_loss``), ``best_epoch_``, ``n_epochs_`` and, for regression,
    ``y_mean_`` / ``y_scale_`` (the network fits the standardized target).
    """

    #: Name used in messages ("the <name> network's description is malformed").
    _network_name = "neural"
    #: Weight each standardized block by 1/sqrt(d_m) before the network sees it.
    _balance_blocks = True
    #: Also weight each block by its own evidence (``block_scales_``, see ``_block_scales``).
    _evidence_scales = False

    # -- what a subclass provides ---------------------------------------------------------

    def _module_spec(self, dims: list[int], n_out: int) -> dict:  # pragma: no cover
        """The network for blocks of widths ``dims`` and ``n_out`` outputs, as a plain dict
        of numbers and lists (it is saved in ``model.skops``)."""
        raise NotImplementedError

    def _build_module(self, spec: dict):  # pragma: no cover
        """The untrained network ``spec`` describes (float32; the caller converts it).
        Raise ValueError (via :meth:`_read_spec`) for a malformed ``spec``."""
        raise NotImplementedError

    def _read_spec(self, spec, ints=(), floats=()) -> tuple[list[int], dict]:
        """``spec["dims"]`` and the named fields of ``spec`` checked: dims and ``ints``
        positive integers, ``floats`` (dropout rates) in [0, 1)."""
        bad = f"the {self._network_name} network's description is malformed"
        try:
            dims = [int(d) for d in spec["dims"]]
            values = {k: int(spec[k]) for k in ints}
            values.update({k: float(spec[k]) for k in floats})
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"{bad} ({exc})") from exc
        if not dims or min([*dims, *(values[k] for k in ints)]) < 1:
            raise ValueError(f"{bad} (sizes must be positive and dropout in [0, 1))")
        if not all(0 <= values[k] < 1 for k in floats):
            raise ValueError(f"{bad} (sizes must be positive and dropout in [0, 1))")
        return dims, values

    def _run_module(self, xs, mask):
        """Logits of the network (its first output when it returns a tuple)."""
        out = self.module_(xs, mask)
        return out[0] if isinstance(out, tuple) else out

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

    def expected_weights(self) -> dict[str, dict] | None:
        """Float64 tensors of the network ``module_spec_`` describes (built on meta)."""
        import torch

        from toolkit._utils import tensor_table

        with torch.device("meta"):
            net = self._build_module(self.module_spec_).to(torch.float64)
        return tensor_table(net.state_dict())

    def load_weights(self, paths: dict[str, str]) -> None:
        import torch
        from safetensors.torch import load_file

        module = self._build_module(self.module_spec_).to(torch.float64)
        module.load_state_dict(load_file(paths["weights"]), strict=True)
        self.module_ = module.eval()
        self.device_ = torch.device("cpu")

    # -- training -------------------------------------------------------------------------

    def _tensors(self, emb: Embeddings):
        import torch

        blocks = self.scaler_.transform(emb)
        xs = [torch.from_numpy(blocks[n].astype(np.float64)).to(self.device_) for n in emb.names]
        return xs, torch.from_numpy(np.ascontiguousarray(emb.mask)).to(self.device_)

    def fit(self, emb: Embeddings, y, n_classes=None, groups=None):
        """Train the network on ``emb`` (see :class:`BaseFusion`); with ``groups``, the
        early-stopping validation rows are whole groups."""
        import torch

        self._validate_params()
        y = self._setup(emb, y, n_classes)
        self.device_ = resolve_device(self.device)
        seed = check_random_state_seed(self.random_state)
        self.scaler_ = BlockScaler().fit(emb, balance=self._balance_blocks)
        self.block_scales_ = None
        if self._evidence_scales and emb.n_modalities > 1:
            self.block_scales_ = self._block_scales(emb, y, groups, seed)
            for name, scale in self.block_scales_.items():
                self.scaler_.weight_[name] *= scale
        # a regression target is standardized on all rows (the network fits it in float64)
        target, loss_fn = head_target(self, y, self.is_classifier_, dtype=torch.float64)
        n_out = self.n_classes_ if self.is_classifier_ else 1
        target = target.to(self.device_)
        xs, mask = self._tensors(emb)
        n = emb.n_samples
        self.module_spec_ = self._module_spec([x.shape[1] for x in xs], n_out)
        with seeded(seed) as gen:
            self.module_ = self._build_module(self.module_spec_).to(self.device_, torch.float64)
            train_idx, val_idx = self._split(n, groups, seed, gen)
            self._train(xs, mask, target, loss_fn, train_idx, val_idx, gen)
        return self

    def _block_scales(self, emb: Embeddings, y, groups, seed: int) -> dict[str, float]:
        """Per-block scales sqrt(C_m / max C), as early fusion's ``block_scales_``: C_m is
        the strength inner CV chooses for a linear head on block m alone (the rows where it
        is present; whole groups per fold with ``groups``); ``block_params_`` holds them.

        A block with no evidence of its own enters the network shrunk (its weights must
        grow against weight decay to use it), so a distractor cannot memorize the labels
        in a modality-dropout view where it is alone, and keeps little Shapley credit.
        Blocks informative only together (an interaction, each alone at chance) get the
        same C_m, hence the same scale.
        """
        from toolkit.fusion._heads import fit_head

        groups = model_selection.check_groups(groups, emb.n_samples)
        blocks = BlockScaler().fit(emb, balance=True).transform(emb)
        params = {}
        for m, name in enumerate(emb.names):
            rows = emb.mask[:, m]
            fitted = fit_head(
                blocks[name][rows],
                y[rows],
                n_classes=self.n_classes_ if self.is_classifier_ else None,
                groups=None if groups is None else groups[rows],
                seed=seed,
                need_oof=False,
            )
            params[name] = fitted.param if self.is_classifier_ else 1.0 / fitted.param
        top = max(params.values())
        self.block_params_ = params
        return {name: float(np.sqrt(p / top)) for name, p in params.items()}

    def _split(self, n: int, groups, seed: int, gen):
        """(train, validation) row indices: whole groups with ``groups``
        (:func:`toolkit.model_selection.validation_split`), else the first
        ``round(validation_fraction * n)`` rows of a permutation drawn from ``gen`` (drawn in
        both cases, so that the seeded fits of earlier releases are reproduced)."""
        import torch

        perm = torch.randperm(n, generator=gen)
        n_val = int(round(self.validation_fraction * n)) if n >= 20 else 0
        if groups is None:
            return perm[n_val:], perm[:n_val]
        tr, va = model_selection.validation_split(
            n, model_selection.check_groups(groups, n), self.validation_fraction, seed
        )
        return torch.from_numpy(tr), torch.from_numpy(va)

    def _train(self, xs, mask, target, loss_fn, train_idx, val_idx, gen) -> None:
        """Train ``module_`` with the shared loop (:func:`toolkit.training.train`): batches
        of ``batch_size`` rows, each available modality of a row hidden with probability
        ``modality_dropout`` (the uniforms drawn once per epoch, after the shuffle)."""
        import torch

        def batches(generator):
            rows = shuffled_batches(train_idx, self.batch_size, generator, self.device_)
            if self.modality_dropout <= 0:
                return [(idx, None) for idx in rows]
            n = sum(len(idx) for idx in rows)
            uniforms = torch.rand((n, mask.shape[1]), generator=generator).to(self.device_)
            starts = np.cumsum([0, *(len(idx) for idx in rows)])
            return [(i, uniforms[s : s + len(i)]) for i, s in zip(rows, starts[:-1], strict=True)]

        def loss(batch):
            idx, uniform = batch
            m = mask[idx]
            if uniform is not None:
                m = drop_modalities(m, uniform, self.modality_dropout)
            return self._loss(loss_fn, self._run_module([x[idx] for x in xs], m), target[idx])

        def validation():
            return self._validation_loss(xs, mask, target, val_idx, loss_fn)

        train(
            self,
            self.module_,
            loss,
            batches,
            generator=gen,
            device=self.device_,
            validation=validation if len(val_idx) else None,
            autocast=False,  # a float64 network (autocast would leave it as it is)
            hint="check the embeddings for extreme values",
        )

    def _loss(self, loss_fn, out, target):
        return loss_fn(out if self.is_classifier_ else out[:, 0], target)

    def _validation_loss(self, xs, mask, target, val_idx, loss_fn) -> float:
        """Validation loss on the full rows and on each leave-one-modality-out view.

        Early stopping then also guards the paths used when a modality is missing, which
        the full rows alone never exercise (a network can memorize noise there).
        """
        import torch

        self.module_.eval()
        vi = val_idx.to(self.device_)
        views = [(mask[vi], vi)]
        if self.modality_dropout > 0 and mask.shape[1] > 1:
            for m in range(mask.shape[1]):
                view = mask[vi].clone()
                view[:, m] = False
                keep = view.any(dim=1) & mask[vi][:, m]
                if keep.any():
                    views.append((view[keep], vi[keep]))
        losses = []
        with torch.no_grad():
            for view, rows in views:
                out = self._run_module([x[rows] for x in xs], view)
                losses.append(float(self._loss(loss_fn, out, target[rows])))
        return float(np.mean(losses))

    # -- outputs --------------------------------------------------------------------------

    def _logits(self, emb: Embeddings) -> np.ndarray:
        import torch

        check_is_fitted(self, "module_")
        xs, mask = self._tensors(emb)
        # On a GPU, rows in batches of _PREDICT_ROWS (bounded device memory for the many
        # coalitions of an explanation); on the CPU all rows at once, as before.
        step = _PREDICT_ROWS if self.device_.type == "cuda" else max(len(mask), 1)
        with torch.inference_mode():
            out = torch.cat(
                [
                    self._run_module([x[s : s + step] for x in xs], mask[s : s + step])
                    for s in range(0, max(len(mask), 1), step)
                ]
            )
        return out.cpu().numpy().astype(np.float64)

    def predict_output(self, emb: Embeddings) -> np.ndarray:
        """Class probabilities (n_samples, n_classes) or predictions (n_samples,)."""
        out = self._logits(emb)
        if not self.is_classifier_:
            return self._unscale(out[:, 0] * self.y_scale_ + self.y_mean_)
        out -= out.max(axis=1, keepdims=True)
        proba = np.exp(out)
        return proba / proba.sum(axis=1, keepdims=True)

    def decision_function(self, emb: Embeddings) -> np.ndarray:
        """Logits (binary: logit difference of class 1 over class 0)."""
        out = self._logits(emb)
        return out[:, 1] - out[:, 0] if out.shape[1] == 2 else out
