"""Fine-tuning of pretrained backbones on the labels inside ``fit`` (images, audio, scans).

:class:`FineTuneMixin` makes the pretrained backend of an encoder (``torchvision`` for
images, ``transformers`` for audio, ``monai`` for scans) trainable when ``fine_tune`` is set:
the pretrained network is loaded as for frozen features, its last Linear layer is replaced by
a new head with one output per class (or one for a regression), every parameter is frozen
except the head's and those of the top ``trainable_blocks`` (``trainable_layers``) blocks of
the backbone, and those are trained with the shared loop of
:class:`~toolkit.encoders._cnn.TrainableMixin` (AdamW, early stopping on an inner validation
split, grouped when ``groups`` are given, ``history_``, bfloat16 autocast on a GPU). Frozen
blocks run in eval mode (their dropout off, their batch-normalization statistics kept), so
their parameters and buffers come out bit-identical.

The backbone's *blocks*, in order: the modules met walking the network from its root,
where a plain container (``nn.Sequential``, ``nn.ModuleList``) is opened when one of its
children holds sub-modules of its own (the stages of a ResNet open into residual blocks,
MobileNet's ``features`` into its inverted-residual blocks; a conv-norm-activation
``Sequential`` stays one block), and so is any module that holds the head or a stack of
alike blocks (a ViT's encoder opens into its layers); modules without parameters are
skipped. The names of the trained blocks are ``trainable_blocks_``.

A fine-tuned encoder is ``supervised`` (never cached; the estimators cross-fit its head's
outputs, :meth:`encode_scores`); ``encode`` gives the head's input (penultimate features),
as the frozen backend does. Persistence: the torchvision and MONAI networks are saved as one
safetensors state dict, checked on load against the network rebuilt on the meta device from
the allow-listed architecture name and the number of outputs; the audio model is saved with
``save_pretrained`` as an audio-classification model and loaded without remote code.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from toolkit._utils import check_random_state_seed, resolve_device, tensor_table

#: Fine-tuning parameters (with the training ones of ``TRAINING_CONSTRAINTS``).
FINE_TUNE_CONSTRAINTS = {
    "fine_tune": ["boolean", StrOptions({"top"})],
}
_DEPTH = [Interval(Integral, 0, None, closed="left")]


def head_name(net) -> str:
    """Qualified name of the last ``nn.Linear`` of ``net`` (the head fine-tuning replaces)."""
    import torch

    names = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)]
    if not names:
        raise ValueError(
            f"{type(net).__name__} has no Linear layer to put a trained head in place of"
        )
    return names[-1]


def replace_head(net, n_out: int):
    """``net`` with its last Linear layer replaced by a new ``Linear(in, n_out)`` (initialized
    from torch's current random state); returns ``net``."""
    import torch

    name = head_name(net)
    parent, _, child = name.rpartition(".")
    owner = net.get_submodule(parent) if parent else net
    old = getattr(owner, child)
    new = torch.nn.Linear(old.in_features, int(n_out), bias=old.bias is not None)
    setattr(owner, child, new.to(device=old.weight.device, dtype=old.weight.dtype))
    return net


def load_pretrained(net, weights, what: str):
    """Load the state dict file ``weights`` into ``net`` (``what``: the architecture and its
    settings, for the message); a file of another shape is a ValueError naming both."""
    from toolkit.encoders._torch import apply_weights

    try:
        apply_weights(net, weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0] if first else ""
        raise ValueError(
            f"weights file '{weights}' does not fit {what} ({detail}); give the architecture "
            "and model_kwargs the weights were saved with"
        ) from exc
    return net


def backbone_blocks(net, head: str) -> list[str]:
    """Names of the backbone's blocks in order (see the module docstring), the head left out."""
    import torch

    containers = (torch.nn.Sequential, torch.nn.ModuleList)

    def holds_params(m) -> bool:
        return any(True for _ in m.parameters())

    def is_stack(m) -> bool:  # a plain container of two or more alike composite blocks
        kids = list(m.children())
        return (
            type(m) in containers
            and len(kids) >= 2
            and len({type(k) for k in kids}) == 1
            and not isinstance(kids[0], torch.nn.Sequential)  # not conv-norm-act layers
            and any(True for _ in kids[0].children())
        )

    def walk(prefix: str, module) -> list[str]:
        out = []
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if full == head or not holds_params(child):
                continue
            holds_head = head.startswith(full + ".")
            nested = any(any(True for _ in c.children()) for c in child.children())
            stacked = any(is_stack(c) for c in child.children())  # e.g. a ViT's encoder
            if holds_head or stacked or (type(child) in containers and nested):
                out += walk(full + ".", child)
            else:
                out.append(full)
        return out

    return walk("", net)


def scores_view(net, n_out: int):
    """``net`` followed by an identity Linear layer, so that the encoders' penultimate
    features (the input of the last Linear layer) of it are ``net``'s head outputs: the
    encoding loops give :meth:`FineTuneMixin.encode_scores` unchanged."""
    import torch

    class ScoresView(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.identity = torch.nn.Linear(n_out, n_out, bias=False)
            with torch.no_grad():
                self.identity.weight.copy_(torch.eye(n_out))

        def forward(self, *args, **kwargs):
            out = self.net(*args, **kwargs)
            return self.identity(getattr(out, "logits", out))

    param = next(net.parameters())
    return ScoresView().to(device=param.device).eval()


class FineTuneMixin:
    """``fine_tune`` for the pretrained backends of an encoder that declare
    ``can_fine_tune`` (see :mod:`toolkit.encoders.backends`).

    Listed before :class:`~toolkit.encoders._cnn.TrainableMixin` in the encoder's bases. The
    encoder implements ``_ft_network(n_out)`` (the pretrained network, weights loaded, with a
    new head of ``n_out`` outputs, on the CPU), ``_ft_inputs(decoded)`` (the training items
    as the network's inputs), ``_ft_forward(net, inputs, idx)`` (outputs for the rows
    ``idx``), and may override ``_ft_blocks(net)`` and ``_ft_head(net)``; its depth
    parameter is named by ``_depth_param`` (``trainable_blocks`` or ``trainable_layers``).
    """

    _depth_param: str = "trainable_blocks"

    def _fine_tuning(self) -> bool:
        return (
            self.fine_tune not in (False, None)
            and self.backend in self.backends
            and self.backend_object().can_fine_tune
        )

    @property
    def supervised(self) -> bool:
        """Whether this encoder learns from the labels (a trainable backend, or a pretrained
        one with ``fine_tune``)."""
        return self._fine_tuning() or super().supervised

    # -- training -------------------------------------------------------------------------

    def _check_trainable(self) -> None:
        if not self._fine_tuning():
            check_fine_tune(self)  # e.g. fine_tune with a backend trained from scratch
            return super()._check_trainable()
        name = type(self).__name__
        if self.model is None:
            raise ValueError(
                f"{name}(backend={self.backend!r}, fine_tune={self.fine_tune!r}) fine-tunes a "
                "pretrained network: give model=<architecture or local folder> (and weights= "
                "where the backend needs a state dict)"
            )

    def _ft_blocks(self, net) -> list[str]:
        return backbone_blocks(net, head_name(net))

    def _ft_head(self, net) -> list[str]:
        """Names of the modules trained from scratch (the new head)."""
        return [head_name(net)]

    def _train_on(self, decoded: list, target, classify: bool, n_out: int, groups) -> None:
        if not self._fine_tuning():
            return super()._train_on(decoded, target, classify, n_out, groups)
        import torch

        from toolkit.encoders._cnn import _torch_threads

        seed = check_random_state_seed(self.random_state)
        self.device_ = resolve_device(self.device)
        for stale in ("n_outputs_", "model_", "trainable_blocks_"):
            if hasattr(self, stale):
                delattr(self, stale)
        split = self._split_and_target(len(decoded), target, classify, groups, seed)
        with _torch_threads(self.device_), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = self._ft_network(n_out)  # the new head initialized from the seed
            blocks = self._ft_blocks(net)
            depth = int(getattr(self, self._depth_param))
            if depth > len(blocks):
                raise ValueError(
                    f"{self._depth_param}={depth} but {type(net).__name__} has {len(blocks)} "
                    f"blocks below its head ({', '.join(blocks[:2])} ... {blocks[-1]}); give "
                    f"at most {len(blocks)} (0 trains the head alone)"
                )
            inputs = self._ft_inputs(decoded)
            del decoded
            trained = blocks[len(blocks) - depth :] + self._ft_head(net)
            modules = [net.get_submodule(name) for name in trained]
            net.requires_grad_(False)
            for m in modules:
                m.requires_grad_(True)
            params = [p for m in modules for p in m.parameters()]
            keep = {k for k in net.state_dict() if any(k.startswith(n + ".") for n in trained)}

            norms = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm)

            def train_mode():
                net.eval()
                for m in modules:
                    m.train()
                for m in net.modules():  # statistics as loaded: training = inference
                    if isinstance(m, norms):
                        m.eval()

            net = net.to(self.device_)
            self.model_ = self._train_network(
                net,
                lambda idx: self._ft_forward(net, inputs, idx),
                seed,
                split,
                params=params,
                train_mode=train_mode,
                keep=keep,
            )
        self.model_.requires_grad_(False)
        self.n_outputs_ = int(n_out)
        self.trainable_blocks_ = list(trained)
        self.n_features_out_ = int(net.get_submodule(head_name(net)).in_features)

    def _n_scores(self) -> int:
        if not self._fine_tuning():
            return super()._n_scores()
        return int(self.n_outputs_)

    def encode_scores(self, X) -> tuple[np.ndarray, np.ndarray]:
        """The fine-tuned network's head outputs (class scores, or the standardized regression
        prediction) and the availability vector, as :meth:`encode` returns its features (the
        estimators cross-fit these)."""
        if not self._fine_tuning():
            return super().encode_scores(X)
        check_is_fitted(self, "model_")
        net, width = self.model_, self.n_features_out_
        self.model_, self.n_features_out_ = scores_view(net, self.n_outputs_), self.n_outputs_
        try:
            return self.encode(X)
        finally:
            self.model_, self.n_features_out_ = net, width

    # -- persistence protocol -------------------------------------------------------------

    def weight_parameters(self) -> tuple[str, ...]:
        if self._fine_tuning():
            from toolkit.encoders.base import BaseEncoder

            return BaseEncoder.weight_parameters(self)
        return super().weight_parameters()

    def expected_weights(self) -> dict[str, dict] | None:
        """Tensor names, dtypes and shapes of the fine-tuned network (its architecture checked
        against the library's model list, built on the meta device with the trained head);
        None for a transformers folder (it describes itself)."""
        if not self._fine_tuning():
            return super().expected_weights()
        backend = self.backend_object()
        if tuple(backend.weight_parameters) != ("weights",):
            return None  # a model folder describes its own network
        import torch

        check_is_fitted(self, "n_outputs_")
        backend.check_architecture(self.model)
        with torch.device("meta"):
            net = self.build_network()
        return tensor_table(net.state_dict())

    def load_weights(self, paths: dict[str, str]) -> None:
        """Load the fine-tuned network from the saved files on the CPU (nothing is trained)."""
        if not self._fine_tuning():
            return super().load_weights(paths)
        import torch

        wanted = self.weight_parameters()
        if set(paths) != set(wanted):
            raise ValueError(
                f"{type(self).__name__}(backend={self.backend!r}, fine_tune={self.fine_tune!r}) "
                f"is restored from {list(wanted)}, got {sorted(paths)}"
            )
        check_is_fitted(self, "n_outputs_")
        if "model" in wanted:  # a model folder
            self.model = paths["model"]
            self._ft_load_folder(paths["model"])
        else:
            from safetensors.torch import load_file

            self.weights = paths["weights"]
            net = self.build_network()
            net.load_state_dict(load_file(paths["weights"]), strict=True)
            self.model_ = net.eval().requires_grad_(False)
        self.device = "cpu"
        self.device_ = torch.device("cpu")
        return None


def check_fine_tune(encoder) -> None:
    """Refuse ``fine_tune`` on a backend that cannot be fine-tuned, naming the one that can."""
    if encoder.fine_tune in (False, None) or encoder._fine_tuning():
        return
    names = encoder.backends.fine_tunable()
    raise ValueError(
        f"{type(encoder).__name__}(fine_tune={encoder.fine_tune!r}) fine-tunes the "
        f"pretrained backend {' or '.join(map(repr, names))}; backend={encoder.backend!r} "
        "cannot be fine-tuned (backend='cnn' trains from scratch where the encoder has "
        "it): leave fine_tune=False or choose that backend"
    )


def depth_constraint() -> list:
    """The constraint of ``trainable_blocks`` / ``trainable_layers``."""
    return list(_DEPTH)

