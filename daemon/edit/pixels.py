"""RGBA layer pixels as bytes (GIMP's u8 / u16 / float) <-> numpy arrays.

Depth conversion happens only at this edge: the pipeline reads the bytes without copying
(`rgba_view`), converts just the region it needs to float32 (`to_float`), and writes its patch
back in the request's own depth (`from_float`). u16 and f32 are native-endian, as GEGL hands them
out. Float layers may hold values outside [0, 1] (high dynamic range); they are kept as they are
and clipped only where they enter the model.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from gimp_draggan.edit.types import DEPTHS

DTYPES: dict[str, np.dtype] = {
    "u8": np.dtype(np.uint8),
    "u16": np.dtype(np.uint16),
    "f32": np.dtype(np.float32),
}
_SCALE = {"u8": 255.0, "u16": 65535.0, "f32": 1.0}


def check_depth(depth: str) -> None:
    if depth not in DEPTHS:
        raise ValueError(f"pixel depth must be one of {sorted(DEPTHS)}, got {depth!r}")


def depth_of(arr: np.ndarray) -> str:
    """The depth name of ``arr``'s dtype (the inverse of `DTYPES`)."""
    for name, dtype in DTYPES.items():
        if arr.dtype == dtype:
            return name
    raise ValueError(f"layer pixels must be uint8, uint16 or float32, got {arr.dtype}")


def rgba_view(pixels: bytes, width: int, height: int, depth: str) -> np.ndarray:
    """Read-only ``[H, W, 4]`` view of the bytes in their own dtype (no copy)."""
    check_depth(depth)
    if width <= 0 or height <= 0:
        raise ValueError(f"layer size must be positive, got {width}x{height}")
    expected = width * height * 4 * DEPTHS[depth]
    if len(pixels) != expected:
        raise ValueError(
            f"pixels: expected {expected} bytes for a {width}x{height} RGBA {depth} layer, "
            f"got {len(pixels)}"
        )
    return np.frombuffer(pixels, dtype=DTYPES[depth]).reshape(height, width, 4)


def mask_view(mask: bytes, width: int, height: int) -> np.ndarray:
    """Read-only ``[H, W]`` uint8 view of a selection mask (255 = fully selected)."""
    if len(mask) != width * height:
        raise ValueError(
            f"mask: expected {width * height} bytes (one u8 per pixel of the {width}x{height} "
            f"layer), got {len(mask)}"
        )
    return np.frombuffer(mask, dtype=np.uint8).reshape(height, width)


def to_float(arr: np.ndarray, depth: str) -> np.ndarray:
    """Pixels of ``depth`` -> float32 with 1.0 = full intensity (a new array)."""
    check_depth(depth)
    if arr.dtype != DTYPES[depth]:
        raise ValueError(f"array dtype {arr.dtype} does not match depth {depth!r}")
    out = arr.astype(np.float32)
    if depth != "f32":
        out *= np.float32(1.0 / _SCALE[depth])
    return out


def from_float(arr: np.ndarray, depth: str) -> np.ndarray:
    """float32 (1.0 = full) -> pixels of ``depth``: integers rounded and clipped, floats as-is."""
    check_depth(depth)
    if depth == "f32":
        return np.ascontiguousarray(arr, dtype=np.float32)
    scaled = np.rint(np.asarray(arr, dtype=np.float32) * np.float32(_SCALE[depth]))
    return np.clip(scaled, 0, _SCALE[depth]).astype(DTYPES[depth])


def to_bytes(arr: np.ndarray) -> bytes:
    """Row-major bytes of an ``[H, W, 4]`` array in its own dtype."""
    if arr.ndim != 3 or arr.shape[2] != 4:
        raise ValueError(f"expected RGBA [H, W, 4], got shape {list(arr.shape)}")
    return np.ascontiguousarray(arr).tobytes()


def preview_jpeg(img: np.ndarray, size: int) -> bytes:
    """uint8 ``[H, W, C]`` -> the small JPEG a progress reply carries, longest side at most
    ``size`` (the wire's preview format)."""
    im = Image.fromarray(img[:, :, :3])
    im.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return buf.getvalue()
