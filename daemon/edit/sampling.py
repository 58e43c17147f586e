"""Pixels through a crop box: the model's R x R view of the layer, and its result back.

Where the square leaves the layer, the missing part is filled by reflecting the layer at its
border; nothing outside the layer is ever written back. The square is resized to the model
resolution with Lanczos.

Memory stays bounded for big layers: only the box's pixels are read, and when the box is much
larger than the model (side >= 4x resolution), it is first averaged down by whole pixel blocks,
a strip of rows at a time, so no float copy of the full box is ever made.

A turned box (faces aligned as in FFHQ and the embedded model's heads) is made in two
resamplings: the box's bounding rectangle is resized (Lanczos, after the same block average) so
one pixel is one model pixel, then that upright image is turned into R x R with Pillow's bicubic
affine transform on float planes. The way back mirrors it (turn upright at model scale, then
Lanczos onto the layer pixels). An unturned box (angle 0) takes the one-resize path, so its
results do not change by a bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from PIL import Image

from gimp_draggan.edit.geometry import Affine, CropBox, Rect
from gimp_draggan.edit.pixels import to_float
from gimp_draggan.edit.types import Point

_STRIP_BYTES = 16 << 20  # Float working memory per strip when averaging a big box down.
_TURN_MARGIN = 3  # Extra pixels (model scale) round the upright image of a turned box.
_MODEL_PAD = 4  # Model pixels of edge padding before a result is turned back.
FLATTEN_GREY = 0.5  # Background the model sees behind transparent pixels.


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
