"""Torch helpers shared by the pretrained backends: safe weight loading, penultimate features."""

from __future__ import annotations

from pathlib import Path

from toolkit._utils import hub_offline


def load_state_dict(path) -> dict:
    """Load a state dict from ``.safetensors`` or a torch file, never unpickling code."""
    import torch

    from toolkit.io import check_path

    if isinstance(path, str) and "://" in path:
        raise ValueError(
            f"weights={path!r:.200} is a URL; weights are never downloaded: fetch the file "
            "yourself (checking its source) and pass its local path"
        )
    p = Path(path).expanduser()
    check_path(p, "weights")  # a FIFO or device would block torch.load or never end
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError) as exc:
            raise ValueError(
                f"weights file '{p}' is not a readable safetensors file ({exc}); it is corrupt "
                "or truncated: save the weights again"
            ) from exc
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"weights file '{p}' is not a plain state dict that can be loaded safely "
            f"({type(exc).__name__}: {exc}); save it with torch.save(model.state_dict(), path) "
            "or safetensors"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weights file '{p}' holds a {type(state).__name__}, not a state dict")
    return state


def apply_weights(model, path) -> None:
    """Load ``path`` into ``model``; a mismatch names the missing and unexpected keys."""
    state = load_state_dict(path)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"weights file '{path}' does not match the {type(model).__name__} architecture: "
            f"missing keys {result.missing_keys[:5]}, unexpected keys {result.unexpected_keys[:5]}"
        )


def last_linear(model):
    """The last ``nn.Linear`` module of ``model`` (its input is the penultimate feature)."""
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError(
            f"{type(model).__name__} has no Linear layer to take penultimate features from"
        )
    return linears[-1]


def penultimate(model, x):
    """Run ``model`` on ``x`` and return the input of its last Linear layer, flattened."""
    captured = []
    handle = last_linear(model).register_forward_hook(lambda mod, inp, out: captured.append(inp[0]))
    try:
        model(x)
    finally:
        handle.remove()
    feats = captured[-1]
    return feats.reshape(feats.shape[0], -1)


def save_state_dict(module, path) -> None:
    """Write ``module``'s state dict to a safetensors file (CPU copies)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    save_file(state, str(path))


def from_pretrained_checked(auto_class, location, *, strict: bool, **kwargs):
    """``auto_class.from_pretrained(location)`` offline; with ``strict``, refuse a folder
    whose weights do not fill the network its config.json describes (missing, unexpected or
    mis-shaped tensors), which transformers would otherwise initialize at random and only
    report in a log. Used when restoring a saved model, whose folder was written by
    ``save_pretrained`` from this very network."""
    kwargs = {"trust_remote_code": False, **kwargs}
    with hub_offline():
        if not strict:
            return auto_class.from_pretrained(location, local_files_only=True, **kwargs)
        model, info = auto_class.from_pretrained(
            location, local_files_only=True, output_loading_info=True, **kwargs
        )
    problems = []
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        found = sorted(str(k) for k in (info.get(key) or ()))
        if found:
            problems.append(f"{key.replace('_', ' ')} {found[:5]}")
    if problems:
        raise ValueError(
            f"the model folder '{location}' does not match the network its config.json "
            f"describes ({'; '.join(problems)}); config.json or the weights were altered"
        )
    return model
