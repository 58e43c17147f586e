"""Photo-true composite: the layer's own pixels moved along the drag's motion field.

The drag's result is a field in model space (`gimp_draggan.draggan.motion`): each pixel of the
dragged image came from (x + dx, y + dy) of the reconstruction, with a confidence that such a
source exists. Here it is carried to layer pixels through the crop box (turned boxes too) and
applied to the full-resolution photo:

    out(p) = photo(p + w(p) * d(p))            where the source exists,
    blended towards the generator's pixels       by w(p) * (1 - confidence(p)),

with ``w`` the blend weight of the plain composite (selection x its inward feather x the box's
feather, 0 under alpha 0). Tapering the *motion* by ``w`` (rather than cross-fading two images)
leaves no ghost edges where the edit fades out. Motion below `STILL` layer pixels counts as none,
so a pixel that did not move and has a source keeps its bytes exactly.

Sampling keeps the photo's grain: any interpolation at a fractional offset softens the finest
detail (a half-pixel shift keeps ~60 % of the high-pass energy with bicubic, ~75 % with a cubic
spline), so the source is split in two bands. The smooth band (a small blur of the photo) is
sampled bicubically (Catmull-Rom), which is exact for it; the detail band (photo minus that
blur) is copied from the nearest source pixel, whole, less than half a pixel from where it
belongs. Both are read from the source region only, clamped to the layer; a fully transparent
source pixel reads as the grey the model sees there, never as the colour hidden under it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gimp_draggan.edit.composite import Patch, blend_rect, blend_weight
from gimp_draggan.edit.geometry import CropBox, Rect
from gimp_draggan.edit.pixels import DTYPES, from_float, to_float
from gimp_draggan.edit.sampling import FLATTEN_GREY, layer_sampler

STILL = 0.05  # Layer pixels of motion that count as none.
SMOOTH_PASSES = 3  # [1, 2, 1] passes (sigma ~1.2 px) splitting smooth from detail.
_STRIP_PIXELS = 1 << 20  # Pixels per strip (bounded working memory on big selections).


@dataclass(frozen=True)
class LayerField:
    """A motion field in model space, ready to be read at layer pixels through ``box``."""

    flow: np.ndarray  # [R, R, 2] float32 (dx, dy), model pixels.
    confidence: np.ndarray  # [R, R] float32 in [0, 1].
    box: CropBox

    def __post_init__(self) -> None:
        r = self.box.resolution
        if self.flow.shape != (r, r, 2) or self.confidence.shape != (r, r):
            raise ValueError(
                f"field must be [{r}, {r}, 2] + [{r}, {r}], got {list(self.flow.shape)} + "
                f"{list(self.confidence.shape)}"
            )

    def sampler(self) -> Callable[[Rect], tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """A function giving, over the layer pixels of a rectangle inside the box, the motion
        (dx, dy) in layer pixels and the confidence, each ``[h, w]`` (the field resampled
        bilinearly, as `crop.layer_sampler` maps model to layer pixels, turned boxes too)."""
        box = self.box
        s = box.scale
        c, sn = math.cos(box.angle), math.sin(box.angle)
        read = layer_sampler(np.dstack([self.flow, self.confidence[:, :, None]]), box, smooth=True)

        def at(rect: Rect) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            got = read(rect)
            du, dv = got[..., 0], got[..., 1]
            return (c * du - sn * dv) / s, (sn * du + c * dv) / s, got[..., 2]

        return at


def _cubic_weights(t: np.ndarray) -> list[np.ndarray]:
    """Catmull-Rom weights of the taps at -1, 0, 1, 2 for fractional offsets ``t`` in [0, 1)."""
    t2, t3 = t * t, t * t * t
    return [
        0.5 * (-t3 + 2 * t2 - t),
        0.5 * (3 * t3 - 5 * t2 + 2),
        0.5 * (-3 * t3 + 4 * t2 + t),
        0.5 * (t3 - t2),
    ]


def sample_bicubic(img: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Float ``img`` ([H, W, C]) at points (xs, ys) ([N], pixel centres at integers), clamped
    to its edge: ``[N, C]``. A whole-pixel point reads that pixel exactly."""
    h, w = img.shape[:2]
    flat = img.reshape(h * w, img.shape[2])
    fx, fy = np.floor(xs), np.floor(ys)
    wx = _cubic_weights((xs - fx).astype(np.float32))
    wy = _cubic_weights((ys - fy).astype(np.float32))
    ix, iy = fx.astype(np.int64), fy.astype(np.int64)
    cols = [np.clip(ix + (i - 1), 0, w - 1) for i in range(4)]
    out = np.zeros((xs.shape[0], img.shape[2]), np.float32)
    for j in range(4):
        row = np.clip(iy + (j - 1), 0, h - 1) * w
        acc = np.zeros_like(out)
        for i in range(4):
            acc += np.take(flat, row + cols[i], axis=0) * wx[i][:, None]
        out += acc * wy[j][:, None]
    return out


@dataclass(frozen=True)
class SourceBands:
    """The layer's RGB over a region, split into a smooth band and a detail band."""

    photo: np.ndarray  # [h, w, 3] float32: the region's RGB.
    smooth: np.ndarray  # [h, w, 3] float32.
    detail: np.ndarray  # [h, w, 3] float32: ``photo`` minus ``smooth``.
    x0: int  # The region's top-left pixel in the layer.
    y0: int

    @classmethod
    def read(cls, layer: np.ndarray, depth: str, region: Rect) -> SourceBands:
        pixels = layer[region.y0 : region.y1, region.x0 : region.x1]
        rgb = to_float(pixels[:, :, :3], depth)
        rgb[pixels[:, :, 3] == 0] = FLATTEN_GREY  # Never pull hidden colours into view.
        smooth = _binomial(rgb, SMOOTH_PASSES)
        return cls(photo=rgb, smooth=smooth, detail=rgb - smooth, x0=region.x0, y0=region.y0)

    def sample(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """RGB at layer points (xs, ys) ([N]): smooth band bicubic + detail band nearest,
        kept within the range of the four photo pixels around the point. At a hard edge the
        detail copied from up to half a pixel away no longer matches the smooth band placed
        exactly, and their sum would overshoot into a bright or dark line along it."""
        u, v = xs - self.x0, ys - self.y0
        h, w = self.detail.shape[:2]
        near_x = np.clip(np.floor(u + 0.5).astype(np.int64), 0, w - 1)
        near_y = np.clip(np.floor(v + 0.5).astype(np.int64), 0, h - 1)
        value = sample_bicubic(self.smooth, u, v) + self.detail[near_y, near_x]
        x0 = np.clip(np.floor(u).astype(np.int64), 0, w - 1)
        y0 = np.clip(np.floor(v).astype(np.int64), 0, h - 1)
        x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
        p = self.photo
        corners = np.stack([p[y0, x0], p[y0, x1], p[y1, x0], p[y1, x1]])
        return np.clip(value, corners.min(axis=0), corners.max(axis=0))


def _binomial(img: np.ndarray, passes: int) -> np.ndarray:
    """``passes`` rounds of the [1, 2, 1] / 4 filter along rows and columns of ``img``
    ([h, w, C] float32), edges repeated: a Gaussian of sigma sqrt(passes / 2)."""
    out = img
    for _ in range(passes):
        p = np.pad(out, [(1, 1), (0, 0), (0, 0)], mode="edge")
        out = (p[:-2] + 2.0 * p[1:-1] + p[2:]) * np.float32(0.25)
        p = np.pad(out, [(0, 0), (1, 1), (0, 0)], mode="edge")
        out = (p[:, :-2] + 2.0 * p[:, 1:-1] + p[:, 2:]) * np.float32(0.25)
    return out.astype(np.float32, copy=False)


def warp_composite(
    layer: np.ndarray,
    depth: str,
    field: LayerField,
    generated: np.ndarray,  # [R, R, 3] float32: dragged image, toned as the photo.
    selection: np.ndarray | None = None,
    feather: float = 1.0 / 16.0,  # Ramp width as a fraction of the crop side.
) -> Patch:
    """The photo-true patch (see the module doc) over the pixels that may change."""
    box = field.box
    if layer.ndim != 3 or layer.shape[2] != 4 or layer.dtype != DTYPES.get(depth):
        raise ValueError(f"layer must be [H, W, 4] {depth}, got {layer.dtype} {list(layer.shape)}")
    r = box.resolution
    if generated.shape != (r, r, 3):
        raise ValueError(f"generated image must be [{r}, {r}, 3], got {list(generated.shape)}")
    rect = blend_rect(box, selection)
    if rect.empty:
        raise ValueError("the selection does not overlap the crop: nothing can change")
    weight_at = blend_weight(layer, box, selection, rect, taper_radius(field, rect, feather))
    if _is_grey(layer, rect):
        generated = np.repeat(generated.mean(axis=2, keepdims=True), 3, axis=2)
    gen_at: Callable[[Rect], np.ndarray] = layer_sampler(generated, box)
    out = np.array(layer[rect.y0 : rect.y1, rect.x0 : rect.x1])
    # How far a source lies from its pixel, plus the cubic's taps and the smooth band's blur
    # (its values within that blur of a region's cut edge are not used).
    motion = float(np.hypot(field.flow[..., 0], field.flow[..., 1]).max()) / box.scale
    reach = math.ceil(motion) + 2 + SMOOTH_PASSES + 1
    field_at = field.sampler()
    rows = max(1, _STRIP_PIXELS // max(1, rect.width))
    xs_row = np.arange(rect.x0, rect.x1, dtype=np.float64)
    for y0 in range(rect.y0, rect.y1, rows):
        strip = Rect(rect.x0, y0, rect.x1, min(rect.y1, y0 + rows))
        weight = weight_at(strip)
        if not weight.any():
            continue
        ys = np.arange(strip.y0, strip.y1, dtype=np.float64)[:, None]
        xs = np.broadcast_to(xs_row[None, :], weight.shape)
        ys = np.broadcast_to(ys, weight.shape)
        dx, dy, conf = field_at(strip)
        moved = np.hypot(dx, dy) * weight
        still = np.clip((moved - STILL) / STILL, 0.0, 1.0) * weight
        dx, dy = dx * still, dy * still
        fill = weight * (1.0 - np.clip(conf, 0.0, 1.0))
        touched = (still > 0) | (fill > 0)
        if not touched.any():
            continue
        sel = np.nonzero(touched)
        bands = SourceBands.read(  # Only the rows this strip's sources can lie in.
            layer,
            depth,
            Rect(
                max(0, rect.x0 - reach),
                max(0, strip.y0 - reach),
                min(layer.shape[1], rect.x1 + reach),
                min(layer.shape[0], strip.y1 + reach),
            ),
        )
        value = bands.sample(xs[sel] + dx[sel], ys[sel] + dy[sel])
        if (fill > 0).any():
            gen = gen_at(strip)[sel]
            value += fill[sel][:, None] * (gen - value)
        dst = out[strip.y0 - rect.y0 : strip.y1 - rect.y0]
        dst[sel[0], sel[1], :3] = from_float(value, depth)
    return Patch(pixels=out, x=rect.x0, y=rect.y0)


def taper_radius(field: LayerField, rect: Rect, feather: float) -> float:
    """How wide (layer pixels) the motion fades out towards the selection's and the box's edges:
    ``feather`` of the blend region's shorter side or of the box, whichever is less, but at
    least twice the largest motion (a steeper ramp would stretch the texture in it visibly), and
    never wider than ``feather`` of the box (the generator blend's ramp). A box much wider than
    the selection (several faces in one crop) so keeps the motion at the handles whole."""
    box = field.box
    widest = feather * box.side
    largest = float(np.hypot(field.flow[..., 0], field.flow[..., 1]).max()) / box.scale
    narrow = feather * min(box.side, rect.width, rect.height)
    return min(widest, max(narrow, 2.0 * largest))


def _is_grey(layer: np.ndarray, rect: Rect) -> bool:
    """Whether every pixel of ``rect`` has R = G = B (a grey layer stays grey)."""
    region = layer[rect.y0 : rect.y1, rect.x0 : rect.x1]
    return bool(
        np.array_equal(region[:, :, 0], region[:, :, 1])
        and np.array_equal(region[:, :, 1], region[:, :, 2])
    )
