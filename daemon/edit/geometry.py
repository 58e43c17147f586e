"""Layer <-> model space: the square box the generator sees, and the maps between the two.

The box is a square around the selection ∪ the points, padded by a margin and kept centred on them
(aligned models such as FFHQ or AFHQ expect the subject in the middle); `gimp_draggan.edit.align`
may frame a face or head instead, as a turned box (`CropBox.angle`). Reading pixels through a box
is `gimp_draggan.edit.sampling`'s job.

Coordinates: (x, y) = (column, row); a point at integer (i, j) is the centre of pixel (i, j), in the
layer as in the model, so pixel centres map onto pixel centres.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gimp_draggan.edit.types import Point
from gimp_draggan_plugin.rect import Rect

Affine = tuple[float, float, float, float, float, float]


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes; 0 when both are empty."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class CropBox:
    """A square of the layer (it may stick out of it) shown to the model at ``resolution``,
    turned by ``angle`` about its centre (the model's +x axis runs along (cos a, sin a) in the
    layer, +y along (-sin a, cos a); y points down)."""

    x0: int  # Top-left corner of the unturned square, layer pixels (may be < 0).
    y0: int
    side: int  # Side in layer pixels.
    layer_width: int
    layer_height: int
    resolution: int  # Model resolution R: the square becomes R x R.
    angle: float = 0.0  # Turn in radians; 0 = the square is upright.

    def __post_init__(self) -> None:
        if self.side <= 0 or self.resolution <= 0:
            raise ValueError(f"crop side and resolution must be positive: {self}")
        if not math.isfinite(self.angle):
            raise ValueError(f"crop angle must be a finite number of radians: {self}")

    @classmethod
    def centred(
        cls,
        centre: Point,
        side: int,
        layer_width: int,
        layer_height: int,
        resolution: int,
        angle: float = 0.0,
    ) -> CropBox:
        """The square of ``side`` whose centre is nearest ``centre`` (edge coordinates) with its
        corner on a whole pixel."""
        cx, cy = centre
        x0, y0 = math.floor(cx - side / 2.0 + 0.5), math.floor(cy - side / 2.0 + 0.5)
        return cls(x0, y0, side, layer_width, layer_height, resolution, angle)

    def with_side(self, side: int) -> CropBox:
        """The same square grown or shrunk to ``side`` about (nearly) the same centre."""
        return CropBox.centred(
            self.centre, side, self.layer_width, self.layer_height, self.resolution, self.angle
        )

    @property
    def scale(self) -> float:
        """Model pixels per layer pixel."""
        return self.resolution / self.side

    @property
    def centre(self) -> Point:
        """Centre of the square in layer edge coordinates (pixel (i, j) spans [i, i + 1))."""
        return (self.x0 + self.side / 2.0, self.y0 + self.side / 2.0)

    @property
    def rect(self) -> Rect:
        """The square, or for a turned box the integer rectangle bounding it."""
        if self.angle == 0.0:
            return Rect(self.x0, self.y0, self.x0 + self.side, self.y0 + self.side)
        cx, cy = self.centre
        e = self.side / 2.0 * (abs(math.cos(self.angle)) + abs(math.sin(self.angle)))
        return Rect(math.floor(cx - e), math.floor(cy - e), math.ceil(cx + e), math.ceil(cy + e))

    @property
    def inside(self) -> Rect:
        """The part of ``rect`` that lies on the layer."""
        return self.rect.intersect(Rect(0, 0, self.layer_width, self.layer_height))

    def local(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Layer edge coordinates -> (u, v) along the square's axes from its centre, in layer
        pixels: a point lies in the square when |u| and |v| are at most side / 2."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        cx, cy = self.centre
        qx, qy = xs - cx, ys - cy
        return c * qx + s * qy, -s * qx + c * qy

    def holds(self, what: Sequence[Point] | Rect) -> bool:
        """Whether the (turned) square holds these layer points (pixel centres), or every pixel
        of this rectangle."""
        if isinstance(what, Rect):
            if self.angle == 0.0:
                return self.rect.contains(what)
            xs = np.array([what.x0, what.x1, what.x1, what.x0], np.float64)
            ys = np.array([what.y0, what.y0, what.y1, what.y1], np.float64)
        else:
            xs = np.array([p[0] for p in what], np.float64) + 0.5
            ys = np.array([p[1] for p in what], np.float64) + 0.5
        u, v = self.local(xs, ys)
        limit = self.side / 2.0 * (1.0 + 1e-9)
        return bool(np.all(np.abs(u) <= limit) and np.all(np.abs(v) <= limit))

    def to_model(self, points: Sequence[Point]) -> list[Point]:
        s = self.scale
        if self.angle == 0.0:
            return [
                ((x + 0.5 - self.x0) * s - 0.5, (y + 0.5 - self.y0) * s - 0.5) for x, y in points
            ]
        c, sn = math.cos(self.angle), math.sin(self.angle)
        cx, cy = self.centre
        h = self.side / 2.0
        out = []
        for x, y in points:
            qx, qy = x + 0.5 - cx, y + 0.5 - cy
            out.append(((c * qx + sn * qy + h) * s - 0.5, (-sn * qx + c * qy + h) * s - 0.5))
        return out

    def to_layer(self, points: Sequence[Point]) -> list[Point]:
        s = self.scale
        if self.angle == 0.0:
            return [
                ((u + 0.5) / s - 0.5 + self.x0, (v + 0.5) / s - 0.5 + self.y0) for u, v in points
            ]
        c, sn = math.cos(self.angle), math.sin(self.angle)
        cx, cy = self.centre
        h = self.side / 2.0
        out = []
        for u, v in points:
            a, b = (u + 0.5) / s - h, (v + 0.5) / s - h
            out.append((c * a - sn * b + cx - 0.5, sn * a + c * b + cy - 0.5))
        return out

    def grid_from_model(self, origin: Point, step: float) -> Affine:
        """Pillow AFFINE data taking model edge coordinates to those of a grid whose pixel
        (0, 0) starts at layer edge point ``origin`` and spans ``step`` layer pixels."""
        c, sn = math.cos(self.angle), math.sin(self.angle)
        k = 1.0 / (self.scale * step)
        h = self.resolution / 2.0
        cx, cy = self.centre
        ox, oy = (cx - origin[0]) / step, (cy - origin[1]) / step
        return (c * k, -sn * k, ox - (c - sn) * k * h, sn * k, c * k, oy - (sn + c) * k * h)

    def model_from_grid(self, origin: Point, step: float) -> Affine:
        """Pillow AFFINE data taking a grid's edge coordinates (see `grid_from_model`) to the
        model's edge coordinates."""
        c, sn = math.cos(self.angle), math.sin(self.angle)
        s = self.scale
        k = s * step
        h = self.resolution / 2.0
        cx, cy = self.centre
        qx, qy = origin[0] - cx, origin[1] - cy
        return (
            c * k,
            sn * k,
            s * (c * qx + sn * qy) + h,
            -sn * k,
            c * k,
            s * (-sn * qx + c * qy) + h,
        )


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
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    return Rect(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def choose_box(
    needed: Rect,
    layer_width: int,
    layer_height: int,
    resolution: int,
    margin: float = 0.25,  # Padding on each side, as a fraction of the needed extent.
    min_side: int | None = None,  # None = resolution // 2 (no more than 2x upsampling).
) -> CropBox:
    """Square box centred on ``needed`` (selection ∪ points), padded by ``margin``."""
    if needed.empty:
        raise ValueError("nothing to crop: the selection and the points cover no pixel")
    if margin < 0:
        raise ValueError(f"crop margin must be >= 0, got {margin}")
    floor_side = max(8, resolution // 2) if min_side is None else max(1, min_side)
    extent = max(needed.width, needed.height)
    side = max(math.ceil(extent * (1.0 + 2.0 * margin)), floor_side)
    centre = ((needed.x0 + needed.x1) / 2.0, (needed.y0 + needed.y1) / 2.0)
    return CropBox.centred(centre, side, layer_width, layer_height, resolution)
