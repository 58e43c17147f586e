"""Crop box choice, point maps, and layer <-> model resampling (incl. big layers)."""

import tracemalloc

import numpy as np
import pytest
import skimage.data
from PIL import Image

from gimp_draggan.edit.geometry import CropBox, Rect, choose_box, mask_rect, points_rect
from gimp_draggan.edit.pixels import to_float
from gimp_draggan.edit.sampling import layer_sampler, layer_to_model


def _u8(a: np.ndarray) -> np.ndarray:
    return to_float(a, "u8")


def test_box_is_a_centred_square_with_margin() -> None:
    box = choose_box(Rect(100, 50, 200, 110), 640, 480, resolution=64, margin=0.25)
    assert box.side == 150  # 100 * 1.5
    assert (box.x0 + box.side / 2, box.y0 + box.side / 2) == (150, 80)
    assert box.rect.contains(Rect(100, 50, 200, 110))


def test_small_needs_get_the_minimum_side() -> None:
    box = choose_box(Rect(10, 10, 12, 12), 640, 480, resolution=512)
    assert box.side == 256  # resolution // 2
    assert box.inside == Rect(0, 0, 139, 139)  # clipped at the layer's corner


def test_point_maps_are_inverse_and_centre_to_centre() -> None:
    box = CropBox(x0=-7, y0=13, side=300, layer_width=100, layer_height=400, resolution=64)
    pts = [(0.0, 13.0), (50.5, 200.25), (99.0, 399.0)]
    back = box.to_layer(box.to_model(pts))
    assert np.allclose(back, pts)
    # The centre of the box maps onto the centre of the model image.
    ((u, v),) = box.to_model([(box.x0 + 150 - 0.5, box.y0 + 150 - 0.5)])
    assert (u, v) == pytest.approx((31.5, 31.5))


def test_rects_of_points_and_masks() -> None:
    assert points_rect([(3.4, 7.6), (10.0, 2.0)], 20, 20) == Rect(3, 2, 11, 9)
    m = np.zeros((10, 12), np.uint8)
    m[4, 5] = 1
    m[6, 9] = 200
    assert mask_rect(m) == Rect(5, 4, 10, 7)
    assert mask_rect(np.zeros((3, 3), np.uint8)).empty


def test_crop_of_a_real_photo_matches_a_direct_lanczos_resize() -> None:
    img = skimage.data.astronaut()  # 512 x 512 portrait
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    box = choose_box(Rect(180, 80, 300, 230), 512, 512, resolution=64)
    assert box.inside == box.rect  # wholly on the layer
    got = layer_to_model(rgba, box, _u8)
    ref_img = Image.fromarray(img).crop((box.x0, box.y0, box.x0 + box.side, box.y0 + box.side))
    ref = np.asarray(ref_img.resize((64, 64), Image.Resampling.LANCZOS), np.float32) / 255
    assert got.shape == (64, 64, 4)
    diff = np.abs(np.clip(got[:, :, :3], 0, 1) - ref)  # Pillow's 8-bit path clips overshoot
    assert diff.max() < 5 / 255 and diff.mean() < 0.5 / 255  # and rounds between its two passes
    assert np.allclose(got[:, :, 3], 1.0, atol=1e-3)


def test_the_box_is_reflected_where_it_leaves_the_layer() -> None:
    # A horizontal ramp, the box sticking out on the left: mirrored values appear there.
    w, h = 40, 40
    ramp = np.tile(np.arange(w, dtype=np.float32), (h, 1))[:, :, None]
    box = CropBox(x0=-20, y0=0, side=40, layer_width=w, layer_height=h, resolution=40)
    got = layer_to_model(ramp, box, lambda a: a.astype(np.float32))[:, :, 0]
    assert got[20, 25] == pytest.approx(5.0, abs=0.05)  # inside: layer column 5
    assert got[20, 15] == pytest.approx(5.0, abs=0.05)  # outside: column -5 mirrors 5
    zeros = layer_to_model(
        np.ones((h, w), np.float32), box, lambda a: a.astype(np.float32), pad_mode="constant"
    )
    assert zeros[20, 2] == pytest.approx(0.0, abs=1e-3) and zeros[20, 38] == pytest.approx(1.0)


def test_a_one_pixel_wide_layer_can_be_cropped() -> None:
    layer = np.full((9, 1, 4), 77, np.uint8)
    box = choose_box(Rect(0, 4, 1, 5), 1, 9, resolution=16)
    got = layer_to_model(layer, box, _u8)
    assert np.allclose(got, 77 / 255, atol=1e-4)


def test_big_box_is_averaged_down_close_to_the_exact_resize() -> None:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize((1000, 800), Image.Resampling.BICUBIC))
    box = choose_box(Rect(100, 100, 700, 700), 1000, 800, resolution=64, margin=0.0)
    assert box.side // (2 * box.resolution) > 1  # takes the block-average path
    got = layer_to_model(big, box, _u8)
    ref = (
        np.asarray(
            Image.fromarray(big)
            .crop((100, 100, 700, 700))
            .resize((64, 64), Image.Resampling.LANCZOS),
            np.float32,
        )
        / 255
    )
    assert np.abs(got - ref).mean() < 0.01


def test_layer_sampler_inverts_the_crop_on_smooth_content() -> None:
    yy, xx = np.mgrid[0:300, 0:300].astype(np.float32)
    smooth = (np.sin(xx / 40) * np.cos(yy / 30) * 0.5 + 0.5)[:, :, None]
    box = CropBox(x0=20, y0=30, side=200, layer_width=300, layer_height=300, resolution=64)
    model = layer_to_model(smooth, box, lambda a: a.astype(np.float32))
    rect = Rect(40, 50, 200, 210)
    back = layer_sampler(model, box)(rect)
    assert back.shape == (160, 160, 1)
    assert np.abs(back - smooth[50:210, 40:200]).max() < 0.02
    with pytest.raises(ValueError, match="not inside the crop box"):
        layer_sampler(model, box)(Rect(0, 0, 10, 10))


def test_a_huge_layer_is_cropped_with_bounded_memory() -> None:
    # 8000 x 6000 RGBA u8 (192 MB) with a selection over all of it: a float copy of the box
    # would take 768 MB; the strip-wise block average stays far below.
    layer = np.zeros((6000, 8000, 4), np.uint8)
    layer[:, :4000] = 200
    box = choose_box(Rect(0, 0, 8000, 6000), 8000, 6000, resolution=256)
    tracemalloc.start()
    try:
        got = layer_to_model(layer, box, _u8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.shape == (256, 256, 4)
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MB"
    ((u, v),) = box.to_model([(2000.0, 3000.0)])
    assert got[round(v), round(u), 0] == pytest.approx(200 / 255, abs=0.01)


def test_bad_boxes_are_refused() -> None:
    with pytest.raises(ValueError, match="nothing to crop"):
        choose_box(Rect(5, 5, 5, 9), 10, 10, 64)
    with pytest.raises(ValueError, match="layer is"):
        layer_to_model(np.zeros((5, 5, 4), np.uint8), CropBox(0, 0, 5, 6, 5, 8), _u8)


def test_the_converter_may_change_the_channel_count_on_the_big_path() -> None:
    layer = np.full((1200, 1200, 4), 100, np.uint8)
    box = choose_box(Rect(0, 0, 1200, 1200), 1200, 1200, resolution=64, margin=0.0)
    assert box.side // (2 * box.resolution) > 1
    got = layer_to_model(layer, box, lambda a: to_float(a, "u8")[..., :3])
    assert got.shape == (64, 64, 3) and np.allclose(got, 100 / 255, atol=1e-4)
