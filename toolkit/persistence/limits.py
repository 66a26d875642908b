"""The caller's bounds on what a model file may make the machine do: the sizes and worker
counts its encoders carry are checked at :func:`~toolkit.load` against the limits of the
process that loads it, never against limits the file sets for itself.

A model file is data, and data can say ``ScanEncoder(spatial_size=[1024] * 3,
max_resampled_voxels=2**40)`` (3 GB for one 8³ volume), a CNN ``input_size_=30000`` (3 GB for
one 8x8 image) or ``n_jobs=48``. Each size is compared with :data:`LOAD_LIMITS` (or the
``limits=`` the caller passes, which may raise or lower any of them) and refused with the
attribute, its value, the limit and how to raise it; the file's own ``max_*`` settings are
themselves sizes checked here, so a file cannot lift a bound. Worker counts are capped
instead (results do not depend on them): a file's ``n_jobs`` becomes at most the caller's
``max_n_jobs`` (default: this machine's CPU count).
"""

from __future__ import annotations

import math
import os
from numbers import Integral, Real

from toolkit.persistence.files import ModelFileError

#: Default limits of :func:`toolkit.load` (``limits=`` overrides any of them). Each bounds
#: the attributes of every encoder in the file that :data:`_RULES` lists.
LOAD_LIMITS: dict[str, int | float | None] = {
    # stored voxels a scan may have (ScanEncoder.max_voxels): toolkit.io.scan.MAX_VOXELS
    "max_voxels": 2**28,
    # voxels preprocessing may create (ScanEncoder.max_resampled_voxels, and
    # spatial_size's product): toolkit.io.scan.MAX_RESAMPLED_VOXELS
    "max_resampled_voxels": 2**25,
    # pixels an image may have (ImageEncoder.max_pixels): toolkit.io.image.MAX_PIXELS
    "max_pixels": 50_000_000,
    # side length images are resized to (ImageEncoder.input_size, the cnn's input_size_)
    "max_input_size": 1024,
    # seconds of audio decoded (AudioEncoder.max_seconds, duration): io.audio.MAX_SECONDS
    "max_seconds": 3600.0,
    # bytes of one decoded waveform (AudioEncoder.max_decoded_bytes)
    "max_decoded_bytes": 512 * 2**20,
    # tokens per text (TextEncoder.max_length)
    "max_length": 8192,
    # characters per text cell (TextEncoder.max_chars): toolkit.encoders.text's MAX_CHARS
    "max_chars": 100_000,
    # items held and encoded at once (batch_size of every encoder)
    "max_batch_size": 4096,
    # worker processes (n_jobs of every encoder): capped, not refused; None: os.cpu_count()
    "max_n_jobs": None,
}


def _product(value) -> int | None:
    if not isinstance(value, list | tuple) or not value:
        return None
    if not all(isinstance(v, Integral) and not isinstance(v, bool) for v in value):
        return None
    return math.prod(int(v) for v in value)


def _number(value):
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    return value


def _float32_bytes(value):
    """Bytes of ``value`` float32 samples (an audio network's fixed clip length)."""
    value = _number(value)
    return None if value is None else 4 * value


#: (attribute, limit, measure, what the measure is): an attribute of an encoder whose
#: measure is above the limit is refused. A measure that is not a number (``"auto"``,
#: None, a malformed value left to the encoder's own parameter checks) is not compared.
_RULES = (
    ("max_voxels", "max_voxels", _number, "voxels"),
    ("max_resampled_voxels", "max_resampled_voxels", _number, "voxels"),
    ("spatial_size", "max_resampled_voxels", _product, "voxels"),
    ("max_pixels", "max_pixels", _number, "pixels"),
    ("input_size", "max_input_size", _number, "pixels a side"),
    ("input_size_", "max_input_size", _number, "pixels a side"),
    ("max_seconds", "max_seconds", _number, "seconds"),
    ("duration", "max_seconds", _number, "seconds"),
    ("max_decoded_bytes", "max_decoded_bytes", _number, "bytes"),
    ("max_length", "max_length", _number, "tokens"),
    ("max_chars", "max_chars", _number, "characters"),
    ("n_samples_", "max_decoded_bytes", _float32_bytes, "bytes of float32 samples"),
    ("batch_size", "max_batch_size", _number, "items"),
)


def resolve_limits(limits) -> dict:
    """:data:`LOAD_LIMITS` updated with the caller's ``limits`` (checked: known names,
    positive numbers; ``max_n_jobs`` None means the CPU count)."""
    if limits is None:
        limits = {}
    if not isinstance(limits, dict):
        raise TypeError(f"limits must be a dict such as {{'max_input_size': 2048}}, got {limits!r}")
    unknown = sorted(set(map(str, limits)) - set(LOAD_LIMITS))
    if unknown:
        raise TypeError(f"unknown limits {unknown}; expected some of {sorted(LOAD_LIMITS)}")
    out = {**LOAD_LIMITS, **limits}
    for name, value in out.items():
        if name == "max_n_jobs" and value is None:
            out[name] = os.cpu_count() or 1
            continue
        if isinstance(value, bool) or not isinstance(value, Real) or not value > 0:
            raise ValueError(f"limits['{name}'] must be a positive number, got {value!r}")
    return out


def _encoders(model) -> list[tuple[str, object]]:
    """(label, encoder) of every encoder the model holds: the fitted ones and the unfitted
    templates of its ``modalities`` (a refit clones those)."""
    from toolkit.encoders.base import BaseEncoder

    found, seen = [], set()

    def add(label, obj):
        if isinstance(obj, BaseEncoder) and id(obj) not in seen:
            seen.add(id(obj))
            found.append((label, obj))

    for name, enc in (getattr(model, "encoders_", None) or {}).items():
        add(f"encoder '{name}'", enc)
    for entry in getattr(model, "modalities", None) or ():
        if isinstance(entry, list | tuple) and len(entry) >= 2:
            add(f"modality '{entry[0]}' (unfitted template)", entry[1])
    return found


def check_limits(model, path, limits: dict) -> None:
    """Refuse an encoder size above the caller's ``limits`` (resolved); cap ``n_jobs``.

    Raises
    ------
    ModelFileError
        Naming the encoder, the attribute, its value, the limit and how to raise it.
    """
    for label, enc in _encoders(model):
        found = limit_exceeded(enc, limits)
        if found is not None:
            attr, shown, limit_name, limit, unit, size = found
            raise ModelFileError(
                f"model '{path}': {label} ({type(enc).__name__}) sets {attr}={shown}, above "
                f"this caller's limit {limit_name}={limit:,} {unit}; a model file cannot raise "
                f"the caller's limits. If you trust the file, load it with "
                f"toolkit.load(path, limits={{'{limit_name}': {size!r}}})"
            )
        _cap_n_jobs(enc, limits["max_n_jobs"])


def limit_exceeded(enc, limits: dict):
    """The first size of encoder ``enc`` above ``limits`` (resolved), as (attribute, value
    as shown, limit name, limit, unit, size); None when every size is within. Model files
    (:func:`check_limits`) and study configs are held to the same rules."""
    for attr, limit_name, measure, unit in _RULES:
        if attr not in vars(enc):
            continue
        value = vars(enc)[attr]
        size = measure(value)
        limit = limits[limit_name]
        if size is None or size <= limit:
            continue
        shown = f"{value!r:.80}" if size == value else f"{value!r:.80} ({size:,} {unit})"
        return attr, shown, limit_name, limit, unit, size
    return None


def _cap_n_jobs(enc, most: int) -> None:
    """A file's ``n_jobs`` becomes at most ``most`` worker processes (-k counts from this
    machine's CPUs, as joblib does); the blocks do not depend on the worker count."""
    n_jobs = vars(enc).get("n_jobs")
    if n_jobs is None or isinstance(n_jobs, bool) or not isinstance(n_jobs, Integral):
        return
    n_jobs = int(n_jobs)
    if n_jobs < 0:
        n_jobs = max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    if n_jobs > most:
        enc.n_jobs = int(most)
