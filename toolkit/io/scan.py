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
6 bytes per stored voxel (the float32 volume, the file's own integer data while it is
converted, a one-byte NaN mask; the compressed size does not matter: a 1.5 MB ``.nii.gz`` of
700^3 zeros takes 2.0 GB), and resampling to ``pixdim`` about 29 bytes per resampled voxel
(MONAI's grid and interpolation, in float32). The defaults, :data:`MAX_VOXELS` (2**28, a
512 x 512 x 1024 CT) and :data:`MAX_RESAMPLED_VOXELS` (2**25), keep each step near 1.5 GB;
lower them on small machines.

A volume whose voxel-to-world affine is singular (a DICOM series with every slice at the
same position, or a zero or collinear ``ImageOrientationPatient``) cannot be oriented or
resampled; :func:`read_scan` refuses it with a :class:`~toolkit.exceptions.ReadError` naming
the file or folder, so encoders with ``on_error="missing"`` mark that row missing.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit._utils import describe_item
from toolkit.exceptions import ReadError
from toolkit.io._checks import as_finite_float32, check_real_dtype
from toolkit.io._paths import as_path, check_path, companion_files, file_kind, pair_suffix

#: Largest volume accepted, in voxels (``max_voxels``; all channels/time points counted),
#: checked from the header before decoding. Decoding peaks at ~6 bytes per voxel (see the
#: module docstring): 2**28 voxels (512 x 512 x 1024) is about 1.6 GB.
MAX_VOXELS = 2**28
#: Largest grid the preprocessing creates, in voxels (``max_resampled_voxels``): the volume
#: resampled to ``pixdim`` (computed from the header or affine before resampling) and
#: ``spatial_size``. Resampling peaks at ~29 bytes per voxel: 2**25 voxels is about 1 GB.
MAX_RESAMPLED_VOXELS = 2**25
#: pydicom reads header elements larger than this lazily (a huge private tag is not loaded).
_DEFER_SIZE = "1 MB"
_F32_MAX = float(np.finfo(np.float32).max)

_NIFTI_SUFFIXES = (".nii", ".nii.gz", ".img", ".hdr")


@contextlib.contextmanager
def _quiet_monai():
    """Silence MONAI's optional-codec warnings for this call only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"monai\..*")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"monai\..*")
        yield


def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(_NIFTI_SUFFIXES) or pair_suffix(path) is not None


def _too_many(voxels: int, max_voxels: int, what: str, source: str) -> ReadError:
    return ReadError(
        f"{what} has {voxels:,} voxels ({source}), above the max_voxels={max_voxels:,} limit; "
        "crop or downsample it first, or raise max_voxels"
    )


def _dicom_header(file: Path, what: str):
    import pydicom

    try:
        return pydicom.dcmread(str(file), stop_before_pixels=True, defer_size=_DEFER_SIZE)
    except Exception as exc:
        raise ReadError(
            f"{what} is not a readable DICOM file ({type(exc).__name__}: {exc}); "
            "remove it or pass a valid DICOM file"
        ) from exc


def _dicom_voxels(ds, what: str) -> int:
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ReadError(
            f"{what} has no usable Rows/Columns in its header ({exc}); it holds no image"
        ) from exc
    if min(rows, cols, frames, samples) < 1:
        raise ReadError(f"{what} declares an empty image ({rows}x{cols}, {frames} frame(s))")
    return rows * cols * frames * samples


def _check_dicom_folder(path: Path, max_voxels: int = MAX_VOXELS) -> None:
    """Check a series folder from the headers alone: entries, one series, voxel count."""
    files = []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            continue  # hidden files (.DS_Store): MONAI's glob does not see them either
        try:
            mode = os.stat(entry).st_mode
        except OSError as exc:
            raise ReadError(
                f"entry '{entry.name}' of DICOM folder '{path}' cannot be inspected "
                f"({type(exc).__name__}: {exc}); remove it or fix its permissions"
            ) from exc
        if stat.S_ISDIR(mode):
            raise ReadError(
                f"DICOM folder '{path}' holds a subfolder '{entry.name}'; a series folder must "
                "hold only the slice files of one series"
            )
        if not stat.S_ISREG(mode):
            raise ReadError(
                f"entry '{entry.name}' of DICOM folder '{path}' is {file_kind(mode)}, not a "
                "regular file; it was not opened; remove it from the series folder"
            )
        files.append(entry)
    if not files:
        raise ReadError(f"DICOM folder '{path}' holds no files")
    series: dict[str, list[str]] = {}
    voxels = 0
    for f in files:
        where = f"file '{f}' in DICOM folder '{path}'"
        ds = _dicom_header(f, where)
        if getattr(ds, "InstanceNumber", None) in (None, ""):
            raise ReadError(
                f"{where} has no InstanceNumber, which orders the slices (MONAI would skip "
                "it); set it or remove the file"
            )
        voxels += _dicom_voxels(ds, where)
        _check_rescale(ds, where)
        if voxels > max_voxels:
            raise _too_many(
                voxels,
                max_voxels,
                f"DICOM folder '{path}'",
                f"from the headers of {len(files)} files",
            )
        series.setdefault(str(getattr(ds, "SeriesInstanceUID", "unknown")), []).append(f.name)
    if len(series) > 1:
        summary = "; ".join(
            f"{uid}: {len(names)} files (e.g. {names[0]})" for uid, names in series.items()
        )
        raise ReadError(
            f"DICOM folder '{path}' mixes {len(series)} series ({summary}); "
            "put each series in its own folder"
        )


def _check_rescale(ds, what: str) -> None:
    """Refuse a DICOM RescaleSlope/Intercept that takes stored values beyond float32."""
    try:
        slope = abs(float(getattr(ds, "RescaleSlope", 1.0) or 1.0))
        intercept = abs(float(getattr(ds, "RescaleIntercept", 0.0) or 0.0))
        bits = int(getattr(ds, "BitsStored", None) or getattr(ds, "BitsAllocated", 16) or 16)
    except (TypeError, ValueError) as exc:
        raise ReadError(f"{what} has an unreadable RescaleSlope/Intercept ({exc})") from exc
    if not (math.isfinite(slope) and math.isfinite(intercept)):
        raise ReadError(f"{what} has a NaN or infinite RescaleSlope/RescaleIntercept")
    if slope * 2.0 ** min(bits, 64) + intercept > _F32_MAX:
        raise ReadError(
            f"{what}: its RescaleSlope {slope:g} / RescaleIntercept {intercept:g} take the "
            f"stored {bits}-bit values out of float32 range (±{_F32_MAX:.3g}); they are finite, "
            "not NaN; fix the header"
        )


def _singular(affine) -> bool:
    """Whether a voxel-to-world affine cannot be oriented or resampled (singular, NaN)."""
    affine = np.asarray(affine, dtype=np.float64)[:3, :3]
    if not np.isfinite(affine).all():
        return True
    values = np.linalg.svd(affine, compute_uv=False)
    return not (values.max() > 0 and values.min() > 1e-6 * values.max())


def _degenerate(what: str) -> ReadError:
    return ReadError(
        f"{what} has a degenerate orientation: its voxel-to-world affine is singular "
        "(e.g. every slice at the same ImagePositionPatient, or a zero or collinear "
        "ImageOrientationPatient), so it cannot be oriented or resampled; fix the header, "
        "or pass orientation=None and pixdim=None to use the stored voxel grid"
    )


def resampled_shape(spatial_shape, affine, orientation=None, pixdim=None) -> tuple[int, ...]:
    """Spatial shape of a volume after :func:`preprocess_scan`'s orientation and resampling.

    Computed by MONAI's own ``Orientation`` and ``Spacing`` in lazy mode on a zero-byte
    stand-in of ``spatial_shape`` with ``affine`` (RAS), so nothing is allocated or
    resampled and the shape is the one the real transforms produce (rotated affines
    included).
    """
    import torch

    with _quiet_monai():
        from monai.data import MetaTensor
        from monai.transforms import Orientation, Spacing

        shape = tuple(int(n) for n in spatial_shape)
        x = MetaTensor(
            torch.zeros((1,) * (len(shape) + 1)).expand(1, *shape),
            affine=torch.as_tensor(np.asarray(affine, dtype=np.float64)),
        )
        if orientation:
            x = Orientation(axcodes=orientation, lazy=True)(x)
        if pixdim is not None:
            x = Spacing(pixdim=tuple(pixdim), mode="bilinear", lazy=True)(x)
        return tuple(int(n) for n in x.peek_pending_shape())


def _check_resampled(shape, affine, what: str, limit: int, orientation, pixdim, source):
    """Refuse a volume whose resampling to ``pixdim`` would create more than ``limit`` voxels."""
    if pixdim is None or affine is None or len(shape) != 3:
        return
    if _singular(affine):
        raise _degenerate(what)
    try:
        out = resampled_shape(shape, affine, orientation, pixdim)
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
        raise ReadError(
            f"{what} could not be oriented or resampled ({type(exc).__name__}: {exc}); check "
            "its orientation and spacing, or pass orientation=None and pixdim=None"
        ) from exc
    voxels = math.prod(out)
    if voxels > limit:
        spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
        raise ReadError(
            f"{what} would have {voxels:,} voxels ({'x'.join(map(str, out))}) once resampled "
            f"from {tuple(round(float(v), 4) for v in spacing)} mm to pixdim="
            f"{tuple(float(p) for p in pixdim)} mm ({source}), above the max_resampled_voxels="
            f"{limit:,} limit; choose a coarser pixdim, pass pixdim=None, or raise "
            "max_resampled_voxels"
        )


def _check_header(path: Path, nifti: bool, what: str, max_voxels: int, resample_to=None) -> bool:
    """Check one NIfTI or DICOM file from its header, before any pixel decoding.

    Returns whether the values may exceed float32 (then the volume is loaded as float64 so
    that NaN and out-of-range values can be told apart).
    """
    wide = False
    if nifti:
        import nibabel as nib

        try:
            img = nib.load(str(path))
            shape = img.shape
            dtype = img.header.get_data_dtype()
            slope, inter = img.header.get_slope_inter()
            affine = img.affine
        except Exception as exc:
            raise ReadError(
                f"{what} could not be read as a scan ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); check that it is a "
                "valid, complete NIfTI or DICOM file"
            ) from exc
        voxels = math.prod(int(n) for n in shape)
        if dtype.kind == "c":
            raise ReadError(
                f"{what}: voxels are complex ({dtype}); save the magnitude or the real part "
                "as a real-valued NIfTI"
            )
        top = float(np.finfo(dtype).max) if dtype.kind == "f" else 2.0 ** (8 * dtype.itemsize)
        top = top * abs(slope if slope is not None else 1.0) + abs(inter or 0.0)
        wide = not top <= _F32_MAX
        if voxels > max_voxels:
            raise _too_many(voxels, max_voxels, what, "from its header")
        if len(shape) >= 3 and resample_to is not None:
            spatial = tuple(int(n) for n in shape[:3])
            _check_resampled(spatial, affine, what, *resample_to, "from its header")
    else:
        ds = _dicom_header(path, what)
        voxels = _dicom_voxels(ds, what)
        _check_rescale(ds, what)
        if voxels > max_voxels:
            raise _too_many(voxels, max_voxels, what, "from its header")
    return wide


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
        with _quiet_monai():
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
    if isinstance(item, np.ndarray) or type(item).__name__ in ("Tensor", "MetaTensor"):
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
    raise ReadError(
        f"scan item {describe_item(item)} of type {type(item).__name__} is not a path or 3-D array"
    )


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


def _check_preprocess(spatial_size, pixdim, limit: int) -> None:
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


def orient_scan(
    img,
    pixdim: Sequence[float] | None = None,
    orientation: str | None = "RAS",
):
    """The per-volume half of :func:`preprocess_scan`: channel mean, orientation and
    resampling to ``pixdim`` (MONAI, on the CPU); returns a (1, D, H, W) float32 tensor."""
    import torch

    with _quiet_monai():
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

    Returns
    -------
    list of tensors of shape ``spatial_size`` on ``device`` (float32), in input order, or a
    :class:`~toolkit.exceptions.ReadError` in place of a volume that became non-finite.
    """
    import torch

    size = tuple(int(n) for n in spatial_size)
    groups: dict[tuple, list[int]] = {}
    for i, v in enumerate(volumes):
        groups.setdefault(tuple(v.shape[-3:]), []).append(i)
    out: list = [None] * len(volumes)
    lo_q, hi_q = percentiles
    for shape, rows in groups.items():
        x = torch.stack([torch.as_tensor(volumes[i]).reshape(shape) for i in rows])
        x = x.to(device=device, dtype=torch.float32)[:, None]  # (B, 1, D, H, W)
        if shape != size:
            x = torch.nn.functional.interpolate(x, size=size, mode="trilinear", align_corners=False)
        x = x[:, 0]
        a_min, a_max = _percentiles(x.reshape(len(rows), -1), (lo_q, hi_q))
        span = (a_max - a_min)[:, None, None, None]
        a_min = a_min[:, None, None, None]
        scaled = ((x - a_min) / torch.where(span == 0, 1.0, span) * 1.0 + 0.0).clamp(0.0, 1.0)
        x = torch.where(span == 0, x - a_min + 0.0, scaled)
        finite = torch.isfinite(x).flatten(1).all(dim=1).tolist()
        for k, i in enumerate(rows):
            out[i] = (
                x[k]
                if finite[k]
                else ReadError("scan became non-finite after preprocessing; check its intensities")
            )
    return out


def preprocess_scan(
    img,
    spatial_size: Sequence[int] = (64, 64, 64),
    pixdim: Sequence[float] | None = None,
    orientation: str | None = "RAS",
    percentiles: tuple[float, float] = (1.0, 99.0),
    device=None,
    as_tensor: bool = False,
):
    """Orient, resample/resize and scale one channel-first volume; returns (D, H, W) float32.

    Multi-channel volumes (e.g. 4-D NIfTI series) are averaged over their channels.
    Intensities are mapped so that the given lower and upper percentiles become 0 and 1
    (clipped), which makes CT and MR volumes comparable. With ``device`` (e.g. a CUDA
    device) resizing and scaling run there; ``as_tensor=True`` returns the torch tensor
    on that device instead of a numpy array. This is MONAI's per-volume pipeline
    (``Orientation``, ``Spacing``, ``Resize``, ``ScaleIntensityRangePercentiles``); encoders
    run :func:`orient_scan` per volume and :func:`resize_and_scale` on batches instead.
    """
    import torch

    x = orient_scan(img, pixdim=pixdim, orientation=orientation)
    with _quiet_monai():
        from monai.transforms import Resize, ScaleIntensityRangePercentiles

        if device is not None:
            x = x.to(device)
        if tuple(x.shape[1:]) != tuple(spatial_size):
            x = Resize(spatial_size=tuple(spatial_size), mode="trilinear")(x)
        lo, hi = percentiles
        x = ScaleIntensityRangePercentiles(lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True)(x)
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
    :func:`resize_and_scale` finishes it (in batches). Returns (1, D, H, W) float32 (CPU)."""
    _check_preprocess(spatial_size, pixdim, max_resampled_voxels)
    resample_to = (max_resampled_voxels, orientation, pixdim)
    img, what = _load(item, max_voxels, resample_to)
    _check_affine(img, what, orientation, pixdim)
    source = "from its affine, before resampling"
    _check_resampled(tuple(img.shape[1:]), _affine(img), what, *resample_to, source)
    try:
        return orient_scan(img, pixdim=pixdim, orientation=orientation)
    except ReadError as exc:
        raise ReadError(f"{what}: {exc}") from exc


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
        Largest stored volume accepted, from the header before decoding (~6 bytes per voxel
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
    _check_preprocess(size, pixdim, max_resampled_voxels)
    resample_to = (max_resampled_voxels, orientation, pixdim)
    img, what = _load(item, max_voxels, resample_to)
    _check_affine(img, what, orientation, pixdim)
    source = "from its affine, before resampling"
    _check_resampled(tuple(img.shape[1:]), _affine(img), what, *resample_to, source)
    try:
        return preprocess_scan(img, **preprocess)
    except ReadError as exc:
        raise ReadError(f"{what}: {exc}") from exc
