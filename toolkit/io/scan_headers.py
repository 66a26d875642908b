"""Checks of a scan's headers before its voxels are decoded: voxel counts (NIfTI header,
DICOM elements), rescale values, the affine, and the grid resampling would create (see
:mod:`toolkit.io.scan` for the limits and the memory they bound).
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import warnings
from pathlib import Path

import numpy as np

from toolkit.exceptions import ReadError
from toolkit.io._paths import file_kind, pair_suffix

#: Largest volume accepted, in voxels (``max_voxels``; all channels/time points counted),
#: checked from the header before decoding. Decoding peaks at ~8 bytes per voxel (see
#: toolkit.io.scan's docstring): 2**28 voxels (512 x 512 x 1024) is about 2.1 GB.
MAX_VOXELS = 2**28
#: Largest grid the preprocessing creates, in voxels (``max_resampled_voxels``): the volume
#: resampled to ``pixdim`` (computed from the header or affine before resampling) and
#: ``spatial_size``. Resampling peaks at ~29 bytes per voxel: 2**25 voxels is about 1 GB.
MAX_RESAMPLED_VOXELS = 2**25
#: pydicom reads header elements larger than this lazily (a huge private tag is not loaded).
_DEFER_SIZE = "1 MB"
#: Largest relative departure of a DICOM slice gap from the series' smallest gap.
_SPACING_TOLERANCE = 0.01
_F32_MAX = float(np.finfo(np.float32).max)

_NIFTI_SUFFIXES = (".nii", ".nii.gz", ".img", ".hdr")


#: MONAI's logger that says "nvImageCodec is not available" on every DICOM-capable read.
_CODEC_LOGGER = "monai.data.nvimgcodec_pydicom_plugin"


@contextlib.contextmanager
def quiet_monai():
    """Silence MONAI's optional-codec warnings (and its codec logger's warning) for this
    call only."""
    import logging

    logger = logging.getLogger(_CODEC_LOGGER)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
            warnings.filterwarnings("ignore", category=UserWarning, module=r"monai\..*")
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"monai\..*")
            yield
    finally:
        logger.setLevel(level)


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
    positions: list = []
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
        positions.append(_slice_position(ds, f.name))
    if len(series) > 1:
        summary = "; ".join(
            f"{uid}: {len(names)} files (e.g. {names[0]})" for uid, names in series.items()
        )
        raise ReadError(
            f"DICOM folder '{path}' mixes {len(series)} series ({summary}); "
            "put each series in its own folder"
        )
    _check_slice_spacing(positions, path)


def _slice_position(ds, name: str):
    """(position along the slice normal in mm, file name) of a single-frame slice with an
    ImagePositionPatient and ImageOrientationPatient; None otherwise."""
    try:
        if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1:
            return None
        orient = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
        pos = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
    except (AttributeError, TypeError, ValueError):
        return None
    if orient.shape != (6,) or pos.shape != (3,):
        return None
    normal = np.cross(orient[:3], orient[3:])
    if not np.isfinite(normal).all() or not np.isfinite(pos).all():
        return None
    return float(pos @ normal), name


def _check_slice_spacing(positions: list, path: Path) -> None:
    """Refuse a series whose slices are not evenly spaced along their normal (gaps within
    1 % of the smallest).

    MONAI gives a series one slice spacing, so a missing slice (or a duplicate) would
    stretch or squeeze the whole volume silently: 0, 5, 15 mm read as 3 slices 7.5 mm
    apart. Series whose slices lack a position (or hold several frames) are left to the
    reader (a singular affine is refused later).
    """
    if len(positions) < 3 or any(p is None for p in positions):
        return
    ordered = sorted(positions)
    z = np.asarray([p for p, _ in ordered])
    gaps = np.diff(z)
    if gaps.max() <= 0:
        return  # every slice at one position: the singular affine is refused later
    step = float(gaps[gaps > 0].min())  # a missing slice only widens gaps
    tol = max(_SPACING_TOLERANCE * step, 1e-3)
    bad = np.flatnonzero(np.abs(gaps - step) > tol)
    if bad.size == 0:
        return
    k = int(bad[np.argmax(np.abs(gaps[bad] - step))])
    missing = round(gaps[k] / step) - 1
    hint = (
        f" ({missing} slice(s) missing?)"
        if gaps[k] > step and abs(gaps[k] / step - round(gaps[k] / step)) < 0.1
        else ""
    )
    raise ReadError(
        f"DICOM folder '{path}' has unevenly spaced slices: '{ordered[k][1]}' and "
        f"'{ordered[k + 1][1]}' are {gaps[k]:.4g} mm apart along the slice normal where the "
        f"closest slices are {step:.4g} mm apart{hint} ({bad.size} uneven gap(s) in "
        f"{len(z)} slices); the volume would be given one uniform, wrong spacing; restore "
        "the missing slices or remove the duplicates"
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

    with quiet_monai():
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
