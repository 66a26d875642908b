"""``save``: write a fitted estimator into a sibling temporary folder, flush it, and swap it
into place atomically; clean up what interrupted saves left.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import re
import shutil
import uuid
from pathlib import Path

import skops.io as sio
from sklearn.utils.validation import check_is_fitted

from toolkit._utils import package_versions
from toolkit.persistence.files import (
    _ESTIMATOR_TYPES,
    _MANIFEST,
    _MODEL,
    FORMAT_VERSION,
    SAFE_SUFFIXES,
    ModelFileError,
    _fsync_dir,
    _fsync_tree,
    _read_manifest,
    _scan,
    safetensors_header,
    sha256,
)

_PLAIN_NAME = re.compile(r"^(?!\.\.?\Z)[\w.-]{1,100}\Z")

#: File a save writes into its temporary folder first, holding the random token of the
#: folder's name: the proof that a folder named like a save's temporary folder was made by a
#: save (a later save removes such a folder left by a killed one only with this proof, or
#: when it is a complete model folder; a user's folder that merely has such a name is kept).
_SAVE_MARKER = ".toolkit-save-in-progress"


def _step(name: str) -> None:
    """A named point in ``save`` (tests stop a child process here to check atomicity)."""


# -- small file helpers ----------------------------------------------------------------


def _versions() -> dict:
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


# -- save -------------------------------------------------------------------------------


def _components(model) -> list[tuple[str, object, str | None]]:
    """(label, component, modality name or None for the fusion) of every part that may hold
    torch state: the fusion (saved at the folder's top), then each encoder (under
    ``encoders/<name>/``)."""
    parts = [("the fusion", model.fusion_, None)]
    for name, enc in model.encoders_.items():
        parts.append((f"encoder '{name}'", enc, name))
    return parts


def features_versions(model) -> dict:
    """``{modality: {"class": name, "version": n}}`` for each encoder whose class declares a
    ``features_version`` (what it computes; bumped when that changes): :func:`load` refuses
    a model whose encoder now computes another version."""
    out = {}
    for name, enc in (getattr(model, "encoders_", None) or {}).items():
        version = getattr(type(enc), "features_version", None)
        if version is not None:
            out[name] = {"class": type(enc).__name__, "version": int(version)}
    return out


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
    manifest = {
        "format": FORMAT_VERSION,
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "versions": _versions(),
        "modalities": list(model.modality_names_),
        "fusion": None,
        "encoders": {},
        "features_versions": features_versions(model),
    }
    # (object, attribute, value, delete?) restored after dumping; a cache belongs to the
    # session that fitted the model, not to the model
    detached = [(model, "memory", model.memory, False)]
    try:
        detached += _save_weights(model, folder, manifest)
        for obj, attr, _, delete in detached:
            if delete:
                delattr(obj, attr)
            else:
                setattr(obj, attr, None)
        sio.dump(model, folder / _MODEL)
    finally:
        for obj, attr, value, _ in detached:
            setattr(obj, attr, value)
    manifest.update(_file_tables(folder))
    (folder / _MANIFEST).write_text(json.dumps(manifest, indent=2))


def _save_weights(model, folder: Path, manifest: dict) -> list[tuple]:
    """Let each component with torch state write it under ``folder`` and enter it in
    ``manifest``; returns the (object, attribute, value, delete?) to leave out of
    ``model.skops``."""
    detached = []
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
    return detached


def _file_tables(folder: Path) -> dict:
    """The manifest's ``files`` (size, SHA-256) and ``tensors`` (safetensors headers) tables
    of a written folder; refuses a file a model folder may not hold."""
    files = _scan(folder, f"the new model folder '{folder}'", max_bytes=1 << 62)
    files.pop(_SAVE_MARKER, None)  # removed before the folder is moved into place
    unsafe = sorted(rel for rel in files if Path(rel).suffix not in SAFE_SUFFIXES)
    if unsafe:
        raise ModelFileError(
            f"saving wrote files a model folder may not hold: {unsafe}; only "
            f"{sorted(SAFE_SUFFIXES)} files are loadable safely"
        )
    return {
        "files": {
            rel: {"size": size, "sha256": sha256(folder / rel)}
            for rel, size in sorted(files.items())
        },
        "tensors": {
            rel: safetensors_header(folder / rel)
            for rel in sorted(files)
            if rel.endswith(".safetensors")
        },
    }


def _check_replaceable(path: Path) -> None:
    """Refuse to overwrite anything but a folder that holds a toolkit model and nothing else."""
    why = _not_a_model_folder(path)
    if why is not None:
        raise FileExistsError(
            f"refusing to overwrite '{path}': {why}. overwrite=True replaces only a folder "
            "written by toolkit.save; move those files out or choose another path"
        )


def _not_a_model_folder(path: Path) -> str | None:
    """Why ``path`` is not a folder holding a toolkit model and nothing else (None if it is)."""
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
    return why


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two folders (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
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


def _make_temp(path: Path) -> Path:
    """A new temporary folder beside ``path`` holding :data:`_SAVE_MARKER` with the token of
    its name (flushed, so a save killed right after still leaves its proof)."""
    tmp = _temp_name(path, "saving")
    tmp.mkdir()
    marker = tmp / _SAVE_MARKER
    with open(marker, "w", encoding="utf-8") as fh:
        fh.write(tmp.name.rsplit("-", 1)[1])
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(tmp)
    return tmp


def _made_by_a_save(folder: Path) -> bool:
    """Whether ``folder`` (named like a save's temporary folder) holds the marker a save
    wrote into it, with the token of its name."""
    marker = folder / _SAVE_MARKER
    try:
        if marker.is_symlink() or not marker.is_file() or marker.stat().st_size > 64:
            return False
        return marker.read_text(encoding="utf-8") == folder.name.rsplit("-", 1)[1]
    except (OSError, UnicodeDecodeError):
        return False


def _leftovers(path: Path, kind: str) -> list[Path]:
    """Folders an interrupted save of ``path`` on this machine left, by a process now dead,
    holding nothing but the data files a model folder may hold, and proven a save's: its
    marker with the token of its name (:data:`_SAVE_MARKER`), or a complete model folder
    (a manifest listing exactly its files, as ``overwrite=True`` asks); newest first. A
    folder that merely has such a name is never listed (so never removed)."""
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
        files.pop(_SAVE_MARKER, None)
        if not all(Path(rel).suffix in SAFE_SUFFIXES for rel in files):
            continue
        if _made_by_a_save(entry) or _not_a_model_folder(entry) is None:
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
    cls = f"{type(model).__module__}.{type(model).__qualname__}"
    if cls not in _ESTIMATOR_TYPES:
        raise TypeError(
            f"toolkit.save does not support {cls} objects; it saves fitted "
            f"{' and '.join(sorted(n.rsplit('.', 1)[1] for n in _ESTIMATOR_TYPES))} models "
            "(for a scikit-learn estimator of your own, use skops.io.dump)"
        )
    check_is_fitted(model, "fusion_")
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
    tmp = _make_temp(path)
    try:
        _step("folder")
        _write(model, tmp)
        _step("written")
        _fsync_tree(tmp)
        _step("flushed")
        (tmp / _SAVE_MARKER).unlink()  # now a complete model folder
        _fsync_dir(tmp)
        _into_place(tmp, path)
    finally:
        # only this call's own folder (its name holds a fresh random token)
        if tmp.exists() and not tmp.is_symlink():
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
