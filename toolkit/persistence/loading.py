"""``load``: check a model folder (files, manifest, skops schema, weights, transformers
folders) before anything is built, then restore each component's torch state.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import skops.io as sio
from skops.io._protocol import PROTOCOL

from toolkit.persistence.allowlist import (
    _CODE_LOADERS,
    _DOTTED,
    _PATH_TYPES,
    _SENTENCE_MODULES,
    _check_plain_data,
    _schema_names,
    trusted_types,
)
from toolkit.persistence.files import (
    _MANIFEST,
    _MODEL,
    _ST_DTYPES,
    DEFAULT_MAX_BYTES,
    MAX_COMPRESSION_RATIO,
    MAX_SCHEMA_BYTES,
    MAX_UNPACKED_FREE,
    ModelFileError,
    NotAModelError,
    UntrustedTypeError,
    _check_compatible,
    _check_files,
    _inside,
    _read_manifest,
    _scan,
)
from toolkit.persistence.limits import check_limits, resolve_limits
from toolkit.persistence.saving import (
    _components,
    _leftovers,
    _weight_parameters,
    features_versions,
)


def _read_skops(file: Path, trusted: set[str], max_bytes: int):
    """The estimator in ``model.skops``, built only after its schema names nothing untrusted."""
    where = f"model file '{file}'"
    data = file.read_bytes()
    schema = _read_schema(data, where, max_bytes)
    names = _checked_names(schema, where, file, trusted)
    try:
        return sio.loads(data, trusted=sorted(names))
    except ImportError as exc:
        raise ModelFileError(
            f"{where} names a class whose module cannot be imported ({exc}); install or import "
            "the package that defines it (e.g. the module of a fusion you registered) first"
        ) from exc
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ModelFileError(
            f"{where} could not be read ({type(exc).__name__}: {exc}); it is corrupt: save the "
            "model again"
        ) from exc


def _read_schema(data: bytes, where: str, max_bytes: int) -> dict:
    """The skops archive's ``schema.json``, its unpacked size and members bounded first."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            total = sum(i.file_size for i in infos)
            if total > max_bytes:
                raise ModelFileError(
                    f"{where} unpacks to {total:,} bytes, above max_bytes={max_bytes:,}"
                )
            if total > max(MAX_UNPACKED_FREE, MAX_COMPRESSION_RATIO * len(data)):
                raise ModelFileError(
                    f"{where} unpacks to {total:,} bytes from {len(data):,} (more than "
                    f"{MAX_COMPRESSION_RATIO}x): refused as a decompression bomb"
                )
            odd = [i.filename for i in infos if "/" in i.filename or "\\" in i.filename]
            if odd:
                raise ModelFileError(f"{where} holds unexpected members {odd[:5]}")
            info = zf.getinfo("schema.json")
            if info.file_size > MAX_SCHEMA_BYTES:
                raise ModelFileError(
                    f"{where}: schema.json is {info.file_size:,} bytes, above the "
                    f"{MAX_SCHEMA_BYTES:,} limit"
                )
            schema = json.loads(zf.read(info).decode("utf-8"))
    except (
        zipfile.BadZipFile,
        KeyError,
        ValueError,  # JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
        RecursionError,
    ) as exc:
        raise ModelFileError(
            f"{where} is not a readable skops archive ({type(exc).__name__}: {exc}); it is "
            "corrupt or truncated: save the model again"
        ) from exc
    if not isinstance(schema, dict) or schema.get("protocol") != PROTOCOL:
        raise ModelFileError(
            f"{where} uses skops protocol {schema.get('protocol') if isinstance(schema, dict) else None!r}; "
            f"this toolkit reads protocol {PROTOCOL}"
        )
    return schema


def _checked_names(schema: dict, where: str, file: Path, trusted: set[str]) -> set[str]:
    """Every dotted name the schema references; refuses any that is not trusted."""
    allowed = trusted_types()
    refused, names = set(), set()
    for loader, name in _schema_names(schema, where):
        names.add(name)
        if name in trusted:
            continue
        if loader == "ConstructorFromReduceNode" and name in _PATH_TYPES:
            continue  # a Path rebuilt from its string parts
        if loader in _CODE_LOADERS or name not in allowed:
            refused.add(name)
    if refused:
        raise UntrustedTypeError(
            f"model '{file.parent}' references types that are not trusted: {sorted(refused)}. "
            "Nothing was loaded. If you trust this file, pass load(path, trusted=[...]) with "
            "those exact names"
        )
    return names


def _check_hf_folder(folder: Path, label: str, path: Path, max_bytes: int) -> None:
    """A transformers / sentence-transformers folder: no custom code, no attention kernel or
    quantizer fetched from the hub, no loading option, bounded model size."""
    what = f"model '{path}': {label}"
    modules = folder / "modules.json"
    if modules.is_file():
        _check_modules_json(folder, modules, what)
    cfg = _check_hf_jsons(folder, what)
    if not isinstance(cfg, dict):
        return
    if "model_type" not in cfg:
        return
    _check_hf_network(folder, what, max_bytes)


def _check_modules_json(folder: Path, modules: Path, what: str) -> None:
    """A sentence-transformers ``modules.json``: trusted module types, paths inside."""
    try:
        entries = json.loads(modules.read_text(encoding="utf-8"))
        types = {e["type"] for e in entries}
        paths = [e.get("path", "") for e in entries]
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise ModelFileError(f"{what}: modules.json is malformed ({exc!r:.200})") from exc
    odd = sorted(t for t in types if t not in _SENTENCE_MODULES)
    if odd:
        raise UntrustedTypeError(f"{what}: modules.json names untrusted modules {odd}")
    for p in paths:
        if p:
            _inside(folder, p, f"{what} modules.json")


def _check_hf_jsons(folder: Path, what: str):
    """Check every JSON file of the folder (no custom code, kernel or quantizer); the
    content of the top-level ``config.json`` (None without one)."""
    from toolkit.encoders.backends.hub import check_hf_json

    cfg = None
    for file in sorted(folder.rglob("*.json")):
        try:
            content = json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as exc:  # also an integer of over 4300 digits
            raise ModelFileError(f"{what}: '{file.name}' is not valid JSON ({exc!r:.200})") from exc
        if isinstance(content, dict) and (
            "auto_map" in content or content.get("trust_remote_code")
        ):
            asks = "auto_map" if "auto_map" in content else "trust_remote_code"
            raise UntrustedTypeError(
                f"{what}: '{file.name}' asks for custom model code ({asks}); it is not run"
            )
        try:
            check_hf_json(content, f"'{file.relative_to(folder).as_posix()}'")
        except ValueError as exc:
            raise UntrustedTypeError(f"{what}: {exc}") from exc
        if file.parent == folder and file.name == "config.json":
            cfg = content
    return cfg


def _check_hf_network(folder: Path, what: str, max_bytes: int) -> None:
    """Build the network that ``config.json`` describes on the meta device (no weights):
    no hub kernels, and its size bounded by ``max_bytes`` and by the weights stored."""
    import torch
    from transformers import AutoConfig, AutoModel

    from toolkit.encoders.backends.hub import OFFLINE_MODEL_KWARGS, check_no_hub_kernels

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf_config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
            with torch.device("meta"):
                meta = AutoModel.from_config(hf_config, **OFFLINE_MODEL_KWARGS)
    except (ValueError, KeyError, TypeError, OSError, ImportError) as exc:
        raise ModelFileError(
            f"{what}: config.json does not describe a model transformers can build "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    try:
        check_no_hub_kernels(meta)
    except ValueError as exc:
        raise UntrustedTypeError(f"{what}: {exc}") from exc
    n_bytes = sum(p.numel() * p.element_size() for p in meta.parameters())
    stored = sum(f.stat().st_size for f in folder.rglob("*.safetensors") if not f.is_symlink())
    if n_bytes > max_bytes or n_bytes > 2 * stored + (1 << 20):
        raise ModelFileError(
            f"{what}: config.json describes a network of {n_bytes:,} bytes, but the folder "
            f"holds {stored:,} bytes of weights (limit max_bytes={max_bytes:,})"
        )


def _restore_components(model, path: Path, manifest: dict, max_bytes: int) -> None:
    """Check each component's saved files, then let it load them (``load_weights``); every
    encoder must come out fitted, so nothing is read from elsewhere at predict time."""
    encoders = manifest.get("encoders") or {}
    if not isinstance(encoders, dict):
        raise ModelFileError(f"model '{path}': manifest 'encoders' is malformed")
    unknown = sorted(set(encoders) - set(model.encoders_))
    if unknown:
        raise ModelFileError(f"model '{path}': manifest names unknown modalities {unknown}")
    for label, part, name in _components(model):
        if name is not None:
            _check_registered(part, label, path)
        entry = manifest.get("fusion") if name is None else encoders.get(name)
        wanted = _weight_parameters(part)
        if entry is None:
            if wanted:
                raise ModelFileError(
                    f"model '{path}': {label} uses a pretrained network that the folder "
                    "does not hold"
                )
            if name is not None and not hasattr(part, "n_features_out_"):
                raise ModelFileError(f"model '{path}': {label} is not fitted")
            continue
        if not wanted:
            raise ModelFileError(
                f"model '{path}': manifest gives saved files to {label}, which loads none"
            )
        _restore_one(part, label, entry, path, manifest, max_bytes)


def _check_registered(part, label: str, path: Path) -> None:
    """The encoder's backend is registered in this process."""
    backends = getattr(part, "backends", None)
    if backends is not None and part.backend not in backends:
        raise ModelFileError(
            f"model '{path}': {label} was saved with {backends.modality} backend "
            f"{part.backend!r}, which this process has not registered (registered: "
            f"{backends.names()}); register it (toolkit.encoders.backends."
            f"{backends.modality.upper()}_BACKENDS.register) before toolkit.load"
        )


def _restore_one(part, label, entry, path: Path, manifest: dict, max_bytes: int) -> None:
    if not isinstance(entry, dict) or not isinstance(entry.get("params"), dict):
        raise ModelFileError(f"model '{path}': manifest entry of {label} is malformed")
    folder = _inside(path, entry.get("folder"), f"model '{path}' {label} folder")
    params, wanted = entry["params"], _weight_parameters(part)
    if set(params) != set(wanted):
        raise ModelFileError(
            f"model '{path}': manifest sets parameters {sorted(params)} of {label}, which is "
            f"restored from {sorted(wanted)} only"
        )
    targets = {p: _inside(folder, rel, f"model '{path}' {label} {p}") for p, rel in params.items()}
    for target in targets.values():
        if target.is_dir():
            _check_hf_folder(target, label, path, max_bytes)
        else:
            _check_weights(part, label, path, manifest, target, max_bytes)
    try:
        part.load_weights({p: str(t) for p, t in targets.items()})
    except Exception as exc:  # noqa: BLE001 - any library's loading error, named
        # 1000 characters: the loader's own message names the folder (twice) and the cause
        raise ModelFileError(
            f"model '{path}': the saved network of {label} could not be loaded "
            f"({type(exc).__name__}: {str(exc)[:1000]}); the folder is damaged: save it again"
        ) from exc


def _check_weights(part, label, path: Path, manifest: dict, weights: Path, max_bytes: int):
    """Compare a weights file's header (already checked against the manifest) with the
    network the component describes, built on the meta device, before building it."""
    rel = weights.relative_to(path.resolve()).as_posix()
    table = manifest["tensors"].get(rel)
    if table is None:
        raise ModelFileError(f"model '{path}': weights '{rel}' are not in the manifest")
    try:
        expected = part.expected_weights()
    except ValueError as exc:
        raise UntrustedTypeError(f"model '{path}': {label}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any failure to describe the network is refused
        raise ModelFileError(
            f"model '{path}': {label} describes a network that cannot be built "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
    if expected is None:
        return
    n_bytes = 0
    for info in expected.values():
        numel = 1
        for d in info["shape"]:
            numel *= d
        n_bytes += numel * _ST_DTYPES.get(info["dtype"], 8)
    if n_bytes > max_bytes:
        raise ModelFileError(
            f"model '{path}': {label} describes a network of {n_bytes:,} bytes, above "
            f"max_bytes={max_bytes:,}"
        )
    if expected != table:
        diff = sorted(k for k in set(expected) | set(table) if expected.get(k) != table.get(k))
        raise ModelFileError(
            f"model '{path}': weights '{rel}' do not fit {label}'s network ({len(diff)} "
            f"tensors differ in name, dtype or shape, e.g. {diff[:3]})"
        )


def _locate(path: Path) -> Path:
    """``path``, or the previous model an interrupted save left beside it (with a warning)."""
    if path.exists() or path.is_symlink():
        return path
    for old in _leftovers(path, "replaced"):
        if (old / _MANIFEST).is_file():
            warnings.warn(
                f"'{path}' is missing: a save into it was interrupted; loading the previous "
                f"model from '{old}'. Rename that folder to '{path}' to keep it",
                RuntimeWarning,
                stacklevel=3,
            )
            return old
    raise FileNotFoundError(f"'{path}' is not a saved toolkit model (it does not exist)")


def load(
    path,
    *,
    trusted=None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    verify: bool = True,
    limits: dict | None = None,
):
    """Load a model saved with :func:`save`, running no code the file chose and reaching
    no network (whatever the file or the environment says).

    Parameters
    ----------
    path : str or path
    trusted : list of str, optional
        Extra exact dotted names (types or functions) to trust. Without it, only
        :func:`trusted_types` are constructed; anything else is refused with
        :class:`UntrustedTypeError` naming it, before anything is built.
    max_bytes : int, default=DEFAULT_MAX_BYTES (8 GiB)
        Largest folder, unpacked ``model.skops`` and described network accepted.
    verify : bool, default=True
        Check every file's SHA-256 against the manifest (reads each file once more; about
        1 s per GB). Sizes, the file list and every weight header are checked regardless.
    limits : dict, optional
        This caller's bounds on the sizes the file's encoders carry, updating
        :data:`~toolkit.persistence.limits.LOAD_LIMITS` (``max_resampled_voxels``,
        ``max_input_size``, ``max_batch_size``, ``max_n_jobs``, ...): a size above its limit
        is refused naming the attribute (the file's own ``max_*`` settings are sizes too, so
        a file cannot raise a limit); a file's ``n_jobs`` is capped at ``max_n_jobs``
        (default: the CPU count).

    Returns
    -------
    The fitted estimator, with its torch parts restored (on CPU).

    Raises
    ------
    ModelFileError
        The folder is corrupt, inconsistent or unsafe (:class:`UntrustedTypeError`: it names
        a type, an architecture, a constructor keyword or a setting that could run code or
        reach the network), or it needs more than the limits allow. The one-line message
        names the file and what to do; a low-level error while reading (``MemoryError``, an
        integer of over 4300 digits, a ``TypeError``) is given the same form.
    """
    if trusted is not None:
        if isinstance(trusted, str) or not all(
            isinstance(t, str) and _DOTTED.match(t) for t in trusted
        ):
            raise TypeError(
                f"trusted must be a list of exact dotted names such as "
                f"'mypackage.module.Class', got {trusted!r}"
            )
    limits = resolve_limits(limits)
    path = _locate(Path(path))
    if path.is_symlink():
        raise ModelFileError(f"'{path}' is a symbolic link; load the real folder it points to")
    if not path.is_dir():
        raise FileNotFoundError(f"'{path}' is not a saved toolkit model (not a folder)")
    try:
        return _load(path, trusted, max_bytes, verify, limits)
    except (ModelFileError, NotAModelError):
        raise
    except Exception as exc:  # noqa: BLE001 - MemoryError, OSError, TypeError...: one line
        raise _plain_error(exc, path) from exc


def _plain_error(exc: BaseException, path: Path) -> Exception:
    """A one-line error for a low-level exception met while loading ``path``, naming the
    file and what to do (the original is chained)."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    kind = type(exc).__name__
    if isinstance(exc, MemoryError):
        return ModelFileError(
            f"model '{path}' needs more memory than this machine has while loading "
            f"({kind}{': ' + first if first else ''}); it was saved from a larger model than "
            "this machine can hold, or crafted: load it on a larger machine, or refit"
        )
    if isinstance(exc, OSError):
        where = f" '{exc.filename}'" if getattr(exc, "filename", None) else ""
        reason = exc.strerror or first or kind
        message = (
            f"model '{path}' could not be read: {reason}{where} ({kind}); check that the "
            "folder and its files are readable (permissions, disk, file names), then load "
            "it again"
        )
        return type(exc)(message) if exc.errno is None else type(exc)(exc.errno, message)
    if isinstance(exc, ValueError) and "digits" in first and "limit" in first:
        return ModelFileError(
            f"model '{path}' holds a number of more digits than Python reads ({first}); "
            "the file is corrupt or crafted: save the model again"
        )
    return ModelFileError(
        f"model '{path}' could not be loaded ({kind}: {first}); the file is corrupt, "
        "crafted or from another version: save the model again with this toolkit"
    )


def _load(path: Path, trusted, max_bytes: int, verify: bool, limits: dict):
    """:func:`load` after the arguments are checked (its errors are made one-line there)."""
    files = _scan(path, f"model '{path}'", max_bytes)
    manifest = _read_manifest(path, files)
    _check_compatible(manifest, path)
    _check_files(path, manifest, files, verify)
    if _MODEL not in files:
        raise NotAModelError(f"'{path}' is not a saved toolkit model (no {_MODEL})")
    model = _read_skops(path / _MODEL, set(trusted or ()), max_bytes)
    cls = f"{type(model).__module__}.{type(model).__qualname__}"
    if cls != manifest["class"]:
        raise ModelFileError(f"model '{path}': manifest says {manifest['class']}, file holds {cls}")
    if list(getattr(model, "modality_names_", [])) != manifest.get("modalities"):
        raise ModelFileError(f"model '{path}': the manifest's modalities do not match the model")
    _check_plain_data(model, path)
    _check_features_versions(model, manifest, path)
    _check_parameters(model, path)
    check_limits(model, path, limits)
    _restore_components(model, path, manifest, max_bytes)
    return model


def _check_features_versions(model, manifest: dict, path: Path) -> None:
    """Refuse a model whose encoder computed another ``features_version`` than its class
    computes now (its predictions would come from different features); warn where the
    manifest predates the record (saved before encoders recorded it)."""
    saved = manifest.get("features_versions")
    now = features_versions(model)
    if saved is None:
        if now:
            named = ", ".join(f"{v['class']} features version {v['version']}" for v in now.values())
            warnings.warn(
                f"model '{path}' was saved before encoders recorded their features versions; "
                f"this toolkit computes {named}. A model fitted on an older version predicts "
                "from features it was not fitted on: refit it if it predates them",
                UserWarning,
                stacklevel=4,
            )
        return
    if not isinstance(saved, dict):
        raise ModelFileError(f"model '{path}': manifest 'features_versions' is malformed")
    for name, current in now.items():
        was = saved.get(name)
        version = was.get("version") if isinstance(was, dict) else None
        if version != current["version"]:
            raise ModelFileError(
                f"model '{path}': its '{name}' encoder ({current['class']}) was fitted on "
                f"features version {version!r}; this toolkit computes version "
                f"{current['version']}, so its predictions would come from other features. "
                "Refit the model with this toolkit (or load it with the version that saved it)"
            )


def _check_parameters(model, path: Path) -> None:
    """Each encoder's and the fusion's parameters pass their own constraints (as ``fit``
    checks them), and each encoder's architecture and constructor keywords pass its
    backend's allow-lists, before anything is built from them."""
    from toolkit.encoders.backends.base import check_encoder_params

    for label, part, name in _components(model):
        if name is not None:
            _check_registered(part, label, path)
        check = getattr(part, "_validate_params", None)
        try:
            if check is not None:
                check()
        except (ValueError, TypeError) as exc:
            message = str(exc).replace("\n", " ")[:500]
            raise ModelFileError(
                f"model '{path}': {label} has a parameter its class refuses ({message}); the "
                "file is corrupt or crafted: save the model again"
            ) from exc
        if name is None:
            continue
        try:
            check_encoder_params(part)
        except ValueError as exc:
            raise UntrustedTypeError(f"model '{path}': {label}: {exc}") from exc
