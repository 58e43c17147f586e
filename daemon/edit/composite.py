"""Put the model's result back into the layer as a small patch.

The blend weight of a layer pixel is ``selection/255 · inward feather · box feather · change``:
the selection (all 1 when there is none) times a ramp that is 0 on its edge and reaches 1
``feather`` pixels inside it, times a ramp that fades out towards the crop box's edges (the
turned square's edges for a turned box, 0 outside it), times
(optionally) a soft map of where the drag changed the generator's image. A pixel of weight 0 is
copied byte for byte from the input, so everything outside the selection (or the box), and every
fully transparent pixel, is unchanged; a partly selected pixel moves that much of the way, as GIMP
applies a filter through a soft selection. Alpha always comes from the input.

The patch is the bounding box of the pixels that may change; it is built a strip of rows at a
time, so memory stays bounded for layer-sized selections.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from gimp_draggan.edit.geometry import CropBox, Rect, mask_rect
from gimp_draggan.edit.pixels import DTYPES, from_float, to_float
from gimp_draggan.edit.sampling import layer_sampler, resize_region

_STRIP_BYTES = 32 << 20
_MAX_FEATHER_GRID = 1024  # The selection feather is computed on a grid at most this wide.


@dataclass(frozen=True)
class Patch:
    pixels: np.ndarray  # [height, width, 4] in the layer's dtype.
    x: int  # Offset in the layer.
    y: int

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def rect(self) -> Rect:
        """Where the patch lies in the layer."""
        return Rect(self.x, self.y, self.x + self.width, self.y + self.height)


def box_blur(a: np.ndarray, radius: int, passes: int = 3) -> np.ndarray:
    """Approximate Gaussian blur of a 2-D float array (repeated box filters, zeros outside)."""
    if radius <= 0:
        return a.astype(np.float32, copy=True)
    out = a.astype(np.float32, copy=True)
    width = 2 * radius + 1
    for _ in range(passes):
        for axis in (0, 1):
            pad = [(0, 0), (0, 0)]
            pad[axis] = (radius + 1, radius)
            c = np.cumsum(np.pad(out, pad), axis=axis, dtype=np.float64)
            n = out.shape[axis]
            hi = np.take(c, np.arange(width, width + n), axis=axis)
            lo = np.take(c, np.arange(0, n), axis=axis)
            out = ((hi - lo) / width).astype(np.float32)
    return out


def inward_feather(support: np.ndarray, radius: int) -> np.ndarray:
    """Ramp in [0, 1]: 0 outside ``support`` and on its edge, 1 about ``radius`` pixels inside.

    If the selection is too thin to reach 1 anywhere, the radius is halved until it does (down to
    a hard edge), so a small selection still takes the edit instead of silently taking none."""
    b = support.astype(np.float32)
    r = max(0, int(radius))
    while r > 0:
        f = np.clip(2.0 * box_blur(b, max(1, round(r / 2))) - 1.0, 0.0, 1.0) * b
        if f.max() >= 0.999:
            return f
        r //= 2
    return b


def _feather_cell(rect: Rect) -> int:
    """Side, in layer pixels, of one cell of the selection-feather grid over ``rect``."""
    return max(1, math.ceil(max(rect.width, rect.height) / _MAX_FEATHER_GRID))


def _selection_feather(selection: np.ndarray, rect: Rect, radius: float) -> np.ndarray:
    """Inward feather of the selection's support over ``rect``, on a grid of at most
    ``_MAX_FEATHER_GRID`` pixels a side (a smooth ramp: resampled per strip later)."""
    sel = selection[rect.y0 : rect.y1, rect.x0 : rect.x1] > 0
    q = _feather_cell(rect)
    if q > 1:
        h, w = sel.shape
        hh, ww = -(-h // q), -(-w // q)
        blocks = np.pad(sel, [(0, hh * q - h), (0, ww * q - w)]).reshape(hh, q, ww, q)
        support = blocks.sum(axis=(1, 3), dtype=np.int32) * 2 >= q * q
    else:
        support = sel
    return inward_feather(support, round(radius / q))


def _box_feather(box: CropBox, rect: Rect, radius: float) -> np.ndarray:
    """Ramp 0 at the crop box's edge -> 1 at ``radius`` pixels inside, over ``rect``; for a
    turned box the distance is to the turned square's edges (0 outside it)."""
    if box.angle != 0.0:
        xs64 = np.arange(rect.x0, rect.x1, dtype=np.float64) + 0.5
        ys64 = np.arange(rect.y0, rect.y1, dtype=np.float64) + 0.5
        u, v = box.local(xs64[None, :], ys64[:, None])
        inner = box.side / 2.0 - np.maximum(np.abs(u), np.abs(v))
        return np.clip(inner / max(radius, 1e-6), 0.0, 1.0).astype(np.float32)
    xs = np.arange(rect.x0, rect.x1, dtype=np.float32) + 0.5
    ys = np.arange(rect.y0, rect.y1, dtype=np.float32) + 0.5
    b = box.rect
    dx = np.minimum(xs - b.x0, b.x1 - xs)
    dy = np.minimum(ys - b.y0, b.y1 - ys)
    d = np.minimum(dy[:, None], dx[None, :])
    return np.clip(d / max(radius, 1e-6), 0.0, 1.0).astype(np.float32)


def blend_rect(box: CropBox, selection: np.ndarray | None) -> Rect:
    """Bounding box of the layer pixels that may change."""
    inside = box.inside
    if selection is None:
        return inside
    r = mask_rect(selection[inside.y0 : inside.y1, inside.x0 : inside.x1])
    if r.empty:
        return r
    return Rect(r.x0 + inside.x0, r.y0 + inside.y0, r.x1 + inside.x0, r.y1 + inside.y0)


def change_weight(
    result: np.ndarray, recon: np.ndarray, threshold: float, radius: int
) -> np.ndarray:
    """Where the drag changed the image: ``[R, R]`` in [0, 1] from ``result`` vs the
    reconstruction ``recon`` ([R, R, 3]). 1 where a channel moved by ``threshold`` or more
    (after a light blur against noise), spread out and softened over ``radius`` pixels.

    Multiplying the blend by it keeps the photo's own pixels wherever the drag left the image
    alone, instead of the generator's imperfect copy of them."""
    if result.shape != recon.shape or result.ndim != 3:
        raise ValueError(
            f"change map needs equal [R, R, 3] images, got {result.shape}, {recon.shape}"
        )
    if threshold <= 0:
        raise ValueError(f"change threshold must be > 0, got {threshold}")
    diff = np.abs(result - recon).max(axis=2)
    moved = np.clip(box_blur(diff, max(1, radius // 4)) / threshold, 0.0, 1.0)
    return np.clip(2.0 * box_blur(moved, radius), 0.0, 1.0)


def match_low_frequencies(
    result: np.ndarray, target: np.ndarray, recon: np.ndarray, radius: int
) -> np.ndarray:
    """Add the blurred inversion error (target - reconstruction) to ``result`` ([R, R, C] float),
    so the patch keeps the photo's tone where the tuned generator drifted."""
    if not result.shape == target.shape == recon.shape:
        raise ValueError(
            f"colour matching needs equal shapes, got {result.shape}, {target.shape}, {recon.shape}"
        )
    diff = target - recon
    lowpass = np.stack([box_blur(diff[:, :, c], radius) for c in range(diff.shape[2])], axis=-1)
    return (result + lowpass).astype(np.float32)


def composite(
    layer: np.ndarray,
    depth: str,
    box: CropBox,
    result: np.ndarray,
    selection: np.ndarray | None = None,
    feather: float = 1.0 / 16.0,  # Ramp width as a fraction of the crop side.
    change: np.ndarray | None = None,  # [R, R] in [0, 1]: where the drag changed the image.
) -> Patch:
    """Blend the model-space ``result`` ([R, R, 3] float32, 1.0 = full) into ``layer``
    ([H, W, 4] in ``depth``'s dtype) through the feathered ``selection`` ([H, W] u8 or None),
    and, when given, the ``change`` map (see `change_weight`)."""
    if layer.ndim != 3 or layer.shape[2] != 4 or layer.dtype != DTYPES.get(depth):
        raise ValueError(f"layer must be [H, W, 4] {depth}, got {layer.dtype} {list(layer.shape)}")
    if layer.shape[:2] != (box.layer_height, box.layer_width):
        raise ValueError("layer size differs from the crop box's layer size")
    r = box.resolution
    if result.shape != (r, r, 3):
        raise ValueError(f"result must be [{r}, {r}, 3], got {list(result.shape)}")
    if change is not None and change.shape != (r, r):
        raise ValueError(f"change map must be [{r}, {r}], got {list(change.shape)}")
    if selection is not None and selection.shape != layer.shape[:2]:
        raise ValueError(f"selection is {list(selection.shape)}, layer is {list(layer.shape[:2])}")
    rect = blend_rect(box, selection)
    if rect.empty:
        raise ValueError("the selection does not overlap the crop: nothing can change")
    weight_at = blend_weight(layer, box, selection, rect, feather * box.side)
    out = np.array(layer[rect.y0 : rect.y1, rect.x0 : rect.x1])
    result_at = layer_sampler(result, box)
    change_at = None if change is None else layer_sampler(change, box, smooth=True)
    rows = max(1, _STRIP_BYTES // (rect.width * 4 * 16))
    for y0 in range(rect.y0, rect.y1, rows):
        strip = Rect(rect.x0, y0, rect.x1, min(rect.y1, y0 + rows))
        weight = weight_at(strip)
        if change_at is not None:
            weight *= np.clip(change_at(strip), 0.0, 1.0)
        orig = layer[strip.y0 : strip.y1, strip.x0 : strip.x1]
        if not weight.any():
            continue
        new = result_at(strip)
        base = to_float(orig[:, :, :3], depth)
        new -= base
        new *= weight[:, :, None]
        new += base
        dst = out[strip.y0 - rect.y0 : strip.y1 - rect.y0, :, :3]
        np.copyto(dst, from_float(new, depth), where=(weight > 0)[:, :, None])
    return Patch(pixels=out, x=rect.x0, y=rect.y0)


def blend_weight(
    layer: np.ndarray,
    box: CropBox,
    selection: np.ndarray | None,
    rect: Rect,
    radius: float,
) -> Callable[[Rect], np.ndarray]:
    """The blend weight over strips of ``rect`` (see the module doc, without the change map):
    selection x its inward feather x the box's feather (ramps ``radius`` layer pixels wide),
    0 under alpha 0; ``[h, w]`` float32."""
    radius = max(1.0, radius)
    sel_feather = None if selection is None else _selection_feather(selection, rect, radius)

    def weight_at(strip: Rect) -> np.ndarray:
        weight = _box_feather(box, strip, radius)
        if selection is not None and sel_feather is not None:
            sel = selection[strip.y0 : strip.y1, strip.x0 : strip.x1]
            weight *= sel.astype(np.float32) / 255.0
            weight *= _feather_rows(sel_feather, rect, strip)
        weight *= layer[strip.y0 : strip.y1, strip.x0 : strip.x1, 3] != 0
        return weight

    return weight_at


def _feather_rows(grid: np.ndarray, rect: Rect, strip: Rect) -> np.ndarray:
    """The selection feather (on its possibly coarser grid over ``rect``) at ``strip``'s pixels."""
    gh, gw = grid.shape
    if (gh, gw) == (rect.height, rect.width):
        return grid[strip.y0 - rect.y0 : strip.y1 - rect.y0]
    q = _feather_cell(rect)
    src = (0.0, (strip.y0 - rect.y0) / q, rect.width / q, (strip.y1 - rect.y0) / q)
    return resize_region(grid, (strip.width, strip.height), src, Image.Resampling.BILINEAR)
