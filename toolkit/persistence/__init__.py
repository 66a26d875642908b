"""Secure persistence of fitted models: skops for scikit-learn parts, safetensors for torch.

``save(model, path)`` writes a folder:

- ``model.skops``: the estimator without its torch modules, serialized with skops (no
  pickle);
- ``fusion.safetensors``: the gated-fusion network's weights;
- ``encoders/<name>/``: pretrained encoders' models, saved with their library's own
  safetensors writer (``save_pretrained``) or as a safetensors state dict;
- ``manifest.json`` (written last): format version, toolkit and dependency versions, model
  class, and a table of every file (size, SHA-256) and of every weight tensor (dtype, shape).

Threat model (``docs/reliability.md``): a model folder may come from someone else. Loading it
runs no code it did not choose:

- only types on an explicit allow-list of exact dotted names are constructed
  (:data:`TRUSTED_TYPES`: the toolkit's own classes that ``save`` writes, Python's builtin
  containers, numpy dtypes, the scikit-learn classes listed by skops); a name reached through
  an attribute of another module (``toolkit.cli.os``) is not on it. Functions, methods,
  ``functools.partial`` and reduce-constructors are refused unless the caller names them in
  ``trusted=``;
- the folder may hold only regular files with data suffixes (no symlinks, FIFOs, devices,
  ``.bin``/``.pt``/``.py`` files), exactly the files the manifest lists, each with its size and
  hash; every path the manifest names stays inside the folder;
- every safetensors header is parsed and bounded before any tensor is decoded, and each tensor's
  dtype and shape must match the manifest (and, for the gated network, the architecture the
  model describes);
- sizes are bounded before decoding: ``max_bytes`` (default :data:`DEFAULT_MAX_BYTES`) for the
  folder, :data:`MAX_MANIFEST_BYTES` for the manifest, :data:`MAX_SCHEMA_BYTES` and
  :data:`MAX_SCHEMA_DEPTH` for the skops schema.

Saving never destroys what it did not write: ``overwrite=True`` replaces only a folder that
carries a toolkit manifest and no file the manifest does not list. The new model is written to
a sibling temporary folder, flushed to disk, then swapped into place (an atomic exchange where
the file system supports it, else two renames), so a process killed at any point leaves the
old model or the new one loadable at ``path``; should it die between the two renames,
:func:`load` finds the previous model beside ``path`` and loads it with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import stat
import struct
import uuid
import warnings
import zipfile
from pathlib import Path, PosixPath, PurePosixPath, PureWindowsPath, WindowsPath

FORMAT_VERSION = 2
_MANIFEST = "manifest.json"
_MODEL = "model.skops"

#: Default bound on a model folder's total size, and on the bytes of tensors it describes.
DEFAULT_MAX_BYTES = 8 * 1024**3
#: Largest ``manifest.json`` read.
MAX_MANIFEST_BYTES = 1024**2
#: Largest skops ``schema.json`` read, and deepest nesting walked.
MAX_SCHEMA_BYTES = 64 * 1024**2
MAX_SCHEMA_DEPTH = 200
#: ``model.skops`` may unpack to at most this many times its size (beyond this many bytes).
MAX_COMPRESSION_RATIO = 100
MAX_UNPACKED_FREE = 64 * 1024**2
#: Largest safetensors header read.
MAX_SAFETENSORS_HEADER = 16 * 1024**2
#: File suffixes a model folder may hold (data only: no pickles, no code).
SAFE_SUFFIXES = frozenset({".json", ".safetensors", ".skops", ".txt", ".model", ".md"})

_ESTIMATOR_TYPES = frozenset(
    {"toolkit.estimators.MultimodalClassifier", "toolkit.estimators.MultimodalRegressor"}
)


def toolkit_types() -> frozenset[str]:
    """The toolkit's own classes that ``save`` writes into ``model.skops``, by exact name:
    the estimators, the block scaler, and every class in the fusion and encoder registries
    (so a strategy registered with one line is also loadable)."""
    from toolkit.encoders import ENCODERS
    from toolkit.fusion import FUSIONS
    from toolkit.fusion.base import BlockScaler

    classes = [BlockScaler, *FUSIONS.values(), *ENCODERS.values()]
    return _ESTIMATOR_TYPES | frozenset(f"{c.__module__}.{c.__qualname__}" for c in classes)


_BUILTIN_TYPES = frozenset(
    f"builtins.{name}"
    for name in (
        "bool",
        "int",
        "float",
        "complex",
        "str",
        "bytes",
        "bytearray",
        "list",
        "tuple",
        "dict",
        "set",
        "frozenset",
        "slice",
    )
) | {"collections.OrderedDict", "collections.defaultdict"}
_NUMPY_TYPES = frozenset({"numpy.ndarray", "numpy.dtype", "numpy.random.RandomState"})
#: Paths (e.g. an encoder's ``memory`` or file parameter given as a Path).
_PATH_TYPES = frozenset(
    f"{cls.__module__}.{cls.__qualname__}"
    for cls in (PurePosixPath, PureWindowsPath, PosixPath, WindowsPath)
)
#: Scikit-learn classes the toolkit's components hold (the rest come from skops's list).
_SKLEARN_TYPES = frozenset(
    {
        "sklearn.compose._column_transformer.ColumnTransformer",
        "sklearn.decomposition._truncated_svd.TruncatedSVD",
        "sklearn.feature_extraction.text.TfidfTransformer",
        "sklearn.feature_extraction.text.TfidfVectorizer",
        "sklearn.impute._base.MissingIndicator",
        "sklearn.impute._base.SimpleImputer",
        "sklearn.linear_model._base.LinearRegression",
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.linear_model._ridge.Ridge",
        "sklearn.pipeline.FeatureUnion",
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.preprocessing._encoders.OneHotEncoder",
        "sklearn.preprocessing._label.LabelEncoder",
    }
)

# skops node kinds that hold data, and those that call or fetch code (only with trusted=).
_DATA_LOADERS = frozenset(
    {
        "BytearrayNode",
        "BytesNode",
        "CachedNode",
        "DTypeNode",
        "DefaultDictNode",
        "DictNode",
        "JsonNode",
        "ListNode",
        "LossNode",
        "MaskedArrayNode",
        "NdArrayNode",
        "ObjectNode",
        "RandomGeneratorNode",
        "RandomStateNode",
        "SetNode",
        "SliceNode",
        "SparseMatrixNode",
        "TreeNode",
        "TupleNode",
        "TypeNode",
    }
)
_CODE_LOADERS = frozenset(
    {"FunctionNode", "MethodNode", "PartialNode", "OperatorFuncNode", "ConstructorFromReduceNode"}
)
_PLAIN_NAME = re.compile(r"^(?!\.\.?\Z)[\w.-]{1,100}\Z")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+\Z")
#: sentence-transformers module classes a saved sentence encoder may name in modules.json.
_SENTENCE_MODULES = frozenset(
    {
        f"sentence_transformers.models.{n}"
        for n in ("Transformer", "Pooling", "Normalize", "Dense", "Dropout", "LayerNorm")
    }
    | {
        "sentence_transformers.base.modules.transformer.Transformer",
        "sentence_transformers.base.modules.normalize.Normalize",
        "sentence_transformers.base.modules.dense.Dense",
        "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
        "sentence_transformers.sentence_transformer.modules.dropout.Dropout",
        "sentence_transformers.sentence_transformer.modules.layer_norm.LayerNorm",
    }
)
# safetensors dtype codes -> bytes per element
_ST_DTYPES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


class ModelFileError(ValueError):
    """A model folder is corrupt, inconsistent with its manifest, or unsafe to read."""


class UntrustedTypeError(ModelFileError):
    """The model file references types or functions the caller did not trust."""


def trusted_types() -> frozenset[str]:
    """Every dotted name :func:`load` constructs without being told (exact names, no prefix)."""
    from skops.io import _trusted_types as skt

    return (
        toolkit_types()
        | _BUILTIN_TYPES
        | _NUMPY_TYPES
        | _PATH_TYPES
        | frozenset(skt.NUMPY_DTYPE_TYPE_NAMES)
        | frozenset(skt.NUMPY_RANDOM_BIT_GENERATOR_TYPE_NAMES)
        | _SKLEARN_TYPES
        | frozenset(skt.SKLEARN_ESTIMATOR_TYPE_NAMES)
        | frozenset(skt.SKLEARN_INTERNAL_TYPE_NAMES)
    )


def _step(name: str) -> None:
    """A named point in ``save`` (tests stop a child process here to check atomicity)."""


# -- small file helpers ----------------------------------------------------------------


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


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` (and itself) to disk."""
    for root, dirs, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                os.fsync(fh.fileno())
        for name in dirs:
            _fsync_dir(Path(root) / name)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _scan(folder: Path, what: str, max_bytes: int) -> dict[str, int]:
    """Relative POSIX path -> size of every regular file under ``folder``.

    Refuses symlinks, FIFOs, devices and sockets (none is opened), names outside
    :data:`SAFE_SUFFIXES`, nesting deeper than 8 folders and a total over ``max_bytes``.
    """
    found: dict[str, int] = {}
    stack = [(folder, 0)]
    while stack:
        current, depth = stack.pop()
        if depth > 8:
            raise ModelFileError(f"{what}: folders nest deeper than 8 levels at '{current}'")
        with os.scandir(current) as entries:
            for entry in entries:
                full = Path(entry.path)
                rel = full.relative_to(folder).as_posix()
                if entry.is_symlink():
                    raise ModelFileError(
                        f"{what} holds a symbolic link '{rel}'; a model folder may hold only "
                        "regular files: copy the real files in, or save the model again"
                    )
                if entry.is_dir(follow_symlinks=False):
                    stack.append((full, depth + 1))
                    continue
                mode = entry.stat(follow_symlinks=False).st_mode
                if not stat.S_ISREG(mode):
                    raise ModelFileError(
                        f"{what} holds '{rel}', which is not a regular file (a FIFO, device or "
                        "socket); remove it"
                    )
                found[rel] = entry.stat(follow_symlinks=False).st_size
    total = sum(found.values())
    if total > max_bytes:
        raise ModelFileError(
            f"{what} holds {total:,} bytes, above the max_bytes={max_bytes:,} limit; pass a "
            "larger max_bytes= if you trust it"
        )
    return found


def _inside(root: Path, rel, what: str) -> Path:
    """``root / rel`` for a relative path that stays inside ``root``; else ModelFileError."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise ModelFileError(f"{what}: path {rel!r} is not a relative POSIX path")
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts or rel.startswith("~"):
        raise ModelFileError(f"{what}: path {rel!r} leaves the model folder")
    target = (root / rel).resolve()
    if not target.is_relative_to(root.resolve()):
        raise ModelFileError(f"{what}: path {rel!r} leaves the model folder")
    return target


def _safetensors_header(file: Path, size: int | None = None) -> dict[str, dict]:
    """Parse and bound-check a safetensors header without decoding any tensor.

    Returns ``{name: {"dtype": str, "shape": [int, ...]}}``. Checks that the header is
    JSON of bounded size, every dtype is known, each tensor's byte range matches its dtype and
    shape, ranges are contiguous and the data section ends exactly at the end of the file.
    """
    size = file.stat().st_size if size is None else size
    where = f"weights file '{file}'"
    with open(file, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelFileError(f"{where} is truncated (no safetensors header); save it again")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_SAFETENSORS_HEADER or 8 + n > size:
            raise ModelFileError(
                f"{where} declares a {n:,}-byte header in a {size:,}-byte file; it is corrupt"
            )
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelFileError(
            f"{where} has an unreadable header ({type(exc).__name__}); it is corrupt"
        ) from exc
    if not isinstance(header, dict):
        raise ModelFileError(f"{where} has a header that is not a JSON object; it is corrupt")
    header.pop("__metadata__", None)
    table, spans = {}, []
    for name, info in header.items():
        try:
            dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
            ok = (
                dtype in _ST_DTYPES
                and all(isinstance(d, int) and d >= 0 for d in shape)
                and isinstance(start, int)
                and isinstance(end, int)
            )
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ModelFileError(f"{where}: tensor {name!r} has a malformed header entry")
        numel = 1
        for d in shape:
            numel *= d
        if end - start != numel * _ST_DTYPES[dtype]:
            raise ModelFileError(
                f"{where}: tensor {name!r} ({dtype}, shape {shape}) spans {end - start} bytes; "
                "it is corrupt"
            )
        table[name] = {"dtype": dtype, "shape": list(shape)}
        spans.append((start, end))
    position = 0
    for start, end in sorted(spans):
        if start != position:
            raise ModelFileError(f"{where}: tensor data overlaps or has gaps; it is corrupt")
        position = end
    if 8 + n + position != size:
        raise ModelFileError(
            f"{where}: header describes {position:,} bytes of tensors but the file holds "
            f"{size - 8 - n:,}; it is truncated or corrupt"
        )
    return table


# -- save -------------------------------------------------------------------------------


def _components(model) -> list[tuple[str, object, str | None]]:
    """(label, component, modality name or None for the fusion) of every part that may hold
    torch state: the fusion (saved at the folder's top), then each encoder (under
    ``encoders/<name>/``)."""
    parts = [("the fusion", model.fusion_, None)]
    for name, enc in model.encoders_.items():
        parts.append((f"encoder '{name}'", enc, name))
    return parts


def _weight_parameters(component) -> tuple[str, ...]:
    """The persistence protocol's ``weight_parameters()`` (none for components without it)."""
    method = getattr(component, "weight_parameters", None)
    return tuple(method()) if method is not None else ()


def _write(model, folder: Path) -> None:
    """Write the model's files into the empty ``folder``, the manifest last.

    Each component that holds torch state writes it itself (``save_weights``) and names the
    attributes to leave out of ``model.skops`` (``torch_attributes``): this module knows no
    component's internals.
    """
    import skops.io as sio

    manifest = {
        "format": FORMAT_VERSION,
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "versions": _versions(),
        "modalities": list(model.modality_names_),
        "fusion": None,
        "encoders": {},
    }
    # (object, attribute, value, delete?) restored after dumping; a cache belongs to the
    # session that fitted the model, not to the model
    detached = [(model, "memory", model.memory, False)]
    try:
        for _, part, name in _components(model):
            if not _weight_parameters(part):
                continue
            if name is not None and not _PLAIN_NAME.match(str(name)):
                raise ValueError(
                    f"modality name {name!r} cannot name a folder of the saved model; use "
                    "letters, digits, '.', '_' and '-' only"
                )
            rel = "." if name is None else f"encoders/{name}"
            params = part.save_weights(folder / rel)
            if params is None:
                continue
            entry = {"folder": rel, "params": params}
            if name is None:
                manifest["fusion"] = entry
            else:
                manifest["encoders"][name] = entry
            # load points these at the saved copies: keep no location outside the folder
            detached += [(part, p, getattr(part, p), False) for p in params if hasattr(part, p)]
            for dotted in getattr(part, "torch_attributes", ()):
                # "fusion_.module_": an attribute of a component the part holds (a wrapper
                # such as AutoFusion names its chosen model's torch attributes this way)
                *path, attr = dotted.split(".")
                owner = part
                for step in path:
                    owner = getattr(owner, step, None)
                if owner is not None and hasattr(owner, attr):
                    detached.append((owner, attr, getattr(owner, attr), True))
        for obj, attr, _, delete in detached:
            if delete:
                delattr(obj, attr)
            else:
                setattr(obj, attr, None)
        sio.dump(model, folder / _MODEL)
    finally:
        for obj, attr, value, _ in detached:
            setattr(obj, attr, value)
    files = _scan(folder, f"the new model folder '{folder}'", max_bytes=1 << 62)
    unsafe = sorted(rel for rel in files if Path(rel).suffix not in SAFE_SUFFIXES)
    if unsafe:
        raise ModelFileError(
            f"saving wrote files a model folder may not hold: {unsafe}; only "
            f"{sorted(SAFE_SUFFIXES)} files are loadable safely"
        )
    manifest["files"] = {
        rel: {"size": size, "sha256": _sha256(folder / rel)} for rel, size in sorted(files.items())
    }
    manifest["tensors"] = {
        rel: _safetensors_header(folder / rel)
        for rel in sorted(files)
        if rel.endswith(".safetensors")
    }
    (folder / _MANIFEST).write_text(json.dumps(manifest, indent=2))


def _check_replaceable(path: Path) -> None:
    """Refuse to overwrite anything but a folder that holds a toolkit model and nothing else."""
    why = None
    if path.is_symlink():
        why = "it is a symbolic link"
    elif not path.is_dir():
        why = "it is not a folder"
    elif not (path / _MANIFEST).is_file() or (path / _MANIFEST).is_symlink():
        why = f"it has no toolkit {_MANIFEST}"
    if why is None:
        try:
            files = _scan(path, f"'{path}'", max_bytes=1 << 62)
            manifest = _read_manifest(path, files)
        except ModelFileError as exc:
            why = f"it does not look like a saved toolkit model ({exc})"
        else:
            if not isinstance(manifest.get("files"), dict):
                why = (
                    "its manifest lists no files (an older save format), so the toolkit "
                    "cannot tell its own files from others; delete the folder yourself"
                )
            else:
                foreign = sorted(set(files) - set(manifest["files"]) - {_MANIFEST})
                if foreign:
                    why = f"it holds files the toolkit did not write: {foreign[:10]}"
    if why is not None:
        raise FileExistsError(
            f"refusing to overwrite '{path}': {why}. overwrite=True replaces only a folder "
            "written by toolkit.save; move those files out or choose another path"
        )


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two folders (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    res = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if res == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the file system cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return True
    return True


def _host_tag() -> str:
    """A short, file-name-safe tag of this machine (temporary folders of other hosts are
    never touched: their processes cannot be checked from here)."""
    return hashlib.sha256(platform.node().encode()).hexdigest()[:12]


def _temp_name(path: Path, kind: str) -> Path:
    return path.parent / f".{path.name}.{kind}-{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex}"


def _leftovers(path: Path, kind: str) -> list[Path]:
    """Folders an interrupted save of ``path`` on this machine left, by a process now dead,
    holding nothing but the data files a model folder may hold; newest first."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.{kind}-{_host_tag()}-(\d+)-[0-9a-f]{{32}}\Z")
    if not path.parent.is_dir():
        return []
    found = []
    for entry in path.parent.iterdir():
        m = pattern.match(entry.name)
        if not m or entry.is_symlink() or not entry.is_dir() or _pid_alive(int(m.group(1))):
            continue
        try:
            files = _scan(entry, f"'{entry}'", max_bytes=1 << 62)
        except (ModelFileError, OSError):
            continue
        if all(Path(rel).suffix in SAFE_SUFFIXES for rel in files):
            found.append((entry.stat().st_mtime, entry))
    return [p for _, p in sorted(found, reverse=True)]


def _remove_stale(path: Path) -> None:
    """Remove what interrupted saves of ``path`` on this machine left (see _leftovers)."""
    for kind in ("saving", "replaced"):
        for folder in _leftovers(path, kind):
            shutil.rmtree(folder, ignore_errors=True)


def save(model, path, *, overwrite: bool = False) -> Path:
    """Save a fitted MultimodalClassifier / MultimodalRegressor to the folder ``path``.

    Parameters
    ----------
    model : fitted estimator
    path : str or path
        Folder to create. An existing folder is refused unless ``overwrite=True``.
    overwrite : bool, default=False
        Replace an existing folder, but only one written by ``toolkit.save`` that holds no
        other file; anything else is refused with the reason.

    Returns
    -------
    Path of the folder.

    Notes
    -----
    The write is atomic: the files go to a sibling temporary folder, are flushed to disk, and
    the folder is then swapped into place; a crash leaves the old model or the new one.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(model, "fusion_")
    cls = f"{type(model).__module__}.{type(model).__qualname__}"
    if cls not in _ESTIMATOR_TYPES:
        raise TypeError(f"toolkit.save saves MultimodalClassifier / MultimodalRegressor, not {cls}")
    path = Path(os.path.abspath(os.fspath(path)))
    if path.parent == path or Path.cwd().is_relative_to(path):
        raise ValueError(
            f"cannot save into '{path}': it is the working folder or one of its parents; "
            "choose a new folder"
        )
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(f"'{path}' exists; pass overwrite=True or choose another path")
        _check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path, "saving")
    tmp.mkdir()
    try:
        _step("folder")
        _write(model, tmp)
        _step("written")
        _fsync_tree(tmp)
        _step("flushed")
        _into_place(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _remove_stale(path)  # only once the new model is in place
    return path


def _into_place(tmp: Path, path: Path) -> None:
    if not path.exists():
        os.rename(tmp, path)
        _fsync_dir(path.parent)
        _step("renamed")
        return
    if _exchange(tmp, path):
        _fsync_dir(path.parent)
        _step("exchanged")
        shutil.rmtree(tmp)  # now the previous model
        return
    old = _temp_name(path, "replaced")
    os.rename(path, old)
    _step("moved-old")
    os.rename(tmp, path)
    _fsync_dir(path.parent)
    _step("moved-new")
    shutil.rmtree(old)


# -- load -------------------------------------------------------------------------------


def _read_manifest(path: Path, files: dict[str, int]) -> dict:
    if _MANIFEST not in files:
        raise FileNotFoundError(f"'{path}' is not a saved toolkit model (no {_MANIFEST})")
    where = f"manifest '{path / _MANIFEST}'"
    if files[_MANIFEST] > MAX_MANIFEST_BYTES:
        raise ModelFileError(
            f"{where} is {files[_MANIFEST]:,} bytes, above the {MAX_MANIFEST_BYTES:,} limit"
        )
    try:
        manifest = json.loads((path / _MANIFEST).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelFileError(
            f"{where} is not valid JSON ({type(exc).__name__}: {str(exc)[:200]}); the folder "
            "is damaged: save the model again"
        ) from exc
    if not isinstance(manifest, dict):
        raise ModelFileError(f"{where} is not a JSON object; the folder is damaged")
    if not isinstance(manifest.get("format"), int) or manifest.get("class") not in _ESTIMATOR_TYPES:
        raise ModelFileError(
            f"{where} does not describe a toolkit model (format {manifest.get('format')!r}, "
            f"class {manifest.get('class')!r})"
        )
    return manifest


def _check_compatible(manifest: dict, path: Path) -> None:
    import toolkit

    fmt = manifest.get("format")
    if fmt != FORMAT_VERSION:
        raise ModelFileError(
            f"model '{path}' uses save format {fmt!r}; this toolkit reads format {FORMAT_VERSION}. "
            "Load it with the toolkit version that saved it and re-save, or refit"
        )
    saved = (manifest.get("versions") or {}).get("multimodal-toolkit")
    if not isinstance(saved, str | None):
        raise ModelFileError(f"model '{path}': manifest 'versions' is malformed")
    if saved is not None and saved.split(".")[:2] != toolkit.__version__.split(".")[:2]:
        raise ModelFileError(
            f"model '{path}' was saved by multimodal-toolkit {saved}; this is {toolkit.__version__} "
            "(a different minor version). Load it with the matching version, or refit"
        )


def _check_files(path: Path, manifest: dict, files: dict[str, int], verify: bool) -> None:
    """The folder holds exactly the manifest's files, with their sizes (and hashes)."""
    table = manifest.get("files")
    if not isinstance(table, dict) or not isinstance(manifest.get("tensors"), dict):
        raise ModelFileError(f"model '{path}': manifest has no file or tensor table")
    for rel in table:
        _inside(path, rel, f"model '{path}' manifest 'files'")
    present = set(files) - {_MANIFEST}
    extra, missing = sorted(present - set(table)), sorted(set(table) - present)
    if extra:
        raise ModelFileError(
            f"model '{path}' holds files its manifest does not list: {extra[:10]}; remove them "
            "(a saved model folder is written whole by toolkit.save)"
        )
    if missing:
        raise ModelFileError(f"model '{path}' lacks files its manifest lists: {missing[:10]}")
    unsafe = sorted(rel for rel in table if Path(rel).suffix not in SAFE_SUFFIXES)
    if unsafe:
        raise ModelFileError(
            f"model '{path}' holds files that are not plain data: {unsafe[:10]}; only "
            f"{sorted(SAFE_SUFFIXES)} files are read"
        )
    for rel, info in table.items():
        if not isinstance(info, dict) or info.get("size") != files[rel]:
            raise ModelFileError(
                f"model '{path}': '{rel}' is {files[rel]:,} bytes but the manifest says "
                f"{(info or {}).get('size')!r}; the file was changed or truncated"
            )
        if verify and info.get("sha256") != _sha256(path / rel):
            raise ModelFileError(
                f"model '{path}': '{rel}' does not match the SHA-256 in the manifest; the file "
                "was changed after saving"
            )
    weights = {rel for rel in table if rel.endswith(".safetensors")}
    if set(manifest["tensors"]) != weights:
        raise ModelFileError(
            f"model '{path}': the manifest's tensor table names {sorted(manifest['tensors'])}, "
            f"the folder holds {sorted(weights)}"
        )
    for rel in sorted(weights):
        found = _safetensors_header(path / rel, files[rel])
        expected = manifest["tensors"][rel]
        if found != expected:
            diff = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))[
                :5
            ]
            detail = [(k, expected.get(k), found.get(k)) for k in diff]
            raise ModelFileError(
                f"model '{path}': weights '{rel}' do not match the manifest (name, expected, "
                f"found): {detail}"
            )


def _schema_names(schema, where: str) -> set[tuple[str, str]]:
    """Every (node kind, dotted name) a skops schema references, walked without recursion."""
    names = set()
    stack = [(schema, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise ModelFileError(f"{where}: the schema nests deeper than {MAX_SCHEMA_DEPTH}")
        if isinstance(node, dict):
            loader = node.get("__loader__")
            if loader is not None:
                if not isinstance(loader, str) or loader not in _DATA_LOADERS | _CODE_LOADERS:
                    raise UntrustedTypeError(f"{where}: unknown skops node kind {loader!r}")
                if loader != "CachedNode":
                    module, cls = node.get("__module__"), node.get("__class__")
                    if not isinstance(module, str) or not isinstance(cls, str):
                        raise ModelFileError(f"{where}: a {loader} has no module or class name")
                    name = f"{module}.{cls}"
                    if loader == "MethodNode":
                        name = f"{name}.{(node.get('content') or {}).get('func')}"
                    names.add((loader, name))
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return names


def _read_skops(file: Path, trusted: set[str], max_bytes: int):
    import skops.io as sio
    from skops.io._protocol import PROTOCOL

    where = f"model file '{file}'"
    data = file.read_bytes()
    try:
        import io

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
        UnicodeDecodeError,
        json.JSONDecodeError,
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


def _check_hf_folder(folder: Path, label: str, path: Path, max_bytes: int) -> None:
    """A transformers / sentence-transformers folder: no custom code, bounded model size."""
    what = f"model '{path}': {label}"
    modules = folder / "modules.json"
    if modules.is_file():
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
    cfg = None
    for file in sorted(folder.rglob("*.json")):
        try:
            content = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ModelFileError(f"{what}: '{file.name}' is not valid JSON ({exc!r:.200})") from exc
        if isinstance(content, dict) and (
            "auto_map" in content or content.get("trust_remote_code")
        ):
            asks = "auto_map" if "auto_map" in content else "trust_remote_code"
            raise UntrustedTypeError(
                f"{what}: '{file.name}' asks for custom model code ({asks}); it is not run"
            )
        if file.parent == folder and file.name == "config.json":
            cfg = content
    if not isinstance(cfg, dict):
        return
    if "model_type" not in cfg:
        return
    import torch
    from transformers import AutoConfig, AutoModel

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf_config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
            with torch.device("meta"):
                meta = AutoModel.from_config(hf_config)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ModelFileError(
            f"{what}: config.json does not describe a model transformers can build "
            f"({type(exc).__name__}: {exc})"
        ) from exc
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
        raise ModelFileError(
            f"model '{path}': the saved network of {label} could not be loaded "
            f"({type(exc).__name__}: {str(exc)[:300]}); the folder is damaged: save it again"
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


_DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"


def _check_vectorizer(vec, path: Path) -> None:
    """A text vectorizer in a model file: only the settings the toolkit uses. Its regular
    expression and input mode are data that act like code (a crafted pattern can take
    exponential time; ``input="filename"`` would read files named by the text)."""
    ngram = getattr(vec, "ngram_range", None)
    problems = {
        "input": vec.input == "content",
        "tokenizer": vec.tokenizer is None,
        "preprocessor": vec.preprocessor is None,
        "analyzer": vec.analyzer in ("word", "char", "char_wb"),
        "token_pattern": vec.token_pattern in (None, _DEFAULT_TOKEN_PATTERN),
        "encoding": vec.encoding == "utf-8",
        "decode_error": vec.decode_error in ("strict", "ignore", "replace"),
        "strip_accents": vec.strip_accents in (None, "ascii", "unicode"),
        "ngram_range": isinstance(ngram, tuple)
        and len(ngram) == 2
        and all(isinstance(n, int) and 1 <= n <= 10 for n in ngram)
        and ngram[0] <= ngram[1],
    }
    odd = sorted(k for k, ok in problems.items() if not ok)
    if odd:
        raise UntrustedTypeError(
            f"model '{path}': a {type(vec).__name__} has settings the toolkit never writes: "
            f"{[(k, getattr(vec, k, None)) for k in odd]}; refused"
        )


def _check_plain_data(model, path: Path) -> None:
    """Walk the loaded toolkit and scikit-learn objects for settings that act like code."""
    from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer

    seen, stack = set(), [model]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, CountVectorizer | HashingVectorizer):
            _check_vectorizer(obj, path)
        if isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple):
            stack.extend(obj)
        elif type(obj).__module__.split(".")[0] in ("toolkit", "sklearn"):
            stack.extend(getattr(obj, "__dict__", {}).values())
    if getattr(model, "memory", None) is not None:
        raise UntrustedTypeError(
            f"model '{path}': the file sets memory={model.memory!r}; saved models carry no "
            "cache (set one after loading with set_params(memory=...))"
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


def load(path, *, trusted=None, max_bytes: int = DEFAULT_MAX_BYTES, verify: bool = True):
    """Load a model saved with :func:`save`, running no code the file chose.

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

    Returns
    -------
    The fitted estimator, with its torch parts restored (on CPU).
    """
    if trusted is not None:
        if isinstance(trusted, str) or not all(
            isinstance(t, str) and _DOTTED.match(t) for t in trusted
        ):
            raise TypeError(
                f"trusted must be a list of exact dotted names such as "
                f"'mypackage.module.Class', got {trusted!r}"
            )
    path = _locate(Path(path))
    if path.is_symlink():
        raise ModelFileError(f"'{path}' is a symbolic link; load the real folder it points to")
    if not path.is_dir():
        raise FileNotFoundError(f"'{path}' is not a saved toolkit model (not a folder)")
    files = _scan(path, f"model '{path}'", max_bytes)
    manifest = _read_manifest(path, files)
    _check_compatible(manifest, path)
    _check_files(path, manifest, files, verify)
    if _MODEL not in files:
        raise FileNotFoundError(f"'{path}' is not a saved toolkit model (no {_MODEL})")
    model = _read_skops(path / _MODEL, set(trusted or ()), max_bytes)
    cls = f"{type(model).__module__}.{type(model).__qualname__}"
    if cls != manifest["class"]:
        raise ModelFileError(f"model '{path}': manifest says {manifest['class']}, file holds {cls}")
    if list(getattr(model, "modality_names_", [])) != manifest.get("modalities"):
        raise ModelFileError(f"model '{path}': the manifest's modalities do not match the model")
    _check_plain_data(model, path)
    _restore_components(model, path, manifest, max_bytes)
    return model
