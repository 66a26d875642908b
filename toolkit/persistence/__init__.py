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

Modules: :mod:`~toolkit.persistence.files` (format constants, errors, folder scan, safetensors
headers, manifest checks), :mod:`~toolkit.persistence.allowlist` (what a file may construct),
:mod:`~toolkit.persistence.saving` (``save``) and :mod:`~toolkit.persistence.loading`
(``load``, component restore).
"""

from __future__ import annotations

from toolkit.persistence.allowlist import toolkit_types, trusted_types
from toolkit.persistence.files import (
    DEFAULT_MAX_BYTES,
    FORMAT_VERSION,
    MAX_COMPRESSION_RATIO,
    MAX_MANIFEST_BYTES,
    MAX_SAFETENSORS_HEADER,
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_DEPTH,
    MAX_UNPACKED_FREE,
    SAFE_SUFFIXES,
    ModelFileError,
    UntrustedTypeError,
    safetensors_header,
    sha256,
)
from toolkit.persistence.loading import load
from toolkit.persistence.saving import save

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FORMAT_VERSION",
    "MAX_COMPRESSION_RATIO",
    "MAX_MANIFEST_BYTES",
    "MAX_SAFETENSORS_HEADER",
    "MAX_SCHEMA_BYTES",
    "MAX_SCHEMA_DEPTH",
    "MAX_UNPACKED_FREE",
    "SAFE_SUFFIXES",
    "ModelFileError",
    "UntrustedTypeError",
    "load",
    "safetensors_header",
    "save",
    "sha256",
    "toolkit_types",
    "trusted_types",
]
