"""3-D scan reader: MONAI ``LoadImage`` for NIfTI and DICOM, MONAI transforms to preprocess.

The voxel count is read from the header and checked against ``max_voxels`` before any pixel
data is decoded: NIfTI from the nibabel header's shape, DICOM from each file's ``Rows`` x
``Columns`` x ``NumberOfFrames`` x ``SamplesPerPixel`` (summed over a series folder's files,
read with ``stop_before_pixels`` and large elements deferred). Paths are ``os.stat``-ed
first: FIFOs, devices and sockets, also inside a series folder, are never opened.

The grids the preprocessing creates are bounded by ``max_resampled_voxels``: the volume that
resampling to ``pixdim`` would produce (MONAI's ``Orientation`` and ``Spacing`` run in lazy
mode on the shape and affine alone, so the count is exact, rotated affines included) is
checked from the NIfTI header before decoding, and for DICOM from the decoded volume's affine
before resampling; ``spatial_size`` must fit the same limit. A 4 KB NIfTI of 10^3 voxels at
45 mm read at ``pixdim=(1, 1, 1)`` (406^3 = 67 million voxels, 12 s and 1.9 GB) is thereby
refused in milliseconds.

Memory, measured with ``resource.getrusage`` (peak RSS above the imports): decoding costs about
8 bytes per stored voxel (the float32 volume, the file's own integer data while it is
converted, MONAI's copy of it, a one-byte NaN mask; the compressed size does not matter: a
1.5 MB ``.nii.gz`` of 700^3 zeros takes 2.0 GB), and resampling to ``pixdim`` about 29 bytes
per resampled voxel (MONAI's grid and interpolation, in float32). The encoders hold no more:
a volume above :data:`HOLD_VOXELS` is resized to ``spatial_size`` as soon as it is read, so
a chunk of several items never holds several large volumes, and batches of same-shape
volumes are stacked (copied) only up to that size (``ScanEncoder`` on four 400^3 int16
NIfTI volumes in one chunk: 1,976 MB before, 509 MB after, as much as decoding one). The
defaults, :data:`MAX_VOXELS` (2**28, a 512 x 512 x 1024 CT: about 2.1 GB to decode) and
:data:`MAX_RESAMPLED_VOXELS` (2**25, about 1 GB to resample), bound each step; lower them
on small machines.

A volume whose voxel-to-world affine is singular (a DICOM series with every slice at the
same position, or a zero or collinear ``ImageOrientationPatient``) cannot be oriented or
resampled; :func:`read_scan` refuses it with a :class:`~toolkit.exceptions.ReadError` naming
the file or folder, so encoders with ``on_error="missing"`` mark that row missing.
"""

from __future__ import annotations

import math
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit._utils import describe_item
from toolkit.exceptions import ReadError
from toolkit.io._checks import as_finite_float32, check_real_dtype
from toolkit.io._paths import as_path, check_path, companion_files, pair_suffix
from toolkit.io.scan_headers import (
    MAX_RESAMPLED_VOXELS,
    MAX_VOXELS,
    _check_dicom_folder,
    _check_header,
    _check_resampled,
    _degenerate,
    _is_nifti,
    _singular,
    _too_many,
    quiet_monai,
    resampled_shape,
)

#: Voxels of the largest oriented volume an encoder holds before resizing (16 MB): larger
#: ones are resized as soon as they are read, and :func:`resize_and_scale` stacks at most
#: this many voxels at once (a larger volume goes alone, without a copy).
HOLD_VOXELS = 1 << 22


def _as_float_volume(img, what: str):
    """The loaded MetaTensor as float32, refusing complex, NaN and out-of-float32 voxels."""
    import torch
    from monai.data import MetaTensor

    arr = np.asarray(img.as_tensor().cpu())
    check_real_dtype(arr, what, "voxels", allow_bool=True)
    arr = as_finite_float32(arr, what, "voxels", copy=False)  # no second copy of the volume
    return MetaTensor(torch.from_numpy(arr), meta=img.meta)


def _load(item: Any, max_voxels: int, resample_to=None):
    """(channel-first volume, description of the item for messages).

    ``resample_to``: (max_resampled_voxels, orientation, pixdim), to check a NIfTI header
    for the voxels resampling would create, before decoding.
    """
    path = as_path(item)
    if path is not None:
        return _load_file(path, max_voxels, resample_to)
    if isinstance(item, np.ndarray) or type(item).__name__ in ("Tensor", "MetaTensor"):
        return _load_array(item, max_voxels)
    raise ReadError(
        f"scan item {describe_item(item)} of type {type(item).__name__} is not a path or 3-D array"
    )


def _load_file(path: Path, max_voxels: int, resample_to=None):
    """A NIfTI file, DICOM file or DICOM series folder: headers checked, then decoded."""
    check_path(path, "scan", allow_dir=True)
    if path.is_dir():
        _check_dicom_folder(path, max_voxels)
        reader, kind = "PydicomReader", "DICOM series folder"
    elif _is_nifti(path):
        reader, kind = "NibabelReader", "NIfTI file"
    else:
        reader, kind = "PydicomReader", "DICOM file"
    what = f"{kind} '{path}'"
    # Analyze/NIfTI pairs (also .hdr.gz/.img.gz): the other half (and an SPM .mat) is
    # opened on decoding, so it gets the same checks (no FIFO, device or empty file).
    for companion in companion_files(path):
        if not os.path.lexists(companion):
            continue
        if pair_suffix(companion) is not None:
            check_path(companion, "scan")
        elif not stat.S_ISREG(os.stat(companion).st_mode):  # an SPM .mat: never a FIFO
            check_path(companion, "scan")
    wide = not path.is_dir() and _check_header(
        path, reader == "NibabelReader", what, max_voxels, resample_to
    )
    with quiet_monai():
        from monai.transforms import LoadImage

        try:
            # float64 when the header allows values beyond float32, so NaN and
            # out-of-range values are told apart before the cast.
            img = LoadImage(
                reader=reader,
                image_only=True,
                ensure_channel_first=True,
                dtype=np.float64 if wide else np.float32,
            )(str(path))
        except Exception as exc:
            raise ReadError(
                f"{what} could not be read as a scan ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); check that it is a "
                "valid, complete NIfTI or DICOM file"
            ) from exc
    if img.ndim != 4:
        raise ReadError(
            f"{what} holds a {img.ndim - 1}-D image of shape {tuple(img.shape[1:])}, not a "
            "3-D volume; pass the folder of the whole DICOM series (or use ImageEncoder "
            "for 2-D images)"
        )
    voxels = math.prod(int(n) for n in img.shape)
    if voxels > max_voxels:
        raise _too_many(voxels, max_voxels, what, "as decoded")
    return _as_float_volume(img, what), what


def _load_array(item, max_voxels: int):
    """An in-memory volume (numpy array or torch tensor) of shape (D, H, W) or (1, D, H, W)."""
    arr = np.asarray(item)
    what = f"scan item {describe_item(arr)}"
    if arr.dtype.kind not in "biufc":
        raise ReadError(f"{what}: expected a numeric volume, got dtype {arr.dtype}")
    check_real_dtype(arr, what, "voxels", allow_bool=True)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ReadError(
            f"{what}: expected a 3-D volume of shape (D, H, W), got {arr.ndim} dimensions"
            + ("; for a 2-D image use ImageEncoder" if arr.ndim == 2 else "")
        )
    if min(arr.shape) < 1:
        raise ReadError(f"{what} is empty")
    if arr.size > max_voxels:
        raise _too_many(arr.size, max_voxels, what, f"shape {arr.shape}")
    arr = as_finite_float32(arr, what, "voxels")
    import torch

    return torch.from_numpy(arr[None]), what


def load_scan(item: Any, *, max_voxels: int = MAX_VOXELS):
    """Read one scan as a channel-first MONAI ``MetaTensor`` of shape (C, D, H, W), float32.

    Parameters
    ----------
    item : str, path-like or ndarray
        A NIfTI file (``.nii``/``.nii.gz``), a DICOM file or a folder holding one DICOM
        series, or a 3-D array (D, H, W) (a 4-D array (1, D, H, W) is accepted too).
    max_voxels : int, default=2**28 (:data:`MAX_VOXELS`)
        Largest volume accepted (all channels counted), checked from the header before
        decoding.
    """
    return _load(item, max_voxels)[0]


def _affine(img):
    meta = getattr(img, "meta", None)
    return None if not meta or meta.get("affine") is None else np.asarray(meta["affine"])


def _check_affine(img, what: str, orientation, pixdim) -> None:
    """Refuse a singular voxel-to-world affine when orienting or resampling needs it."""
    affine = _affine(img)
    if (orientation or pixdim is not None) and affine is not None and _singular(affine):
        raise _degenerate(what)


def check_preprocess(spatial_size, pixdim, limit: int) -> None:
    """Parameter checks (``ValueError``); ``spatial_size`` must fit ``limit`` voxels."""
    size = tuple(spatial_size)
    if len(size) != 3 or not all(
        isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in size
    ):
        raise ValueError(f"spatial_size must be 3 positive ints, got {spatial_size!r}")
    if math.prod(int(n) for n in size) > limit:
        raise ValueError(
            f"spatial_size={size} has {math.prod(int(n) for n in size):,} voxels, above the "
            f"max_resampled_voxels={limit:,} limit; choose a smaller spatial_size or raise "
            "max_resampled_voxels"
        )
    if pixdim is not None:
        values = tuple(pixdim)
        if len(values) != 3 or not all(
            isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, bool)
            and math.isfinite(v)
            and v > 0
            for v in values
        ):
            raise ValueError(
                f"pixdim must be 3 positive finite spacings in mm (or None), got {pixdim!r}"
            )


def check_intensity_range(intensity_range) -> tuple[float, float] | None:
    """``None`` or a fixed intensity window ``(a_min, a_max)`` as two finite floats with
    ``a_min < a_max``; ``ValueError`` otherwise.

    >>> check_intensity_range([-1000, 400])
    (-1000.0, 400.0)
    """
    if intensity_range is None:
        return None
    array = isinstance(intensity_range, np.ndarray) and intensity_range.ndim == 1
    values = tuple(intensity_range) if isinstance(intensity_range, tuple | list) or array else ()
    if (
        len(values) != 2
        or not all(
            isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, bool)
            and math.isfinite(v)
            for v in values
        )
        or not values[0] < values[1]
        or not float(values[1]) - float(values[0]) < float(np.finfo(np.float32).max)
    ):
        raise ValueError(
            "intensity_range must be None (each volume's 1st/99th percentiles) or two finite "
            f"numbers (a_min, a_max) with a_min < a_max and a span within float32's range, "
            f"e.g. (-1000, 400) for a CT window in Hounsfield units; got {intensity_range!r}"
        )
    return float(values[0]), float(values[1])


def orient_scan(
    img,
    pixdim: Sequence[float] | None = None,
    orientation: str | None = "RAS",
):
    """The per-volume half of :func:`preprocess_scan`: channel mean, orientation and
    resampling to ``pixdim`` (MONAI, on the CPU); returns a (1, D, H, W) float32 tensor."""
    import torch

    # Only a MONAI MetaTensor carries an affine, and one exists only once MONAI is imported:
    # an in-memory array is not oriented or resampled, and its reader (a loky worker, a
    # drill-down's thousand calls) never pays MONAI's import (~7 s).
    monai_data = sys.modules.get("monai.data")
    if monai_data is None or not isinstance(img, monai_data.MetaTensor):
        x = torch.as_tensor(img).float()
        return x.mean(dim=0, keepdim=True) if x.shape[0] > 1 else x
    with quiet_monai():
        from monai.data import MetaTensor
        from monai.transforms import Orientation, Spacing

        x = img
        if x.shape[0] > 1:
            meta = getattr(x, "meta", None)
            mean = torch.as_tensor(x).float().mean(dim=0, keepdim=True)
            x = MetaTensor(mean, meta=meta) if meta is not None else mean
        is_meta = isinstance(x, MetaTensor) and "affine" in getattr(x, "meta", {})
        try:
            if orientation and is_meta:
                x = Orientation(axcodes=orientation)(x)
            if pixdim is not None and is_meta:
                # float32 grid: half the memory of MONAI's float64 default (29 B per voxel).
                x = Spacing(pixdim=tuple(pixdim), mode="bilinear", dtype=torch.float32)(x)
        except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
            raise ReadError(
                f"scan could not be oriented or resampled ({type(exc).__name__}: {exc}); check "
                "its orientation and spacing, or pass orientation=None and pixdim=None"
            ) from exc
    return torch.as_tensor(x).float()


def _percentiles(flat, qs: Sequence[float]):
    """Linear-interpolated percentiles of each row of ``flat`` (B, N) (numpy's and
    torch.quantile's default), from one sort of each row; returns (len(qs), B)."""
    import torch

    ordered = flat.sort(dim=1).values
    n = flat.shape[1]
    out = []
    for q in qs:
        pos = q / 100.0 * (n - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, n - 1)
        frac = pos - lo
        a, b = ordered[:, lo], ordered[:, hi]
        out.append(torch.lerp(a, b, frac) if frac else a)
    return torch.stack(out)


def resize_and_scale(
    volumes: Sequence,
    spatial_size: Sequence[int] = (64, 64, 64),
    percentiles: tuple[float, float] = (1.0, 99.0),
    device=None,
    intensity_range: tuple[float, float] | None = None,
) -> list:
    """The batched half of :func:`preprocess_scan`: resize and intensity-scale volumes.

    Volumes of one shape are stacked and processed together on ``device`` (the CPU when
    None): trilinear resizing to ``spatial_size`` (MONAI's ``Resize``: ``interpolate`` with
    ``align_corners=False``, no anti-aliasing) and the scaling of MONAI's
    ``ScaleIntensityRangePercentiles`` (each volume's ``percentiles`` map to 0 and 1,
    clipped; a volume whose two percentiles are equal is only shifted, as MONAI does), so
    each volume gets what :func:`preprocess_scan` gives it alone (to float32 rounding).

    Parameters
    ----------
    volumes : sequence of tensors of shape (1, D, H, W) or (D, H, W), float32
        Outputs of :func:`orient_scan` (or 3-D arrays).
    spatial_size : tuple of 3 int
    percentiles : (float, float)
    device : str or torch.device, optional
    intensity_range : (float, float), optional
        A fixed window instead of the percentiles (MONAI's ``ScaleIntensityRange``):
        ``a_min`` maps to 0 and ``a_max`` to 1, clipped, the same for every volume.

    Returns
    -------
    list of tensors of shape ``spatial_size`` on ``device`` (float32), in input order, or a
    :class:`~toolkit.exceptions.ReadError` in place of a volume that became non-finite.
    """
    import torch

    size = tuple(int(n) for n in spatial_size)
    window = check_intensity_range(intensity_range)
    groups: dict[tuple, list[int]] = {}
    for i, v in enumerate(volumes):
        groups.setdefault(tuple(v.shape[-3:]), []).append(i)
    out: list = [None] * len(volumes)
    for shape, rows in groups.items():
        # Stacked in batches of at most HOLD_VOXELS (a larger volume alone, as a view): a
        # stack copies its volumes.
        per = max(1, HOLD_VOXELS // math.prod(shape))
        for k in range(0, len(rows), per):
            batch = [torch.as_tensor(volumes[i]).reshape(1, *shape) for i in rows[k : k + per]]
            x = batch[0][None] if len(batch) == 1 else torch.stack(batch)  # (B, 1, D, H, W)
            x = x.to(device=device, dtype=torch.float32)
            if shape != size:
                x = torch.nn.functional.interpolate(
                    x, size=size, mode="trilinear", align_corners=False
                )
            if window is None:
                scaled = _scale_percentiles(x[:, 0], percentiles)
            else:
                scaled = _scale_window(x[:, 0], window)
            for i, v in zip(rows[k : k + per], scaled, strict=True):
                out[i] = v
    return out


def _scale_percentiles(x, percentiles: tuple[float, float]) -> list:
    """(B, D, H, W) volumes scaled as MONAI's ``ScaleIntensityRangePercentiles`` (see
    :func:`resize_and_scale`); a volume that became non-finite is a ``ReadError``."""
    import torch

    a_min, a_max = _percentiles(x.reshape(len(x), -1), percentiles)
    span = (a_max - a_min)[:, None, None, None]
    a_min = a_min[:, None, None, None]
    scaled = ((x - a_min) / torch.where(span == 0, 1.0, span) * 1.0 + 0.0).clamp(0.0, 1.0)
    x = torch.where(span == 0, x - a_min + 0.0, scaled)
    return _finite(x)


def _scale_window(x, window: tuple[float, float]) -> list:
    """(B, D, H, W) volumes scaled as MONAI's ``ScaleIntensityRange(a_min, a_max, 0, 1,
    clip=True)``: one fixed window for every volume."""
    a_min, a_max = window
    return _finite(((x - a_min) / (a_max - a_min)).clamp(0.0, 1.0))


def _finite(x) -> list:
    """The volumes of ``x`` (B, D, H, W), a ``ReadError`` in place of a non-finite one."""
    import torch

    finite = torch.isfinite(x).flatten(1).all(dim=1).tolist()
    return [
        x[k]
        if finite[k]
        else ReadError("scan became non-finite after preprocessing; check its intensities")
        for k in range(len(x))
    ]


def preprocess_scan(
    img,
    spatial_size: Sequence[int] = (64, 64, 64),
    pixdim: Sequence[float] | None = None,
    orientation: str | None = "RAS",
    percentiles: tuple[float, float] = (1.0, 99.0),
    device=None,
    as_tensor: bool = False,
    intensity_range: tuple[float, float] | None = None,
):
    """Orient, resample/resize and scale one channel-first volume; returns (D, H, W) float32.

    Multi-channel volumes (e.g. 4-D NIfTI series) are averaged over their channels.
    Intensities are mapped so that the given lower and upper percentiles become 0 and 1
    (clipped), which makes CT and MR volumes comparable; with ``intensity_range=(a_min,
    a_max)`` a fixed window maps to [0, 1] instead (clipped; for calibrated intensities such
    as CT's Hounsfield units, where per-volume scaling would hide how bright a volume is). With ``device`` (e.g. a CUDA
    device) resizing and scaling run there; ``as_tensor=True`` returns the torch tensor
    on that device instead of a numpy array. This is MONAI's per-volume pipeline
    (``Orientation``, ``Spacing``, ``Resize``, ``ScaleIntensityRangePercentiles``); encoders
    run :func:`orient_scan` per volume and :func:`resize_and_scale` on batches instead.
    """
    import torch

    x = orient_scan(img, pixdim=pixdim, orientation=orientation)
    with quiet_monai():
        from monai.transforms import Resize, ScaleIntensityRange, ScaleIntensityRangePercentiles

        if device is not None:
            x = x.to(device)
        if tuple(x.shape[1:]) != tuple(spatial_size):
            x = Resize(spatial_size=tuple(spatial_size), mode="trilinear")(x)
        window = check_intensity_range(intensity_range)
        if window is None:
            lo, hi = percentiles
            x = ScaleIntensityRangePercentiles(
                lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True
            )(x)
        else:
            x = ScaleIntensityRange(*window, b_min=0.0, b_max=1.0, clip=True)(x)
    x = torch.as_tensor(x)[0]
    if not bool(torch.isfinite(x).all()):
        raise ReadError("scan became non-finite after preprocessing; check its intensities")
    return x if as_tensor else np.asarray(x.cpu(), dtype=np.float32)


def load_oriented_scan(
    item: Any,
    *,
    max_voxels: int = MAX_VOXELS,
    max_resampled_voxels: int = MAX_RESAMPLED_VOXELS,
    spatial_size: Sequence[int] = (64, 64, 64),
    pixdim: Sequence[float] | None = None,
    orientation: str | None = "RAS",
):
    """Read one scan with every check of :func:`read_scan` and run :func:`orient_scan`;
    :func:`resize_and_scale` finishes it (in batches). Returns (1, D, H, W) float32 (CPU).

    A volume of more than :data:`HOLD_VOXELS` voxels is resized to ``spatial_size`` here
    (trilinear, as :func:`resize_and_scale` would), so that callers holding several read
    volumes hold small ones; :func:`resize_and_scale` then only scales it."""
    check_preprocess(spatial_size, pixdim, max_resampled_voxels)
    resample_to = (max_resampled_voxels, orientation, pixdim)
    img, what = _load(item, max_voxels, resample_to)
    _check_affine(img, what, orientation, pixdim)
    source = "from its affine, before resampling"
    _check_resampled(tuple(img.shape[1:]), _affine(img), what, *resample_to, source)
    try:
        x = orient_scan(img, pixdim=pixdim, orientation=orientation)
    except ReadError as exc:
        raise ReadError(f"{what}: {exc}") from exc
    del img
    size = tuple(int(n) for n in spatial_size)
    if x[0].numel() > HOLD_VOXELS and tuple(x.shape[1:]) != size:
        # Resized now, alone: an encoder's chunk then holds small volumes, never several
        # large ones (a chunk of four 600^3 volumes held 3.5 GB).
        import torch

        x = torch.nn.functional.interpolate(
            x[None], size=size, mode="trilinear", align_corners=False
        )[0]
    return x


def read_scan(
    item: Any,
    *,
    max_voxels: int = MAX_VOXELS,
    max_resampled_voxels: int = MAX_RESAMPLED_VOXELS,
    **preprocess,
) -> np.ndarray:
    """Read and preprocess one scan (see :func:`load_scan` and :func:`preprocess_scan`).

    Parameters
    ----------
    item : str, path-like or ndarray
    max_voxels : int, default=2**28 (:data:`MAX_VOXELS`)
        Largest stored volume accepted, from the header before decoding (~8 bytes per voxel
        to decode).
    max_resampled_voxels : int, default=2**25 (:data:`MAX_RESAMPLED_VOXELS`)
        Largest grid created: the volume resampling to ``pixdim`` would produce (from a
        NIfTI header before decoding, from a DICOM volume's affine before resampling; ~29
        bytes per voxel) and ``spatial_size``.
    **preprocess
        Keyword arguments of :func:`preprocess_scan`.

    Returns
    -------
    volume : ndarray of shape spatial_size, float32 in [0, 1]

    Raises
    ------
    ReadError
        Naming the file, folder or array: unreadable, FIFO/device, too many voxels (stored
        or once resampled), degenerate orientation, NaN or out-of-float32-range voxels.
    ValueError
        ``spatial_size`` or ``pixdim`` is malformed, or ``spatial_size`` exceeds
        ``max_resampled_voxels``.
    """
    orientation, pixdim = preprocess.get("orientation", "RAS"), preprocess.get("pixdim")
    size = preprocess.get("spatial_size", (64, 64, 64))
    check_preprocess(size, pixdim, max_resampled_voxels)
    resample_to = (max_resampled_voxels, orientation, pixdim)
    img, what = _load(item, max_voxels, resample_to)
    _check_affine(img, what, orientation, pixdim)
    source = "from its affine, before resampling"
    _check_resampled(tuple(img.shape[1:]), _affine(img), what, *resample_to, source)
    try:
        return preprocess_scan(img, **preprocess)
    except ReadError as exc:
        raise ReadError(f"{what}: {exc}") from exc


__all__ = [
    "MAX_RESAMPLED_VOXELS",
    "MAX_VOXELS",
    "check_preprocess",
    "load_oriented_scan",
    "load_scan",
    "orient_scan",
    "preprocess_scan",
    "quiet_monai",
    "read_scan",
    "resampled_shape",
    "resize_and_scale",
]
