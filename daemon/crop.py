"""Layer <-> model space: the square crop the generator sees, and the maps between the two.

The crop is a square box around the selection ∪ the points, padded by a margin and kept centred on
them (aligned models such as FFHQ or AFHQ expect the subject in the middle); `gimp_draggan.align`
may frame a face or head instead, as a turned box. Where the square leaves the layer, the missing
part is filled by reflecting the layer at its border; nothing outside the layer is ever written
back. The square is resized to the model resolution with Lanczos.

Memory stays bounded for big layers: only the box's pixels are read, and when the box is much
larger than the model (side >= 4x resolution), it is first averaged down by whole pixel blocks,
a strip of rows at a time, so no float copy of the full box is ever made.

Coordinates: (x, y) = (column, row); a point at integer (i, j) is the centre of pixel (i, j), in the
layer as in the model, so pixel centres map onto pixel centres.

A box may be turned (`CropBox.angle`, for faces aligned as in FFHQ and the embedded model's
heads): the model then sees the square turned by that angle about its centre. Such a crop is
made in two resamplings: the box's bounding rectangle is resized (Lanczos, after the same block
average) so one pixel is one model pixel, then that upright image is turned into R x R with
Pillow's bicubic affine transform on float planes. The way back mirrors it (turn upright at
model scale, then Lanczos onto the layer pixels). An unturned box (angle 0) takes the original
one-resize path, so its results do not change by a bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from gimp_draggan.edit import Point
from gimp_draggan.pixels import to_float

_STRIP_BYTES = 16 << 20  # Float working memory per strip when averaging a big box down.
_TURN_MARGIN = 3  # Extra pixels (model scale) round the upright image of a turned box.
_MODEL_PAD = 4  # Model pixels of edge padding before a result is turned back.
FLATTEN_GREY = 0.5  # Background the model sees behind transparent pixels.
Affine = tuple[float, float, float, float, float, float]


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
            max(self.x0, other.x0),
            max(self.y0, other.y0),
            min(self.x1, other.x1),
            min(self.y1, other.y1),
        )

    def union(self, other: Rect) -> Rect:
        return Rect(
            min(self.x0, other.x0),
            min(self.y0, other.y0),
            max(self.x1, other.x1),
            max(self.y1, other.y1),
        )

    def contains(self, other: Rect) -> bool:
        return (
            self.x0 <= other.x0
            and self.y0 <= other.y0
            and other.x1 <= self.x1
            and other.y1 <= self.y1
        )


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
    cx, cy = (needed.x0 + needed.x1) / 2.0, (needed.y0 + needed.y1) / 2.0
    return CropBox(
        x0=math.floor(cx - side / 2.0 + 0.5),
        y0=math.floor(cy - side / 2.0 + 0.5),
        side=side,
        layer_width=layer_width,
        layer_height=layer_height,
        resolution=resolution,
    )


def block_mean(
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
        strip = convert(region[b0 * k : min(h, b1 * k)])
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
        min(max(box[0], 0.0), w),
        min(max(box[1], 0.0), h),
        min(max(box[2], 0.0), w),
        min(max(box[3], 0.0), h),
    )
    return _per_plane(img, lambda im: im.resize(size, resample, box=box))


def _per_plane(img: np.ndarray, op: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    """Pillow ``op`` on float32 ``img`` ([H, W] or [H, W, C]) one mode-"F" plane at a time."""
    planes = [img] if img.ndim == 2 else [img[:, :, c] for c in range(img.shape[2])]
    out = [
        np.asarray(
            op(Image.fromarray(np.ascontiguousarray(p, dtype=np.float32), mode="F")),
            dtype=np.float32,
        )
        for p in planes
    ]
    return out[0] if img.ndim == 2 else np.stack(out, axis=-1)


def flatten(rgba: np.ndarray) -> np.ndarray:
    """Float RGBA -> RGB over mid grey: the model never sees the colours hidden under alpha 0
    (often black or stale), only what is visible."""
    alpha = np.clip(rgba[..., 3:], 0.0, 1.0)
    rgb = np.clip(rgba[..., :3], 0.0, 1.0)
    return rgb * alpha + FLATTEN_GREY * (1.0 - alpha)


def model_view(layer: np.ndarray, depth: str, box: CropBox) -> np.ndarray:
    """What the model is shown of ``layer`` ([H, W, 4] in ``depth``'s dtype) in ``box``:
    float32 ``[R, R, 3]`` in [0, 1], flattened over grey by alpha."""
    return np.clip(layer_to_model(layer, box, lambda a: flatten(to_float(a, depth))), 0.0, 1.0)


def layer_to_model(
    layer: np.ndarray,
    box: CropBox,
    convert: Callable[[np.ndarray], np.ndarray],
    pad_mode: str = "reflect",
) -> np.ndarray:
    """The box's pixels of ``layer`` ([H, W] or [H, W, C], any dtype) at the model resolution,
    float32 ``[R, R]`` or ``[R, R, C]``. ``convert`` turns a slice of ``layer`` into float32;
    outside the layer the box is filled by ``pad_mode`` ("reflect" for pixels, "constant" = 0).
    Only ``box.inside`` is read."""
    if layer.shape[:2] != (box.layer_height, box.layer_width):
        raise ValueError(
            f"layer is {layer.shape[1]}x{layer.shape[0]}, crop box was made for "
            f"{box.layer_width}x{box.layer_height}"
        )
    inside = box.inside
    if inside.empty:
        raise ValueError("the crop box does not overlap the layer")
    k = max(1, box.side // (2 * box.resolution))
    region = layer[inside.y0 : inside.y1, inside.x0 : inside.x1]
    small = block_mean(region, k, convert)
    r = box.resolution
    if box.angle != 0.0:
        return _turned_to_model(small, k, box, pad_mode)
    # The box in the coordinates of `small` (one unit = k layer pixels, origin at inside.x0/y0).
    bx0 = (box.x0 - inside.x0) / k
    by0 = (box.y0 - inside.y0) / k
    bx1 = bx0 + box.side / k
    by1 = by0 + box.side / k
    return _pad_resize(small, (bx0, by0, bx1, by1), (r, r), pad_mode)


def _pad_resize(
    small: np.ndarray,
    src: tuple[float, float, float, float],
    size: tuple[int, int],
    pad_mode: str,
) -> np.ndarray:
    """Lanczos-resize the region ``src`` (x0, y0, x1, y1) of ``small`` to ``size``, padding
    ``small`` by ``pad_mode`` where the region leaves it."""
    bx0, by0, bx1, by1 = src
    sh, sw = small.shape[:2]
    pl, pt = math.ceil(max(0.0, -bx0)), math.ceil(max(0.0, -by0))
    pr, pb = math.ceil(max(0.0, bx1 - sw)), math.ceil(max(0.0, by1 - sh))
    if pl or pt or pr or pb:
        pads = [(pt, pb), (pl, pr)] + [(0, 0)] * (small.ndim - 2)
        mode = pad_mode
        if mode == "reflect" and min(sh, sw) < 2:
            mode = "edge"  # A one-pixel-wide layer has nothing to reflect.
        small = np.pad(small, pads, mode=mode)  # type: ignore[call-overload]
    return resize_region(small, size, (bx0 + pl, by0 + pt, bx1 + pl, by1 + pt))


def _upright_grid(box: CropBox) -> tuple[Point, int, int]:
    """The upright grid a turned box is resampled through: the bounding rectangle at the
    model's scale plus a margin: its top-left corner (layer edge coordinates) and size."""
    s, rect = box.scale, box.rect
    margin = _TURN_MARGIN / s
    origin = (rect.x0 - margin, rect.y0 - margin)
    return (
        origin,
        math.ceil(rect.width * s) + 2 * _TURN_MARGIN,
        math.ceil(rect.height * s) + 2 * _TURN_MARGIN,
    )


def _turned_to_model(small: np.ndarray, k: int, box: CropBox, pad_mode: str) -> np.ndarray:
    """``small`` (box.inside averaged by ``k``) -> the turned box at R x R: the bounding
    rectangle (plus a margin) resized to the model's scale, then turned (bicubic)."""
    s, inside = box.scale, box.inside
    origin, nw, nh = _upright_grid(box)
    bx0 = (origin[0] - inside.x0) / k
    by0 = (origin[1] - inside.y0) / k
    src = (bx0, by0, bx0 + nw / (s * k), by0 + nh / (s * k))
    upright = _pad_resize(small, src, (nw, nh), pad_mode)
    r = box.resolution
    return _transform(
        upright, (r, r), box.grid_from_model(origin, 1.0 / s), Image.Resampling.BICUBIC
    )


def _transform(
    img: np.ndarray, size: tuple[int, int], data: Affine, resample: Image.Resampling
) -> np.ndarray:
    """Pillow affine transform of float32 ``img`` ([H, W] or [H, W, C]) plane by plane: output
    pixel edge coordinates (x, y) read ``img`` at (a x + b y + c, d x + e y + f); 0 outside."""
    return _per_plane(img, lambda im: im.transform(size, Image.Transform.AFFINE, data, resample))


def layer_sampler(
    img: np.ndarray, box: CropBox, smooth: bool = False
) -> Callable[[Rect], np.ndarray]:
    """A function giving model-resolution float32 ``img`` ([R, R] or [R, R, C]) resampled onto
    the layer pixels of a rectangle inside ``box.rect``: ``[height, width(, C)]``. Lanczos, or
    with ``smooth`` bilinear (no ringing: weights stay in their range and zeros stay zero). For
    a turned box the upright image is made once, so many strips cost one turn."""
    r = box.resolution
    if img.shape[:2] != (r, r):
        raise ValueError(f"model image must be {r}x{r}, got {list(img.shape)}")
    resample = Image.Resampling.BILINEAR if smooth else Image.Resampling.LANCZOS
    s = box.scale

    def check(rect: Rect) -> None:
        if rect.empty or not box.rect.contains(rect):
            raise ValueError(f"rectangle {rect} is empty or not inside the crop box {box.rect}")

    if box.angle == 0.0:

        def upright_sample(rect: Rect) -> np.ndarray:
            check(rect)
            src = (
                (rect.x0 - box.x0) * s,
                (rect.y0 - box.y0) * s,
                (rect.x1 - box.x0) * s,
                (rect.y1 - box.y0) * s,
            )
            return resize_region(img, (rect.width, rect.height), src, resample)

        return upright_sample

    origin, nw, nh = _upright_grid(box)
    p = _MODEL_PAD
    padded = np.pad(img, [(p, p), (p, p)] + [(0, 0)] * (img.ndim - 2), mode="edge")
    a, b, c, d, e, f = box.model_from_grid(origin, 1.0 / s)
    turn = Image.Resampling.BILINEAR if smooth else Image.Resampling.BICUBIC
    upright = _transform(padded, (nw, nh), (a, b, c + p, d, e, f + p), turn)

    def turned_sample(rect: Rect) -> np.ndarray:
        check(rect)
        src = (
            (rect.x0 - origin[0]) * s,
            (rect.y0 - origin[1]) * s,
            (rect.x1 - origin[0]) * s,
            (rect.y1 - origin[1]) * s,
        )
        return resize_region(upright, (rect.width, rect.height), src, resample)

    return turned_sample


def preview_on_rect(image: np.ndarray, backdrop: np.ndarray, box: CropBox) -> np.ndarray:
    """A turned box's model ``image`` ([R, R, C] float) drawn onto ``backdrop`` ([n, n, C]
    float: the layer over ``box.rect``, which is square for a turned box, at n pixels a side),
    so a preview can be shown upright on the bounding rectangle; backdrop pixels outside the
    turned square are kept."""
    rect = box.rect
    n = backdrop.shape[0]
    if backdrop.shape[:2] != (n, n) or rect.width != rect.height:
        raise ValueError(f"preview backdrop must be square over {rect}, got {backdrop.shape}")
    step = rect.width / n
    # Shrink the model image to about the preview's scale first (Lanczos), so the turn
    # (bicubic) does not alias.
    m = max(1, min(box.resolution, round(box.resolution / (box.scale * step))))
    shrunk = resize_region(image, (m, m), (0.0, 0.0, float(box.resolution), float(box.resolution)))
    small_box = replace(box, resolution=m)
    origin = (float(rect.x0), float(rect.y0))
    p = _MODEL_PAD
    padded = np.pad(shrunk, [(p, p), (p, p), (0, 0)], mode="edge")
    a, b, c, d, e, f = small_box.model_from_grid(origin, step)
    turned = _transform(padded, (n, n), (a, b, c + p, d, e, f + p), Image.Resampling.BICUBIC)
    g = (np.arange(n, dtype=np.float64) + 0.5) * step
    u, v = box.local(rect.x0 + g[None, :], rect.y0 + g[:, None])
    held = np.maximum(np.abs(u), np.abs(v)) <= box.side / 2.0
    return np.where(held[:, :, None], turned, backdrop).astype(np.float32)
