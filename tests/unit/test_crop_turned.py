"""Turned crop boxes (CropBox.angle): point maps, bounds, and resampling of a real photo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import skimage.data
from PIL import Image

from gimp_draggan.edit.geometry import CropBox, Rect
from gimp_draggan.edit.pixels import to_float
from gimp_draggan.edit.sampling import layer_sampler, layer_to_model, preview_on_rect


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10.0 * math.log10(1.0 / float(np.mean((a - b) ** 2)))


def test_point_maps_follow_the_spec_and_are_inverse() -> None:
    a = 0.7
    box = CropBox(
        x0=40, y0=-12, side=150, layer_width=300, layer_height=200, resolution=64, angle=a
    )
    cx, cy = box.centre
    s = 64 / 150
    p = (123.25, 37.5)
    qx, qy = p[0] + 0.5 - cx, p[1] + 0.5 - cy
    u = math.cos(a) * qx + math.sin(a) * qy
    v = -math.sin(a) * qx + math.cos(a) * qy
    assert box.to_model([p])[0] == pytest.approx(((u + 75) * s - 0.5, (v + 75) * s - 0.5))
    pts = [(0.0, 0.0), (123.25, 37.5), (299.0, 199.0), (-40.0, 310.5)]
    assert np.allclose(box.to_layer(box.to_model(pts)), pts)
    model_pts = [(0.0, 0.0), (31.5, 31.5), (63.0, 10.25)]
    assert np.allclose(box.to_model(box.to_layer(model_pts)), model_pts)
    # The model's centre is the square's centre; its +x axis runs along (cos a, sin a).
    (x, y), (x1, y1) = box.to_layer([(31.5, 31.5), (32.5, 31.5)])
    assert (x + 0.5, y + 0.5) == pytest.approx((cx, cy))
    assert (x1 - x, y1 - y) == pytest.approx((math.cos(a) / s, math.sin(a) / s))


def test_an_unturned_box_keeps_the_old_maps_exactly() -> None:
    box = CropBox(x0=-7, y0=13, side=300, layer_width=100, layer_height=400, resolution=64)
    pts = [(0.0, 13.0), (50.5, 200.25)]
    s = 64 / 300
    assert box.to_model(pts) == [
        ((x + 0.5 + 7) * s - 0.5, (y + 0.5 - 13) * s - 0.5) for x, y in pts
    ]
    assert box.rect == Rect(-7, 13, 293, 313)


@pytest.mark.parametrize("angle", [0.3, -1.2, math.pi / 4, 2.9])
def test_rect_bounds_the_turned_square_tightly(angle: float) -> None:
    box = CropBox(
        x0=10, y0=20, side=101, layer_width=200, layer_height=200, resolution=32, angle=angle
    )
    r = box.rect
    corners = box.to_layer([(-0.5, -0.5), (31.5, -0.5), (31.5, 31.5), (-0.5, 31.5)])
    xs = [x + 0.5 for x, _ in corners]  # pixel centres -> edges
    ys = [y + 0.5 for _, y in corners]
    assert r.x0 <= min(xs) < r.x0 + 1 and r.x1 - 1 < max(xs) <= r.x1
    assert r.y0 <= min(ys) < r.y0 + 1 and r.y1 - 1 < max(ys) <= r.y1
    assert r.width == r.height  # the centre sits on a half pixel
    assert box.inside == r.intersect(Rect(0, 0, 200, 200))


def test_holds_uses_the_turned_square() -> None:
    box = CropBox(
        x0=0, y0=0, side=100, layer_width=300, layer_height=300, resolution=32, angle=math.pi / 4
    )
    assert box.holds([(49.5, 49.5)])  # the centre
    assert box.holds([(49.5, 49.5 - 69.0)])  # toward a corner of the diamond
    assert not box.holds([(1.0, 1.0)])  # a corner of the bounding rect
    assert box.rect.contains(Rect(0, 0, 3, 3))
    assert not box.holds(Rect(0, 0, 3, 3))
    assert box.holds(Rect(30, 30, 70, 70)) and not box.holds(Rect(5, 20, 70, 70))
    upright = CropBox(0, 0, 100, 300, 300, 32)
    assert upright.holds(Rect(0, 0, 100, 100)) and not upright.holds(Rect(0, 0, 101, 100))
    assert upright.holds([(0.0, 0.0), (99.0, 99.0)]) and not upright.holds([(100.0, 5.0)])


def test_bad_angles_are_refused() -> None:
    with pytest.raises(ValueError, match="angle"):
        CropBox(0, 0, 10, 10, 10, 8, angle=float("nan"))


def _turned_canvas(img: np.ndarray, square: tuple[int, int, int], box: CropBox) -> np.ndarray:
    """``img`` turned with Pillow into a canvas of the box's layer size so that the original
    ``square`` (x0, y0, side) lands on ``box`` (same side, turned by ``box.angle``)."""
    ox, oy, side = square
    cx, cy = box.centre
    co = (ox + side / 2, oy + side / 2)
    c, s = math.cos(box.angle), math.sin(box.angle)
    # Canvas edge point P -> original edge point co + Rot(-angle)(P - centre).
    data = (c, s, co[0] - c * cx - s * cy, -s, c, co[1] + s * cx - c * cy)
    canvas = Image.fromarray(img).transform(
        (box.layer_width, box.layer_height),
        Image.Transform.AFFINE,
        data,
        Image.Resampling.BICUBIC,
    )
    return np.dstack([np.asarray(canvas), np.full(canvas.size[::-1], 255, np.uint8)])


@pytest.mark.parametrize("degrees", [17.0, -35.0, 60.0])
def test_a_turned_photo_comes_back_upright(degrees: float) -> None:
    # The astronaut's face square, turned into a bigger canvas; cropping the canvas with the
    # matching angle gives back the upright face. Measured PSNR against the direct Lanczos
    # resize of the original square: 39.1-39.4 dB at these angles (two resamplings of ours
    # plus the canvas's own bicubic turn). A crop 1 layer pixel off scores 26.8 dB and one
    # turned 1 degree off 25.0 dB, so 35 dB proves the geometry to well under a pixel.
    img = skimage.data.astronaut()
    square = (150, 30, 200)
    r = 128
    ref_img = Image.fromarray(img).crop((150, 30, 350, 230))
    ref = np.asarray(ref_img.resize((r, r), Image.Resampling.LANCZOS), np.float32) / 255
    box = CropBox(
        x0=250,
        y0=230,
        side=200,
        layer_width=700,
        layer_height=650,
        resolution=r,
        angle=math.radians(degrees),
    )
    canvas = _turned_canvas(img, square, box)
    got = np.clip(layer_to_model(canvas, box, lambda a: to_float(a, "u8"))[:, :, :3], 0, 1)
    assert got.shape == (r, r, 3)
    assert _psnr(got, ref) >= 35.0


def test_a_turned_box_sticking_out_is_reflected_and_masks_pad_with_zeros() -> None:
    w, h = 60, 50
    ramp = np.tile(np.arange(w, dtype=np.float32), (h, 1))
    box = CropBox(
        x0=-30, y0=5, side=40, layer_width=w, layer_height=h, resolution=40, angle=math.pi
    )  # upside down, half off the layer
    got = layer_to_model(ramp, box, lambda a: a.astype(np.float32))
    ((u_in, v),) = box.to_model([(5.0, 25.0)])
    ((u_out, _),) = box.to_model([(-5.0, 25.0)])  # mirrors column 5
    assert got[round(v), round(u_in)] == pytest.approx(5.0, abs=0.1)
    assert got[round(v), round(u_out)] == pytest.approx(5.0, abs=0.1)
    ones = layer_to_model(
        np.ones((h, w), np.float32), box, lambda a: a.astype(np.float32), pad_mode="constant"
    )
    assert ones[20, round(u_out)] == pytest.approx(0.0, abs=0.02)
    assert ones[20, round(u_in)] == pytest.approx(1.0, abs=0.02)


def test_a_big_turned_box_is_averaged_down_with_the_right_geometry() -> None:
    # A box 10x the model: the block-average path; a bright square lands where to_model says.
    layer = np.zeros((1400, 1500), np.uint8)
    layer[600:700, 800:900] = 255
    box = CropBox(
        x0=150, y0=100, side=1200, layer_width=1500, layer_height=1400, resolution=64, angle=0.4
    )
    assert box.side // (2 * box.resolution) > 1
    got = layer_to_model(layer, box, lambda a: a.astype(np.float32) / 255)
    ((u, v),) = box.to_model([(849.5, 649.5)])
    assert got[round(v), round(u)] > 0.9
    ys, xs = np.nonzero(got > 0.5)
    assert abs(xs.mean() - u) < 0.5 and abs(ys.mean() - v) < 0.5


@pytest.mark.parametrize(("side", "res"), [(200, 64), (90, 128)])
def test_layer_sampler_inverts_a_turned_crop_on_smooth_content(side: int, res: int) -> None:
    yy, xx = np.mgrid[0:300, 0:320].astype(np.float32)
    smooth = (np.sin(xx / 40) * np.cos(yy / 30) * 0.5 + 0.5)[:, :, None]
    box = CropBox(
        x0=60, y0=50, side=side, layer_width=320, layer_height=300, resolution=res, angle=-0.6
    )
    model = layer_to_model(smooth, box, lambda a: a.astype(np.float32))
    rect = box.inside
    back = layer_sampler(model, box)(rect)
    assert back.shape == (rect.height, rect.width, 1)
    ys, xs = np.mgrid[rect.y0 : rect.y1, rect.x0 : rect.x1] + 0.5
    u, v = box.local(xs, ys)
    deep = np.maximum(np.abs(u), np.abs(v)) < side / 2 - 4
    err = np.abs(back - smooth[rect.y0 : rect.y1, rect.x0 : rect.x1])[:, :, 0]
    assert err[deep].max() < 0.02
    smooth_back = layer_sampler(model, box, smooth=True)(rect)
    assert np.abs(smooth_back - back)[deep].max() < 0.02
    with pytest.raises(ValueError, match="not inside the crop box"):
        layer_sampler(model, box)(Rect(rect.x0 - 1, rect.y0, rect.x1, rect.y1))


def test_preview_on_rect_draws_the_model_image_upright_on_the_bounding_square() -> None:
    box = CropBox(
        x0=20, y0=20, side=100, layer_width=200, layer_height=200, resolution=64, angle=math.pi / 6
    )
    image = np.zeros((64, 64, 3), np.float32)
    image[:32] = 1.0  # model's top half white
    backdrop = np.full((48, 48, 3), 0.5, np.float32)
    out = preview_on_rect(image, backdrop, box)
    rect = box.rect
    step = rect.width / 48
    assert out.shape == (48, 48, 3)
    assert np.all(out[0, 0] == 0.5) and np.all(out[47, 47] == 0.5)  # corners: backdrop
    for model_pt, value in (((31.5, 8.0), 1.0), ((31.5, 56.0), 0.0)):
        ((x, y),) = box.to_layer([model_pt])
        i, j = int((y + 0.5 - rect.y0) / step), int((x + 0.5 - rect.x0) / step)
        assert out[i, j, 0] == pytest.approx(value, abs=0.05)
    with pytest.raises(ValueError, match="backdrop"):
        preview_on_rect(image, backdrop[:40], box)
