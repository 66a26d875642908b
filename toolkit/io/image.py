"""Image reader: PIL for files, numpy arrays as they are.

The pixel count (``max_pixels``) is checked before decoding: for files from the header that
``PIL.Image.open`` reads (the pixel data is decoded only later), for arrays from their shape.
Pillow's own decompression-bomb guard (``PIL.Image.MAX_IMAGE_PIXELS``) still applies on top.
Paths are checked with ``os.stat`` first: FIFOs, devices and sockets are never opened.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from toolkit._utils import describe_item
from toolkit.exceptions import ReadError
from toolkit.io._checks import as_finite_float32, check_real_dtype
from toolkit.io._paths import as_path, check_path

#: Largest image accepted, in pixels (``max_pixels``); larger ones are refused before decoding.
MAX_PIXELS = 50_000_000


def _scale(arr: np.ndarray, value_range, what: str) -> np.ndarray:
    if arr.dtype.kind == "f":
        arr = as_finite_float32(arr, what, "pixel values")
    if value_range is not None:
        lo, hi = map(float, value_range)
        if hi <= lo:
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
        return np.clip((arr.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.dtype.itemsize == 1:
            top = 255.0
        elif arr.dtype.itemsize == 2:
            top = 65535.0
        else:
            peak = float(arr.max(initial=0))
            top = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
        return np.clip(arr.astype(np.float32) / top, 0.0, 1.0)
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return arr
    # Floats on another scale: min-max per image (pass value_range to keep absolute levels).
    # In float64: hi - lo may overflow float32 for extreme (finite) values.
    if hi <= lo:
        return np.zeros_like(arr)
    return ((arr.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)


def read_image(
    item: Any, value_range: tuple[float, float] | None = None, *, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Read one image as a float32 array of shape (H, W, C) in [0, 1], C in {1, 3}.

    Parameters
    ----------
    item : str, path-like or ndarray
        A PNG/JPEG/BMP/TIFF file or an array of shape (H, W) (grey), (H, W, 1),
        (H, W, 3) (RGB) or (H, W, 4) (RGBA; alpha is dropped).
    value_range : (low, high), optional
        Intensity range mapped to [0, 1]. By default integer images are divided by their
        type's range (8- or 16-bit), float images in [0, 1] are kept, and other float
        images are min-max scaled per image.
    max_pixels : int, default=50_000_000 (:data:`MAX_PIXELS`)
        Largest image accepted (height x width), checked before decoding for files and
        before any conversion for arrays.

    Returns
    -------
    image : ndarray of shape (H, W, C), float32
    """
    path = as_path(item)
    if path is not None:
        what = f"image file '{path}'"
        check_path(path, "image")
        from PIL import Image

        try:
            with warnings.catch_warnings():
                # The pixel limit is enforced below with a clearer message.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(path)
            with img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ReadError(
                        f"{what} is {w}x{h} pixels, above the {max_pixels:,} pixel limit; "
                        "downscale it before encoding (or raise max_pixels)"
                    )
                if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                    arr = np.asarray(img, dtype=np.int64)
                    arr = np.clip(arr, 0, 65535).astype(np.uint16)
                elif img.mode in ("L", "1"):
                    arr = np.asarray(img.convert("L"))
                elif img.mode == "F":
                    arr = np.asarray(img, dtype=np.float32)
                else:
                    arr = np.asarray(img.convert("RGB"))
        except ReadError:
            raise
        except Image.DecompressionBombError as exc:
            raise ReadError(
                f"{what} is above Pillow's decompression-bomb pixel limit ({exc}); downscale it"
            ) from exc
        except Exception as exc:
            raise ReadError(
                f"{what} could not be decoded as an image ({type(exc).__name__}: {exc}); "
                "check that it is a PNG/JPEG file and not truncated"
            ) from exc
    elif isinstance(item, np.ndarray):
        what = f"image item {describe_item(item)}"
        arr = item
        if arr.dtype.kind not in "biufc":
            raise ReadError(f"{what}: expected a numeric array, got dtype {arr.dtype}")
        check_real_dtype(arr, what, "pixel values", allow_bool=True)
        if arr.ndim not in (2, 3):
            raise ReadError(
                f"{what}: expected an image of shape (H, W) or (H, W, C), got {arr.ndim} "
                "dimensions; pass one image per cell (for a 3-D volume use ScanEncoder)"
            )
        if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
            raise ReadError(
                f"{what}: the last axis must hold 1, 3 or 4 channels (H, W, C), got {arr.shape[2]}"
            )
        if arr.size == 0:
            raise ReadError(f"{what} is empty")
        if arr.shape[0] * arr.shape[1] > max_pixels:
            raise ReadError(
                f"{what} is {arr.shape[1]}x{arr.shape[0]} pixels, above the {max_pixels:,} "
                "pixel limit; downscale it (or raise max_pixels)"
            )
    else:
        raise ReadError(
            f"image item {describe_item(item)} of type {type(item).__name__} is not a path or array"
        )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(_scale(arr, value_range, what), dtype=np.float32)
