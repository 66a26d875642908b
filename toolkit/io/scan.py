"""3-D scan reader: MONAI ``LoadImage`` for NIfTI and DICOM, MONAI transforms to preprocess."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit._utils import describe_item
from toolkit.exceptions import ReadError
from toolkit.io._paths import as_path, check_exists

#: Largest volume accepted, in voxels (refused before preprocessing).
MAX_VOXELS = 1024**3

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
    return name.endswith(_NIFTI_SUFFIXES)


def _check_dicom_folder(path: Path) -> None:
    import pydicom

    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ReadError(f"DICOM folder '{path}' holds no files")
    series: dict[str, list[str]] = {}
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception as exc:
            raise ReadError(
                f"file '{f}' in DICOM folder '{path}' is not a readable DICOM file "
                f"({type(exc).__name__}: {exc}); remove it from the series folder"
            ) from exc
        series.setdefault(str(getattr(ds, "SeriesInstanceUID", "unknown")), []).append(f.name)
    if len(series) > 1:
        summary = "; ".join(
            f"{uid}: {len(names)} files (e.g. {names[0]})" for uid, names in series.items()
        )
        raise ReadError(
            f"DICOM folder '{path}' mixes {len(series)} series ({summary}); "
            "put each series in its own folder"
        )


def load_scan(item: Any):
    """Read one scan as a channel-first MONAI ``MetaTensor`` of shape (C, D, H, W).

    Parameters
    ----------
    item : str, path-like or ndarray
        A NIfTI file (``.nii``/``.nii.gz``), a DICOM file or a folder holding one DICOM
        series, or a 3-D array (D, H, W) (a 4-D array (1, D, H, W) is accepted too).
    """
    path = as_path(item)
    if path is not None:
        check_exists(path, "scan")
        if path.is_dir():
            _check_dicom_folder(path)
            reader, kind = "PydicomReader", "DICOM series folder"
        elif _is_nifti(path):
            reader, kind = "NibabelReader", "NIfTI file"
        else:
            reader, kind = "PydicomReader", "DICOM file"
        what = f"{kind} '{path}'"
        with _quiet_monai():
            from monai.transforms import LoadImage

            try:
                img = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)(
                    str(path)
                )
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
        if int(np.prod(img.shape)) > MAX_VOXELS:
            raise ReadError(f"{what} has {int(np.prod(img.shape)):,} voxels, above the limit")
        return img
    if isinstance(item, np.ndarray) or type(item).__name__ in ("Tensor", "MetaTensor"):
        arr = np.asarray(item)
        what = f"scan item {describe_item(arr)}"
        if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
            raise ReadError(f"{what}: expected a numeric volume")
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 3:
            raise ReadError(
                f"{what}: expected a 3-D volume of shape (D, H, W), got {arr.ndim} dimensions"
                + ("; for a 2-D image use ImageEncoder" if arr.ndim == 2 else "")
            )
        if min(arr.shape) < 1:
            raise ReadError(f"{what} is empty")
        if arr.size > MAX_VOXELS:
            raise ReadError(f"{what} has {arr.size:,} voxels, above the limit")
        arr = arr.astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise ReadError(f"{what} contains NaN or infinite voxels")
        import torch

        return torch.from_numpy(arr[None])
    raise ReadError(
        f"scan item {describe_item(item)} of type {type(item).__name__} is not a path or 3-D array"
    )


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
    on that device instead of a numpy array.
    """
    import torch

    with _quiet_monai():
        from monai.data import MetaTensor
        from monai.transforms import Orientation, Resize, ScaleIntensityRangePercentiles, Spacing

        x = img
        if x.shape[0] > 1:
            meta = getattr(x, "meta", None)
            mean = torch.as_tensor(x).float().mean(dim=0, keepdim=True)
            x = MetaTensor(mean, meta=meta) if meta is not None else mean
        is_meta = isinstance(x, MetaTensor) and "affine" in getattr(x, "meta", {})
        if orientation and is_meta:
            x = Orientation(axcodes=orientation)(x)
        if pixdim is not None and is_meta:
            x = Spacing(pixdim=tuple(pixdim), mode="bilinear")(x)
        x = torch.as_tensor(x).float()
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


def read_scan(item: Any, **preprocess) -> np.ndarray:
    """Read and preprocess one scan (see :func:`load_scan` and :func:`preprocess_scan`).

    Returns
    -------
    volume : ndarray of shape spatial_size, float32 in [0, 1]
    """
    return preprocess_scan(load_scan(item), **preprocess)
