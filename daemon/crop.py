"""Layer <-> model space: the square crop the generator sees, and the maps between the two.

The crop is a square box around the selection ∪ the points, padded by a margin and kept centred on
them (aligned models such as FFHQ or AFHQ expect the subject in the middle). Where the square
leaves the layer, the missing part is filled by reflecting the layer at its border; nothing outside
the layer is ever written back. The square is resized to the model resolution with Lanczos.

Memory stays bounded for big layers: only the box's pixels are read, and when the box is much
larger than the model (side >= 4x resolution), it is first averaged down by whole pixel blocks,
a strip of rows at a time, so no float copy of the full box is ever made.

Coordinates: (x, y) = (column, row); a point at integer (i, j) is the centre of pixel (i, j), in the
layer as in the model, so pixel centres map onto pixel centres.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from gimp_draggan.edit import Point

_STRIP_BYTES = 16 << 20  # Float working memory per strip when averaging a big box down.


@dataclass(frozen=True)
class Rect:
    """Half-open integer pixel rectangle [x0, x1) x [y0, y1)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return max(0, self.x1 - self.x0)

    @property
    def height(self) -> int:
        return max(0, self.y1 - self.y0)

    @property
    def empty(self) -> bool:
        return self.width == 0 or self.height == 0

    def intersect(self, other: Rect) -> Rect:
        return Rect(
            max(self.x0, other.x0), max(self.y0, other.y0),
            min(self.x1, other.x1), min(self.y1, other.y1),
        )

    def union(self, other: Rect) -> Rect:
        return Rect(
            min(self.x0, other.x0), min(self.y0, other.y0),
            max(self.x1, other.x1), max(self.y1, other.y1),
        )

    def contains(self, other: Rect) -> bool:
        return (
            self.x0 <= other.x0 and self.y0 <= other.y0
            and other.x1 <= self.x1 and other.y1 <= self.y1
        )


@dataclass(frozen=True)
class CropBox:
    """A square of the layer (it may stick out of it) shown to the model at ``resolution``."""

    x0: int                 # Top-left corner in layer pixels (may be negative).
    y0: int
    side: int               # Side in layer pixels.
    layer_width: int
    layer_height: int
    resolution: int         # Model resolution R: the square becomes R x R.

    def __post_init__(self) -> None:
        if self.side <= 0 or self.resolution <= 0:
            raise ValueError(f"crop side and resolution must be positive: {self}")

    @property
    def scale(self) -> float:
        """Model pixels per layer pixel."""
        return self.resolution / self.side

    @property
    def rect(self) -> Rect:
        return Rect(self.x0, self.y0, self.x0 + self.side, self.y0 + self.side)

    @property
    def inside(self) -> Rect:
        """The part of the square that lies on the layer."""
        return self.rect.intersect(Rect(0, 0, self.layer_width, self.layer_height))

    def to_model(self, points: Sequence[Point]) -> list[Point]:
        s = self.scale
        return [((x + 0.5 - self.x0) * s - 0.5, (y + 0.5 - self.y0) * s - 0.5) for x, y in points]

    def to_layer(self, points: Sequence[Point]) -> list[Point]:
        s = self.scale
        return [((u + 0.5) / s - 0.5 + self.x0, (v + 0.5) / s - 0.5 + self.y0) for u, v in points]


def point_pixel(p: Point, width: int, height: int) -> tuple[int, int]:
    """The layer pixel a point falls on (clamped to the layer)."""
    return (
        min(max(math.floor(p[0] + 0.5), 0), width - 1),
        min(max(math.floor(p[1] + 0.5), 0), height - 1),
    )


def points_rect(points: Sequence[Point], width: int, height: int) -> Rect:
    """Smallest pixel rectangle holding every point's pixel."""
    if not points:
        raise ValueError("no points given")
    pix = [point_pixel(p, width, height) for p in points]
    xs, ys = [p[0] for p in pix], [p[1] for p in pix]
    return Rect(min(xs), min(ys), max(xs) + 1, max(ys) + 1)


def mask_rect(mask: np.ndarray) -> Rect:
    """Bounding rectangle of the non-zero pixels of an ``[H, W]`` mask (empty Rect if none)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return Rect(0, 0, 0, 0)
    cols = np.flatnonzero(mask[rows[0]: rows[-1] + 1].any(axis=0))
    return Rect(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def choose_box(
    needed: Rect,
    layer_width: int,
    layer_height: int,
    resolution: int,
    margin: float = 0.25,           # Padding on each side, as a fraction of the needed extent.
    min_side: int | None = None,    # None = resolution // 2 (no more than 2x upsampling).
) -> CropBox:
    """Square box centred on ``needed`` (selection ∪ points), padded by ``margin``."""
    if needed.empty:
        raise ValueError("nothing to crop: the selection and the points cover no pixel")
    if margin < 0:
        raise ValueError(f"crop margin must be >= 0, got {margin}")
    floor_side = max(8, resolution // 2) if min_side is None else max(1, min_side)
    extent = max(needed.width, needed.height)
    side = max(math.ceil(extent * (1.0 + 2.0 * margin)), floor_side)
    cx, cy = (needed.x0 + needed.x1) / 2.0, (needed.y0 + needed.y1) / 2.0
    return CropBox(
        x0=math.floor(cx - side / 2.0 + 0.5),
        y0=math.floor(cy - side / 2.0 + 0.5),
        side=side,
        layer_width=layer_width,
        layer_height=layer_height,
        resolution=resolution,
    )


def _block_mean(
    region: np.ndarray, k: int, convert: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Average ``k x k`` pixel blocks of ``region`` ([H, W] or [H, W, C]), converting strips of
    rows to float32 with ``convert`` (which may change the channel count); a last partial block
    repeats the edge pixels."""
    h, w = region.shape[:2]
    if k == 1:
        return convert(region)
    rh, rw = -(-h // k), -(-w // k)
    row_bytes = w * 4 * int(np.prod(region.shape[2:], dtype=np.int64))
    blocks_per_strip = max(1, _STRIP_BYTES // max(1, row_bytes * k))
    parts = []
    for b0 in range(0, rh, blocks_per_strip):
        b1 = min(rh, b0 + blocks_per_strip)
        strip = convert(region[b0 * k: min(h, b1 * k)])
        chans = strip.shape[2:]
        pad_rows = (b1 - b0) * k - strip.shape[0]
        pad_cols = rw * k - w
        if pad_rows or pad_cols:
            pads = [(0, pad_rows), (0, pad_cols)] + [(0, 0)] * len(chans)
            strip = np.pad(strip, pads, mode="edge")
        parts.append(strip.reshape(b1 - b0, k, rw, k, *chans).mean(axis=(1, 3), dtype=np.float32))
    return np.concatenate(parts, axis=0)


def resize_region(
    img: np.ndarray,
    size: tuple[int, int],
    box: tuple[float, float, float, float],
    resample: Image.Resampling = Image.Resampling.LANCZOS,
) -> np.ndarray:
    """Resize float32 ``img`` ([H, W] or [H, W, C]) region ``box`` to ``size`` (w, h)."""
    h, w = img.shape[:2]
    box = (
        min(max(box[0], 0.0), w), min(max(box[1], 0.0), h),
        min(max(box[2], 0.0), w), min(max(box[3], 0.0), h),
    )
    planes = [img] if img.ndim == 2 else [img[:, :, c] for c in range(img.shape[2])]
    out = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(p, dtype=np.float32), mode="F").resize(
                size, resample, box=box
            ),
            dtype=np.float32,
        )
        for p in planes
    ]
    return out[0] if img.ndim == 2 else np.stack(out, axis=-1)


def layer_to_model(
    layer: np.ndarray,
    box: CropBox,
    convert: Callable[[np.ndarray], np.ndarray],
    pad_mode: str = "reflect",
) -> np.ndarray:
    """The box's pixels of ``layer`` ([H, W] or [H, W, C], any dtype) at the model resolution,
    float32 ``[R, R]`` or ``[R, R, C]``. ``convert`` turns a slice of ``layer`` into float32;
    outside the layer the box is filled by ``pad_mode`` ("reflect" for pixels, "constant" = 0)."""
    if layer.shape[:2] != (box.layer_height, box.layer_width):
        raise ValueError(
            f"layer is {layer.shape[1]}x{layer.shape[0]}, crop box was made for "
            f"{box.layer_width}x{box.layer_height}"
        )
    inside = box.inside
    if inside.empty:
        raise ValueError("the crop box does not overlap the layer")
    k = max(1, box.side // (2 * box.resolution))
    region = layer[inside.y0: inside.y1, inside.x0: inside.x1]
    small = _block_mean(region, k, convert)
    # The box in the coordinates of `small` (one unit = k layer pixels, origin at inside.x0/y0).
    bx0 = (box.x0 - inside.x0) / k
    by0 = (box.y0 - inside.y0) / k
    bx1 = bx0 + box.side / k
    by1 = by0 + box.side / k
    sh, sw = small.shape[:2]
    pl, pt = math.ceil(max(0.0, -bx0)), math.ceil(max(0.0, -by0))
    pr, pb = math.ceil(max(0.0, bx1 - sw)), math.ceil(max(0.0, by1 - sh))
    if pl or pt or pr or pb:
        pads = [(pt, pb), (pl, pr)] + [(0, 0)] * (small.ndim - 2)
        mode = pad_mode
        if mode == "reflect" and min(sh, sw) < 2:
            mode = "edge"  # A one-pixel-wide layer has nothing to reflect.
        small = np.pad(small, pads, mode=mode)  # type: ignore[call-overload]
    r = box.resolution
    return resize_region(small, (r, r), (bx0 + pl, by0 + pt, bx1 + pl, by1 + pt))


def model_to_layer(
    img: np.ndarray, box: CropBox, rect: Rect, smooth: bool = False
) -> np.ndarray:
    """Model-resolution float32 ``img`` ([R, R] or [R, R, C]) resampled onto the layer pixels of
    ``rect`` (which must lie inside the box): ``[rect.height, rect.width(, C)]``. Lanczos, or
    with ``smooth`` bilinear (no ringing: weights stay in their range and zeros stay zero)."""
    r = box.resolution
    if img.shape[:2] != (r, r):
        raise ValueError(f"model image must be {r}x{r}, got {list(img.shape)}")
    if rect.empty or not box.rect.contains(rect):
        raise ValueError(f"rectangle {rect} is empty or not inside the crop box {box.rect}")
    s = box.scale
    src = (
        (rect.x0 - box.x0) * s, (rect.y0 - box.y0) * s,
        (rect.x1 - box.x0) * s, (rect.y1 - box.y0) * s,
    )
    resample = Image.Resampling.BILINEAR if smooth else Image.Resampling.LANCZOS
    return resize_region(img, (rect.width, rect.height), src, resample)
