"""Image files <-> the RGBA layer the pipeline edits, written back in the file's own mode and depth.

Pillow opens 16-bit grey as "I;16" (whose `.convert("RGBA")` clips every value to white) and keeps
only the high byte of 16-bit colour PNGs; `read_image` reads both at full depth as u16 RGBA, the
depth GIMP sends for 16-bit layers. `ImageFile.encode` writes the edit back as the input was: grey
stays grey (its channels are collapsed after the edit, which may add a trace of colour), alpha stays
or stays absent, 16 bits stay 16 bits. Palette ("P"/"PA") and CMYK-like images are edited through
RGB(A) and written as RGB(A); bilevel ("1") as 8-bit grey (`written_as` says which). The size is
checked against the daemon's limits (protocol MAX_SIDE / MAX_PIXELS) from the header, before any
pixel is decoded, so a file that claims 30000x30000 costs nothing.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from gimp_draggan_plugin import protocol as P

GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# 16-bit colour PNG raw modes Pillow reduces to 8 bits: the high bytes come from them, the low
# bytes from the little-endian twin (same bit count, so the same PNG unfiltering).
_PNG16 = {"RGB;16B": ("RGB;16L", False), "RGBA;16B": ("RGBA;16L", True)}


def size_limit_error(path: str | Path, width: int, height: int) -> str | None:
    """The one-line refusal of a width x height image, or None when the daemon takes that size."""
    if width <= P.MAX_SIDE and height <= P.MAX_SIDE and width * height <= P.MAX_PIXELS:
        return None
    return (
        f"{path}: the image is {width}x{height}, over the limit of {P.MAX_SIDE} px a side "
        f"and {P.MAX_PIXELS // 2**20} Mpx; crop or scale it down first"
    )


@dataclass(frozen=True)
class ImageFile:
    """An image file as a u8/u16 RGBA layer, and what it must be written back as."""

    path: Path
    rgba: np.ndarray  # [H, W, 4] uint8 or uint16 (read-only use: the edit pastes into a copy)
    grey: bool  # Written back as grey (L / LA / 16-bit grey).
    alpha: bool  # Written back with an alpha channel.
    source_mode: str  # Pillow's mode, or "RGB;16" / "RGBA;16" / "LA;16" for 16-bit colour PNGs.

    @property
    def depth(self) -> str:
        return "u16" if self.rgba.dtype == np.uint16 else "u8"

    @property
    def width(self) -> int:
        return int(self.rgba.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgba.shape[0])

    @property
    def written_as(self) -> str:
        bits = "16-bit" if self.depth == "u16" else "8-bit"
        kind = ("grey" if self.grey else "RGB") + ("+alpha" if self.alpha else "")
        return f"{bits} {kind}"

    def encode(self, rgba: np.ndarray) -> Any:
        """The edited ``[H, W, 4]`` layer (this file's dtype) as an image to save like the input:
        an object with ``save(fp, format=...)`` (a Pillow image, or a 16-bit PNG Pillow cannot
        write)."""
        if rgba.dtype != self.rgba.dtype or rgba.shape != self.rgba.shape:
            raise ValueError(
                f"result {rgba.dtype} {list(rgba.shape)} does not match the input "
                f"{self.rgba.dtype} {list(self.rgba.shape)}"
            )
        if self.grey:
            luma = np.rint(rgba[:, :, :3].astype(np.float32).mean(axis=2)).astype(rgba.dtype)
            planes = np.dstack([luma, rgba[:, :, 3]]) if self.alpha else luma
        else:
            planes = rgba if self.alpha else rgba[:, :, :3]
        planes = np.ascontiguousarray(planes)
        if self.depth == "u8" or planes.ndim == 2:  # Pillow writes u8 and 16-bit grey ("I;16").
            return Image.fromarray(planes)
        return Png16(planes)


class Png16:
    """A 16-bit grey+alpha, RGB or RGBA PNG (Pillow writes none of these); `save` as Pillow's."""

    def __init__(self, planes: np.ndarray) -> None:
        if planes.dtype != np.uint16 or planes.ndim != 3 or planes.shape[2] not in (2, 3, 4):
            raise ValueError(
                f"Png16 takes [H, W, 2|3|4] uint16, got {planes.dtype} {list(planes.shape)}"
            )
        self.planes = planes

    def save(self, fp: str | Path | IO[bytes], format: str = "PNG") -> None:
        if format.upper() != "PNG":
            raise ValueError(f"a 16-bit colour image can only be written as PNG, not {format}")
        h, w, c = self.planes.shape
        rows = self.planes.astype(">u2").view(np.uint8).reshape(h, w * c * 2)
        # Filter "Sub" (1) on every row: each byte minus the same byte of the pixel to its left.
        sub = rows.copy()
        sub[:, c * 2 :] -= rows[:, : -c * 2]
        data = np.hstack([np.ones((h, 1), np.uint8), sub]).tobytes()

        def chunk(kind: bytes, body: bytes) -> bytes:
            return (
                struct.pack(">I", len(body))
                + kind
                + body
                + struct.pack(">I", zlib.crc32(kind + body))
            )

        colour_type = {2: 4, 3: 2, 4: 6}[c]
        png = (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(data, 6))
            + chunk(b"IEND", b"")
        )
        if isinstance(fp, (str, Path)):
            Path(fp).write_bytes(png)
        else:
            fp.write(png)


def _png_size(path: str | Path) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR, or None when it is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) == 24 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        return int(w), int(h)
    return None


def read_image(path: str | Path) -> ImageFile:
    """Read ``path`` as a u8 or u16 RGBA layer; ValueError (one line) for anything unusable."""
    try:
        with warnings.catch_warnings():  # Pillow warns from 89 Mpx; our own limit is lower.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            too_big = size_limit_error(path, *im.size)
            if too_big:
                raise ValueError(too_big)
            return _decode(Path(path), im)
    except Image.DecompressionBombError as exc:  # Pillow's own limit, before ours could look.
        size = _png_size(path)
        if size is not None and (message := size_limit_error(path, *size)):
            raise ValueError(message) from None
        raise ValueError(f"{path}: {exc}") from None
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise ValueError(f"{path}: cannot read it as an image ({exc})") from None


def _decode(path: Path, im: Any) -> ImageFile:
    mode = im.mode
    raw = _png_rawmode(im)
    if raw == "LA;16B":
        # 16-bit grey+alpha has 4 bytes a pixel, as 8-bit RGBA: read the bytes as they are.
        im.tile = [_with_rawmode(im.tile[0], "RGBA")]
        im.load()
        la = np.asarray(im, dtype=np.uint8).reshape(im.size[1], im.size[0], 2, 2)
        la16 = la[..., 0].astype(np.uint16) << 8 | la[..., 1]
        grey = la16[:, :, 0]
        return ImageFile(path, np.dstack([grey, grey, grey, la16[:, :, 1]]), True, True, "LA;16")
    if raw in _PNG16:
        low_raw, alpha = _PNG16[raw]
        tile = im.tile[0]
        im.load()
        high = np.asarray(im, dtype=np.uint8)
        with Image.open(path) as again:
            again.tile = [_with_rawmode(tile, low_raw)]
            again.load()
            low = np.asarray(again, dtype=np.uint8)
        rgba = high.astype(np.uint16) << 8 | low
        if not alpha:
            rgba = np.dstack([rgba, np.full(rgba.shape[:2], 65535, np.uint16)])
        return ImageFile(path, rgba, False, alpha, raw[:-1])
    im.load()
    if mode in GREY_MODES:
        alpha = mode in ("LA", "La")
        if mode.startswith("I") or mode == "F":
            values = np.asarray(im, dtype=np.float64)
            scale = 65535.0 if mode == "F" else 1.0
            grey = np.clip(np.rint(values * scale), 0, 65535).astype(np.uint16)
            opaque = np.full(grey.shape, 65535, np.uint16)
            return ImageFile(path, np.dstack([grey, grey, grey, opaque]), True, False, mode)
        return ImageFile(path, np.asarray(im.convert("RGBA"), dtype=np.uint8), True, alpha, mode)
    alpha = mode in ("RGBA", "RGBa", "PA") or "transparency" in im.info
    return ImageFile(path, np.asarray(im.convert("RGBA"), dtype=np.uint8), False, alpha, mode)


def _png_rawmode(im: Any) -> str | None:
    if im.format != "PNG" or len(im.tile) != 1:
        return None
    args = im.tile[0].args
    return args if isinstance(args, str) else args[0] if isinstance(args, tuple) else None


def _with_rawmode(tile: Any, rawmode: str) -> Any:
    args = tile.args
    new_args = rawmode if isinstance(args, str) else (rawmode, *args[1:])
    return tile._replace(args=new_args)


def read_mask(path: str | Path, width: int, height: int) -> bytes:
    """A greyscale mask file of ``width`` x ``height`` -> u8 bytes, 255 = may move."""
    layer = read_image(path)
    if (layer.width, layer.height) != (width, height):
        raise ValueError(
            f"mask {path}: is {layer.width}x{layer.height} but must be "
            f"{width}x{height} (the image's size; white = may move, black = keep)"
        )
    return mask_bytes(layer)


def mask_bytes(layer: ImageFile) -> bytes:
    """A mask image's grey (Pillow's "L" weights) as u8 bytes, 255 = may move."""
    luma = layer.rgba[:, :, :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if layer.depth == "u16":
        luma *= np.float32(255.0 / 65535.0)
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8).tobytes()
