"""Secure persistence of fitted models: skops for scikit-learn parts, safetensors for torch.

``save(model, path)`` writes a folder:

- ``model.skops``: the estimator without its torch modules, serialized with skops (no
  pickle); on load only the toolkit's own classes are trusted automatically, any other
  type must be named by the caller;
- ``fusion.safetensors``: the gated-fusion network's weights;
- ``encoders/<name>/``: pretrained encoders' models, saved with their library's own
  safetensors writer (``save_pretrained``) or as a safetensors state dict;
- ``manifest.json``: format version, toolkit and dependency versions, model class.

A model saved by another format version or toolkit minor version is refused with a
clear message.
"""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

FORMAT_VERSION = 1
_MANIFEST = "manifest.json"
_SAFE_EXTRA_TYPES = {"numpy.dtype"}


class UntrustedTypeError(ValueError):
    """The model file references types the caller did not trust."""


def _versions() -> dict:
    from toolkit._utils import package_versions

    names = (
        "multimodal-toolkit",
        "scikit-learn",
        "numpy",
        "torch",
        "skops",
        "safetensors",
        "transformers",
        "monai",
    )
    return {"python": platform.python_version(), **package_versions(names)}


def _state_dict_to_file(module, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    save_file(state, str(path))


def _export_encoder(enc, folder: Path) -> dict | None:
    """Save a pretrained encoder's model under ``folder``; return the params that load it."""
    backend = getattr(enc, "backend", None)
    if not hasattr(enc, "model_"):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    name = type(enc).__name__
    if backend == "transformers":
        enc.model_.save_pretrained(folder, safe_serialization=True)
        extractor = getattr(enc, "tokenizer_", None) or getattr(enc, "feature_extractor_", None)
        extractor.save_pretrained(folder)
        return {"model": "."}
    if backend == "sentence-transformers":
        enc.model_.save(str(folder), safe_serialization=True)
        return {"model": "."}
    if backend in ("torchvision", "torchaudio", "monai"):
        _state_dict_to_file(enc.model_, folder / "weights.safetensors")
        return {"weights": "weights.safetensors"}
    raise TypeError(f"don't know how to save the pretrained model of {name}(backend={backend!r})")


_TORCH_ATTRS = ("model_", "tokenizer_", "feature_extractor_", "device_")


def save(model, path, *, overwrite: bool = False) -> Path:
    """Save a fitted MultimodalClassifier / MultimodalRegressor to the folder ``path``.

    Parameters
    ----------
    model : fitted estimator
    path : str or path
        Folder to create. An existing folder is refused unless ``overwrite=True``.
    overwrite : bool, default=False

    Returns
    -------
    Path of the folder.
    """
    import skops.io as sio
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(model, "fusion_")
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"'{path}' exists; pass overwrite=True or choose another path")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    manifest = {
        "format": FORMAT_VERSION,
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "versions": _versions(),
        "modalities": list(model.modality_names_),
        "fusion_weights": None,
        "encoders": {},
    }
    detached = []  # (object, attribute, value) restored after dumping
    try:
        fusion = model.fusion_
        if getattr(fusion, "module_", None) is not None:
            _state_dict_to_file(fusion.module_, path / "fusion.safetensors")
            manifest["fusion_weights"] = "fusion.safetensors"
            detached.append((fusion, "module_", fusion.module_))
        if hasattr(fusion, "device_"):
            detached.append((fusion, "device_", fusion.device_))
        for name, enc in model.encoders_.items():
            params = _export_encoder(enc, path / "encoders" / name)
            if params is not None:
                manifest["encoders"][name] = {"folder": f"encoders/{name}", "params": params}
                for attr in _TORCH_ATTRS:
                    if hasattr(enc, attr):
                        detached.append((enc, attr, getattr(enc, attr)))
        for obj, attr, _ in detached:
            delattr(obj, attr)
        sio.dump(model, path / "model.skops")
    finally:
        for obj, attr, value in detached:
            setattr(obj, attr, value)
    (path / _MANIFEST).write_text(json.dumps(manifest, indent=2))
    return path


def _check_compatible(manifest: dict, path: Path) -> None:
    import toolkit

    fmt = manifest.get("format")
    if fmt != FORMAT_VERSION:
        raise ValueError(
            f"model '{path}' uses save format {fmt!r}; this toolkit reads format {FORMAT_VERSION}. "
            "Load it with the toolkit version that saved it and re-save, or refit"
        )
    saved = (manifest.get("versions") or {}).get("multimodal-toolkit")
    if saved is not None and saved.split(".")[:2] != toolkit.__version__.split(".")[:2]:
        raise ValueError(
            f"model '{path}' was saved by multimodal-toolkit {saved}; this is {toolkit.__version__} "
            "(a different minor version). Load it with the matching version, or refit"
        )


def load(path, *, trusted=None):
    """Load a model saved with :func:`save`.

    Parameters
    ----------
    path : str or path
    trusted : list of str, optional
        Extra fully-qualified type names to trust. The toolkit's own classes are trusted;
        any other type the file references (beyond scikit-learn's and numpy's, which
        skops trusts) is refused unless named here.

    Returns
    -------
    The fitted estimator, with its torch parts restored (on CPU).
    """
    import skops.io as sio

    path = Path(path)
    if not (path / _MANIFEST).is_file() or not (path / "model.skops").is_file():
        raise FileNotFoundError(
            f"'{path}' is not a saved toolkit model (no {_MANIFEST} / model.skops)"
        )
    manifest = json.loads((path / _MANIFEST).read_text())
    _check_compatible(manifest, path)
    data = (path / "model.skops").read_bytes()
    untrusted = set(sio.get_untrusted_types(data=data))
    own = {t for t in untrusted if t.startswith("toolkit.") and "." in t[len("toolkit.") :]}
    allowed = own | (_SAFE_EXTRA_TYPES & untrusted) | set(trusted or ())
    refused = sorted(untrusted - allowed)
    if refused:
        raise UntrustedTypeError(
            f"model '{path}' references types that are not trusted: {refused}. If you trust "
            "this file, pass load(path, trusted=[...]) with those names"
        )
    model = sio.loads(data, trusted=sorted(allowed))
    if manifest.get("fusion_weights"):
        import torch
        from safetensors.torch import load_file

        from toolkit.fusion._gated_module import GatedUnit

        fusion = model.fusion_
        spec = fusion.module_spec_
        module = GatedUnit(spec["dims"], spec["hidden"], spec["n_out"], spec["dropout"]).to(
            torch.float64
        )
        module.load_state_dict(load_file(str(path / manifest["fusion_weights"])))
        fusion.module_ = module.eval()
        fusion.device_ = torch.device("cpu")
    for name, entry in manifest.get("encoders", {}).items():
        enc = model.encoders_[name]
        folder = path / entry["folder"]
        for param, rel in entry["params"].items():
            setattr(enc, param, str((folder / rel).resolve()))
        enc.device = "cpu"
        enc._fit(None)
    return model
