"""What an encoder backend is, and the registry a modality encoder resolves it through.

A *backend* is one backbone library seen from a modality encoder (``ImageEncoder``,
``AudioEncoder``, ``ScanEncoder``, ``TextEncoder``): the encoder keeps its flat
scikit-learn parameters and, for ``backend="<name>"``, asks the backend object of its
modality's :class:`Registry` for everything that depends on the library: the parameters it
reads and their constraints, whether its output is fixed or learnt from the labels (caching
and cross-fitting), whether it can be fine-tuned, the files it saves, the architectures it
may build (the allow-list a saved model is checked against), and the fitting, network
building and encoding themselves. The methods take the encoder as their first argument
(the backend holds no state: the fitted state lives on the encoder, ending in ``_``, as
scikit-learn wants), so one backend object serves every encoder of its modality.

Adding a backend is one module under ``toolkit/encoders/backends/`` and one line in its
modality's registry (``toolkit/encoders/backends/__init__.py``); the contract tests
(``tests/encoders/test_backends.py``) enumerate the registries and check it.
"""

from __future__ import annotations

import math
import re

import numpy as np

from toolkit._utils import resolve_device
from toolkit.encoders._torch import apply_weights, penultimate, save_state_dict

#: Words in a constructor keyword that names weights, files, URLs, the hub or kernels: such a
#: key, unless the backend lists it in ``inert_kwargs`` (``kernel_size`` is a shape), is
#: refused with the reason (it would make the library read or download something).
FETCHING_KEY = re.compile(
    r"weight|pretrain|url|uri|path|file|dir|download|hub|repo|kernel|checkpoint|cache|token"
    r"|backbone|load|progress|device",
    re.IGNORECASE,
)
#: Bounds on a ``model_kwargs`` value: nesting, number of values, characters of a text.
MAX_KWARGS_DEPTH = 6
MAX_KWARGS_VALUES = 10_000
MAX_KWARGS_TEXT = 1_000


class Backend:
    """One backbone library of one modality (subclass and register it).

    Class attributes
    ----------------
    name : str
        The value of the encoder's ``backend`` parameter.
    parameters : tuple of str
        The encoder's flat parameters this backend reads, beyond the shared ones
        (``batch_size``, ``device``, ``on_error``, ``progress``, ``n_jobs`` and the reading
        limits of the modality).
    constraints : dict
        scikit-learn constraints of the parameters only this backend reads (merged into the
        encoder's ``_parameter_constraints`` by the registry; a parameter declared by two
        backends must be declared alike).
    fixed : bool
        Whether the output depends only on the item, not on the rows the encoder was fitted
        on (safe to cache across fits). A fine-tuned or trained network is never fixed.
    trains : bool
        Whether the backend trains its network from scratch on the labels (``fit(X, y)``:
        a supervised encoder, cross-fitted by the estimators).
    can_fine_tune : bool
        Whether ``fine_tune=True`` applies (a pretrained network tuned on the labels).
    weight_parameters : tuple of str
        The parameters naming the pretrained files this backend loads and saves with a model:
        ``("weights",)`` for a torch state dict, ``("model",)`` for a model folder that
        describes its own network, ``()`` for none.
    fit_on_items : bool
        Whether :meth:`fit` needs the read training items (else it gets None).
    named_model : bool
        Whether ``model`` may name a model (a hub id, or None for a default model) rather
        than a local file: the cache then keys it on the files it resolves to.
    feature_prefix : str
        Prefix of the output feature names (``"{prefix}{i}"``).
    inert_kwargs : frozenset of str
        The keys of ``model_kwargs`` this backend knows to be inert: they shape the network
        its library builds and make it read or fetch nothing (``num_classes``,
        ``kernel_size``). Every other key, from a model file, a study config or the caller,
        is refused before anything is built (:meth:`check_model_kwargs`): a key such as
        torchvision's ``weights_backbone`` or MONAI's ``pretrained_url`` would download.
    offline_kwargs : dict
        Keyword arguments always passed to the library's constructor when its signature
        has them, so that its own defaults fetch nothing either (torchvision's detection
        builders download an ImageNet backbone unless ``weights_backbone=None``).
    """

    name: str = ""
    parameters: tuple = ()
    constraints: dict = {}
    fixed: bool = True
    trains: bool = False
    can_fine_tune: bool = False
    weight_parameters: tuple = ()
    named_model: bool = False
    feature_prefix: str = ""
    fit_on_items: bool = False
    inert_kwargs: frozenset = frozenset()
    offline_kwargs: dict = {}

    @property
    def has_network(self) -> bool:
        """Whether the encoder runs a torch network (batched on one device; no ``n_jobs``)."""
        return bool(self.weight_parameters) or self.trains

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def example(self, folder) -> dict:
        """Encoder parameters of a tiny instance of this backend, for the contract tests
        (``tests/encoders/test_backends.py``): any network is built at random under
        ``folder`` (nothing is downloaded), small enough to fit and encode in a second."""
        return {}

    # -- architectures (the allow-list a saved model is checked against) -------------------

    def architectures(self) -> set[str] | None:
        """Names of the architectures this backend may build from ``model`` (the library's
        public model list), or None when it builds none from a name."""
        return None

    def check_architecture(self, name) -> None:
        """Refuse an architecture name this backend's library does not list as a model (a
        model file may name it: it must not reach an arbitrary attribute of the library)."""
        allowed = self.architectures()
        if allowed is None:
            raise ValueError(f"backend {self.name!r} builds no architecture from a name")
        if not isinstance(name, str) or name not in allowed:
            raise ValueError(
                f"architecture {name!r} is not a model {self.name} lists (see its model list)"
            )

    # -- constructor keyword arguments (the allow-list a saved model is checked against) ----

    def check_model_kwargs(self, kwargs, where: str = "model_kwargs", model=None) -> dict:
        """``kwargs`` (an encoder's ``model_kwargs``) as a plain dict of keys this backend
        knows to be inert, with values that are plain data; ValueError naming the key and
        the fix otherwise. Run before any network is built: by ``fit``, by ``toolkit.load``
        (the keys come from the file) and by a study's ``validate`` and ``run``."""
        if kwargs is None:
            return {}
        if not isinstance(kwargs, dict):
            raise ValueError(f"{where} must be a dict or None, got {type(kwargs).__name__}")
        for key in kwargs:
            if not isinstance(key, str) or not key.isidentifier():
                raise ValueError(f"{where}: key {key!r} is not a keyword argument name")
            if key in self.inert_kwargs:
                continue
            if FETCHING_KEY.search(key) or key in self.offline_kwargs:
                raise ValueError(
                    f"{where}: key {key!r} would make {self.name} read weights, code or a "
                    "file from a path, URL or the hub, which the toolkit never does (nothing "
                    "is downloaded); remove it and load weights from a local path with "
                    "`weights=`"
                )
            target = f"{self.name}'s {model!r}" if model is not None else f"backend {self.name!r}"
            raise ValueError(
                f"{where} {kwargs!r:.200} do not fit {target}: key {key!r} is not one the "
                "toolkit knows to be inert (keys that only shape the network, such as "
                f"{sorted(self.inert_kwargs)[:6]}); remove it, or register a backend that "
                "declares it in inert_kwargs"
            )
        count = [0]
        for key, value in kwargs.items():
            _check_plain(value, f"{where}[{key!r}]", 0, count)
        return dict(kwargs)

    def constructor_kwargs(self, encoder, constructor, defaults: dict | None = None) -> dict:
        """The checked ``model_kwargs`` of ``encoder`` (``defaults`` when empty), with
        :attr:`offline_kwargs` added where ``constructor`` accepts them."""
        import inspect

        given = encoder.model_kwargs or dict(defaults or {})
        kwargs = self.check_model_kwargs(given, model=getattr(encoder, "model", None))
        try:
            accepted = inspect.signature(constructor).parameters
        except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
            accepted = {}
        for key, value in self.offline_kwargs.items():
            if key in accepted:
                kwargs[key] = value
        return kwargs

    # -- fitting, network and encoding ------------------------------------------------------

    def fit(self, encoder, decoded) -> None:
        """Learn the encoder's state (ending in ``_``) and set ``n_features_out_``."""
        raise NotImplementedError

    def encode(self, encoder, batch: list) -> np.ndarray:
        """(b, n_features_out_) features of a batch of read items."""
        raise NotImplementedError

    def check_item(self, encoder, item) -> None:
        """Check one read item against the fitted state (raise ``ReadError``)."""

    def finish_reads(self, encoder, items: list) -> list:
        """Batched last step of reading a chunk (see ``BaseEncoder._finish_reads``)."""
        return items

    def auto_cost(self, encoder) -> tuple[str, int] | None:
        """(budget unit, cost of one item) for ``batch_size="auto"`` on a GPU, or None."""
        return None

    def build_network(self, encoder):
        """The bare network the encoder's parameters describe, without weights."""
        names = " or ".join(repr(n) for n in encoder.backends.with_networks()) or "none"
        raise ValueError(
            f"{type(encoder).__name__}(backend={self.name!r}) has no network built from "
            f"parameters: build_network needs backend={names}"
        )

    def save_weights(self, encoder, folder) -> dict[str, str]:
        """Write the fitted network under ``folder``; ``{parameter: relative path}``."""
        raise ValueError(f"backend {self.name!r} saves no weights")

    def feature_names(self, encoder) -> list[str] | None:
        """Names of the output features, or None for ``"{feature_prefix}{i}"``."""
        return None

    # -- named models (cache keys) ---------------------------------------------------------

    def default_model(self) -> str | None:
        """The local folder ``model=None`` loads, or None where ``model`` is required."""
        return None

    def hub_candidates(self, repo_id: str) -> list[str]:
        """Hub ids a ``model`` name may resolve to, in the library's order."""
        return [repo_id]


def _check_plain(value, where: str, depth: int, count: list) -> None:
    """A ``model_kwargs`` value: None, a bool, a finite number, a short text, or lists,
    tuples and dicts (text keys) of those, bounded in depth and size."""
    count[0] += 1
    if count[0] > MAX_KWARGS_VALUES:
        raise ValueError(f"{where}: model_kwargs hold more than {MAX_KWARGS_VALUES:,} values")
    if depth > MAX_KWARGS_DEPTH:
        raise ValueError(f"{where}: nests deeper than {MAX_KWARGS_DEPTH} levels")
    if value is None or isinstance(value, bool | np.bool_):
        return
    if isinstance(value, np.integer | np.floating):
        value = value.item()  # a numpy scalar is checked as the number it holds
    if isinstance(value, int):
        if value.bit_length() > 63:
            raise ValueError(f"{where}: the integer {value:.3e} is out of range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: expected a finite number, got {value!r}")
        return
    if isinstance(value, str):
        if len(value) > MAX_KWARGS_TEXT:
            raise ValueError(
                f"{where}: a text of {len(value):,} characters (at most {MAX_KWARGS_TEXT})"
            )
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]", depth + 1, count)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: key {k!r} is not a text")
            _check_plain(v, f"{where}[{k!r}]", depth + 1, count)
        return
    raise ValueError(
        f"{where} holds a {type(value).__module__}.{type(value).__qualname__}; model_kwargs "
        "take only numbers, text, booleans, None and lists, tuples or dicts of them"
    )


def check_encoder_params(encoder, *, architecture: bool = True) -> None:
    """The checks an encoder's parameters pass before anything is built from them, wherever
    they come from (a model file at ``toolkit.load``, a study config at ``validate`` and
    ``run``, the caller at ``fit``): its architecture name is one its backend's library
    lists as a model (unless ``architecture=False``: the backend's network builder names an
    unknown one itself), and its ``model_kwargs`` keys are ones the backend knows to be
    inert. ValueError naming the parameter and the fix otherwise."""
    backends = getattr(encoder, "backends", None)
    name = getattr(encoder, "backend", None)
    if backends is None or name not in backends:
        return
    backend = backends.get(name)
    if "model_kwargs" not in backend.parameters:
        return  # a backend that builds no network from a name ignores both
    model = getattr(encoder, "model", None)
    backend.check_model_kwargs(getattr(encoder, "model_kwargs", None), model=model)
    if architecture and model is not None:
        backend.check_architecture(model)


class TorchBackbone(Backend):
    """A pretrained torch network built by name from its library, with a state dict given by
    ``weights`` (nothing is downloaded); the features are the input of its last Linear
    layer. Subclasses implement :meth:`network` and :meth:`probe`."""

    parameters = ("model", "weights", "model_kwargs", "fine_tune", "trainable_blocks")
    weight_parameters = ("weights",)
    can_fine_tune = True

    def network(self, encoder):
        """The library's network for the encoder's ``model`` / ``model_kwargs``."""
        raise NotImplementedError

    def probe(self, encoder):
        """A zero input of one item on ``encoder.device_``, to measure the feature width."""
        raise NotImplementedError

    def build_network(self, encoder):
        from toolkit.encoders._finetune import replace_head

        check_encoder_params(encoder, architecture=False)  # no key that could fetch
        net = self.network(encoder)
        if encoder._fine_tuning() and hasattr(encoder, "n_outputs_"):
            replace_head(net, encoder.n_outputs_)
        return net

    def load(self, encoder):
        """The network with the state dict of ``weights`` (refused when it does not fit)."""
        net = self.build_network(encoder)
        if encoder.weights is None:
            raise ValueError(
                f"backend={self.name!r} needs weights=<state dict file>; nothing is downloaded"
            )
        apply_weights(net, encoder.weights)
        return net

    def fine_tune_network(self, encoder, n_out: int):
        """The network with the state dict of ``weights`` (a mismatch names the architecture
        and its ``model_kwargs``) and a new head of ``n_out`` outputs, for fine-tuning."""
        from toolkit.encoders._finetune import load_pretrained, replace_head

        net = self.build_network(encoder)
        if encoder.weights is None:
            raise ValueError(
                f"backend={self.name!r} needs weights=<state dict file>; nothing is downloaded"
            )
        what = f"{self.name}'s '{encoder.model}' with model_kwargs={encoder.model_kwargs}"
        load_pretrained(net, encoder.weights, what)
        return replace_head(net, n_out)

    def fit(self, encoder, decoded) -> None:
        """Load the pretrained backbone, frozen, and probe its feature width."""
        import torch

        net = self.load(encoder)
        encoder.device_ = resolve_device(encoder.device)
        encoder.model_ = net.to(encoder.device_).eval()
        with torch.inference_mode():
            width = penultimate(encoder.model_, self.probe(encoder)).shape[1]
        encoder.n_features_out_ = int(width)

    def encode(self, encoder, batch: list) -> np.ndarray:
        import torch

        x = self.stack(encoder, batch).to(encoder.device_)
        with torch.inference_mode():
            return penultimate(encoder.model_, x).float().cpu().numpy()

    def stack(self, encoder, batch: list):
        """The read items as one input tensor."""
        import torch

        return torch.stack(batch)

    def save_weights(self, encoder, folder) -> dict[str, str]:
        from pathlib import Path

        save_state_dict(encoder.model_, Path(folder) / "weights.safetensors")
        return {"weights": "weights.safetensors"}


class Registry:
    """The backends of one modality, by name (``backend="<name>"``).

    Parameters
    ----------
    modality : str
    backends : list of Backend subclasses
        In the order they are documented; each class is instantiated once.
    """

    def __init__(self, modality: str, backends: list[type[Backend]]):
        self.modality = modality
        self._backends: dict[str, Backend] = {}
        # The set the encoders' ``backend`` constraint holds: registering updates it in place.
        self._names: set[str] = set()
        for cls in backends:
            self._add(cls)
        self.constraints()  # conflicting declarations fail at import

    def _add(self, cls: type[Backend]) -> Backend:
        backend = cls()
        if not backend.name or backend.name in self._backends:
            raise ValueError(
                f"{self.modality} backend {cls.__name__} needs a name not used by another "
                f"(got {backend.name!r}; registered: {list(self._backends)})"
            )
        self._backends[backend.name] = backend
        self._names.add(backend.name)
        return backend

    def register(self, cls: type[Backend]) -> type[Backend]:
        """Add the backend class ``cls`` from your own code (usable as a class decorator);
        the modality's encoder then accepts ``backend=cls.name`` in this process. It may use
        only the encoder's existing parameters (declared in ``cls.constraints`` as the other
        backends declare them). A model saved with it loads only in a process that has
        registered it too."""
        backend = self._add(cls)
        try:
            self.constraints()
        except ValueError:
            del self._backends[backend.name]
            self._names.discard(backend.name)
            raise
        return cls

    def unregister(self, name: str) -> None:
        """Remove the backend called ``name`` (one added with :meth:`register`)."""
        self.get(name)
        del self._backends[name]
        self._names.discard(name)

    def __iter__(self):
        return iter(self._backends.values())

    def __len__(self) -> int:
        return len(self._backends)

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name in self._backends

    def names(self) -> list[str]:
        return list(self._backends)

    def get(self, name) -> Backend:
        """The backend called ``name``; ValueError naming the registered ones otherwise."""
        if name not in self:
            raise ValueError(
                f"unknown {self.modality} backend {name!r}; choose one of {self.names()}"
            )
        return self._backends[name]

    def fine_tunable(self) -> list[str]:
        """Names of the backends ``fine_tune=True`` applies to."""
        return [b.name for b in self if b.can_fine_tune]

    def with_networks(self) -> list[str]:
        """Names of the backends that build a network from the encoder's parameters."""
        return [b.name for b in self if type(b).build_network is not Backend.build_network]

    def constraints(self) -> dict:
        """The backends' own parameter constraints, merged (and ``backend`` itself)."""
        from sklearn.utils._param_validation import StrOptions

        merged: dict = {}
        for backend in self:
            for param, rule in backend.constraints.items():
                if param in merged and list(map(str, merged[param])) != list(map(str, rule)):
                    raise ValueError(
                        f"{self.modality} backend {backend.name!r} declares parameter "
                        f"{param!r} as {rule!r}, another backend as {merged[param]!r}"
                    )
                merged[param] = rule
        merged["backend"] = [StrOptions(self._names)]
        return merged
