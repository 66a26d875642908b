"""Image reader: PIL for files, numpy arrays as they are, one intensity rule for both.

The pixel count (``max_pixels``) is checked before decoding: for files from the header that
``PIL.Image.open`` reads (the pixel data is decoded only later), for arrays from their shape.
Pillow's own decompression-bomb guard (``PIL.Image.MAX_IMAGE_PIXELS``) still applies on top.
Paths are checked with ``os.stat`` first: FIFOs, devices and sockets are never opened.

A file's EXIF Orientation tag (2-8: a camera held sideways) is applied to its pixels, as
image viewers do (``PIL.ImageOps.exif_transpose``). Files holding several frames (animated
GIF/PNG/WebP, multi-page TIFF) are refused naming the frame count: reading only the first
frame would silently drop the rest.

Truncated files are refused, never zero-filled: Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES``
is forced off while a file is decoded, and a PNG's compressed pixel data (IDAT) is checked
to hold every row its header declares (Pillow fills missing rows with zeros silently).

Intensity rule (files and arrays alike; a file is first read as the array of its own type:
8-bit modes as uint8, ``I;16`` as uint16, ``I`` as int32, ``F`` as float32):

- with ``value_range=(low, high)``: ``(x - low) / (high - low)`` clipped to [0, 1], any type;
- boolean: 0 or 1; uint8: x / 255; uint16: x / 65535 (their full range);
- any other integer type (signed, or wider than 16 bits, e.g. an int32 TIFF) has no standard
  intensity scale and is refused (a ``ReadError`` naming the type and value range): pass
  ``value_range`` or convert it to uint8/uint16. Nothing is clipped or scaled by its peak;
- floats already in [0, 1] are kept, other floats are min-max scaled per image.
"""

from __future__ import annotations

import contextlib
import math
import struct
import threading
import warnings
import zlib
from typing import Any

import numpy as np

from toolkit._utils import describe_item
from toolkit.exceptions import ReadError
from toolkit.io._checks import as_finite_float32, check_real_dtype
from toolkit.io._paths import as_path, check_path

#: Largest image accepted, in pixels (``max_pixels``); larger ones are refused before decoding.
MAX_PIXELS = 50_000_000

_FULL_RANGE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
# Pillow modes read as arrays of their own type (int32, float32, 16-bit).
_PIL_NATIVE = frozenset({"I", "F", "I;16", "I;16B", "I;16L", "I;16N", "I;16S"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # fmt: skip
_TRUNCATED_LOCK = threading.Lock()


@contextlib.contextmanager
def _no_truncated_images():
    """Pillow's LOAD_TRUNCATED_IMAGES off for this decode (restored after)."""
    from PIL import ImageFile

    with _TRUNCATED_LOCK:
        saved = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _png_row_bytes(width: int, height: int, depth: int, color: int, interlace: int) -> int:
    """Bytes of filtered scanlines a PNG's IDAT stream must inflate to."""
    bits = depth * _PNG_CHANNELS.get(color, 4)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        w, h = math.ceil(max(width - x0, 0) / dx), math.ceil(max(height - y0, 0) / dy)
        if w and h:
            total += h * (1 + math.ceil(w * bits / 8))
    return total


def _check_png_complete(path, what: str) -> None:
    """Refuse a PNG whose IDAT data inflates to fewer bytes than its rows need.

    The stream is inflated in pieces and discarded (memory stays small); it stops as soon as
    the declared amount is reached.
    """
    inflater = zlib.decompressobj()
    with open(path, "rb") as fh:
        if fh.read(8) != _PNG_SIGNATURE:
            return
        expected = produced = None
        while True:
            head = fh.read(8)
            if len(head) < 8:
                break
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IHDR":
                data = fh.read(length)
                if len(data) < 13:
                    return  # Pillow reports a broken header itself
                width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", data[:13])
                expected, produced = _png_row_bytes(width, height, depth, color, interlace), 0
                fh.seek(4, 1)
                continue
            if kind == b"IDAT" and expected is not None:
                left = length
                while left > 0 and produced < expected:
                    piece = fh.read(min(left, 1 << 16))
                    if not piece:
                        break
                    left -= len(piece)
                    data = inflater.decompress(piece, expected - produced + 1)
                    produced += len(data)
                    while inflater.unconsumed_tail and produced <= expected:
                        data = inflater.decompress(
                            inflater.unconsumed_tail, expected - produced + 1
                        )
                        produced += len(data)
                        if not data:
                            break
                fh.seek(left + 4, 1)
                if produced >= expected:
                    return
                continue
            if kind == b"IEND":
                break
            fh.seek(length + 4, 1)
    if expected is not None and produced < expected:
        raise ReadError(
            f"{what} is truncated: its compressed pixel data (IDAT) holds {produced:,} of the "
            f"{expected:,} bytes its {width}x{height} header declares, so rows are missing "
            "(they would be returned as zeros); re-export or remove the file"
        )


def _check_single_frame(img, what: str) -> None:
    """Refuse an animated GIF/PNG/WebP or a multi-page TIFF: one cell holds one image.

    MPO files (a camera JPEG with extra pictures, e.g. a preview) are kept: by that
    format's definition the first picture is the image itself.
    """
    if img.format == "MPO" or not getattr(img, "is_animated", False):
        return
    raise ReadError(
        f"{what} holds {img.n_frames} frames (an animated or multi-page {img.format}); "
        "the image reader takes one image per cell and would keep only the first: save "
        "each frame as its own file (one row each), or pass the stack as a 3-D array to "
        "ScanEncoder"
    )


def _decode_file(path, what: str, max_pixels: int) -> np.ndarray:
    """The pixels of an image file as an array of the file's own type."""
    from PIL import Image, ImageOps

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
            _check_single_frame(img, what)
            if img.format == "PNG":
                _check_png_complete(path, what)
            with _no_truncated_images():
                img.load()
            # The EXIF Orientation tag (a camera's rotation, 2-8) is applied, as viewers do.
            ImageOps.exif_transpose(img, in_place=True)
            if img.mode in _PIL_NATIVE:
                return np.asarray(img)
            if img.mode in ("L", "1"):
                return np.asarray(img.convert("L"))
            return np.asarray(img.convert("RGB"))
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


def check_value_range(value_range) -> tuple[float, float]:
    """``value_range`` as two floats ``(low, high)`` with finite ``low < high``; else ValueError."""
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"value_range must be (low, high) with two numbers, got {value_range!r}"
        ) from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(
            f"value_range must be (low, high) with finite low < high, got {value_range!r}"
        )
    return lo, hi


def _scale(arr: np.ndarray, value_range, what: str) -> np.ndarray:
    """Map pixel values to [0, 1] by the module's intensity rule (see its docstring)."""
    if arr.dtype.kind == "f":
        arr = as_finite_float32(arr, what, "pixel values")
    if value_range is not None:
        lo, hi = check_value_range(value_range)
        return np.clip((arr.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if arr.dtype.kind in "iu":
        top = _FULL_RANGE.get(arr.dtype.newbyteorder("="))
        if top is None:
            raise ReadError(
                f"{what}: {arr.dtype.name} pixel values (from {int(arr.min()):,} to "
                f"{int(arr.max()):,}) have no standard intensity scale (only uint8, 0-255, and "
                "uint16, 0-65535, do); pass value_range=(low, high) to map them to [0, 1], or "
                "convert the image to uint8 or uint16"
            )
        return arr.astype(np.float32) / np.float32(top)
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return arr
    # Floats on another scale: min-max per image (pass value_range to keep absolute levels).
    # In float64: hi - lo may overflow float32 for extreme (finite) values.
    if hi <= lo:
        return np.zeros_like(arr)
    return ((arr.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)


def _check_array(arr: np.ndarray, what: str, max_pixels: int) -> None:
    """An image array: numeric and real, (H, W) or (H, W, 1/3/4), not empty, not too large."""
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


def read_image(
    item: Any, value_range: tuple[float, float] | None = None, *, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Read one image as a float32 array of shape (H, W, C) in [0, 1], C in {1, 3}.

    Parameters
    ----------
    item : str, path-like or ndarray
        A PNG/JPEG/BMP/TIFF file (one frame; its EXIF orientation applied) or an array of
        shape (H, W) (grey), (H, W, 1), (H, W, 3) (RGB) or (H, W, 4) (RGBA; alpha is
        dropped).
    value_range : (low, high), optional
        Intensity range mapped to [0, 1] (values outside are clipped), for any type. By
        default uint8 and uint16 images are divided by their type's full range, other
        integer types (signed, wider than 16 bits: an int32 TIFF) are refused, float images
        in [0, 1] are kept and other float images are min-max scaled per image; files follow
        the same rule as arrays of their type (see the module docstring).
    max_pixels : int, default=50_000_000 (:data:`MAX_PIXELS`)
        Largest image accepted (height x width), checked before decoding for files and
        before any conversion for arrays.

    Returns
    -------
    image : ndarray of shape (H, W, C), float32

    Raises
    ------
    ReadError
        Naming the item: undecodable or truncated file, several frames (an animated GIF
        or PNG, a multi-page TIFF), too many pixels, bad shape,
        complex/non-numeric values, NaN or out-of-float32-range values, an integer type
        without a standard scale.
    """
    path = as_path(item)
    if path is not None:
        what = f"image file '{path}'"
        check_path(path, "image")
        arr = _decode_file(path, what, max_pixels)
    elif isinstance(item, np.ndarray):
        what = f"image item {describe_item(item)}"
        arr = item
        _check_array(arr, what, max_pixels)
    else:
        raise ReadError(
            f"image item {describe_item(item)} of type {type(item).__name__} is not a path or array"
        )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(_scale(arr, value_range, what), dtype=np.float32)
