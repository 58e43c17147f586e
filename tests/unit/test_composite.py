"""Composite: the patch changes only the blend region, byte for byte, at every depth."""

import numpy as np
import pytest
import skimage.data

from gimp_draggan.edit.composite import (
    Patch,
    box_blur,
    change_weight,
    composite,
    inward_feather,
    match_low_frequencies,
)
from gimp_draggan.edit.geometry import CropBox, Rect, choose_box, mask_rect
from gimp_draggan.edit.pixels import from_float


def _apply(layer: np.ndarray, patch: Patch) -> np.ndarray:
    out = layer.copy()
    out[patch.y : patch.y + patch.height, patch.x : patch.x + patch.width] = patch.pixels
    return out


def _result(res: int, value: float = 0.0) -> np.ndarray:
    """A model result far from any photo: changes show wherever the weight is > 0."""
    return np.full((res, res, 3), value, np.float32)


def _photo() -> np.ndarray:
    img = skimage.data.chelsea()  # 451 x 300 cat, odd width
    return np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])


def test_without_selection_only_the_box_changes_on_a_real_photo() -> None:
    layer = _photo()
    h, w = layer.shape[:2]
    box = choose_box(Rect(150, 60, 260, 170), w, h, resolution=32)
    patch = composite(layer, "u8", box, _result(32, 1.0))
    assert (patch.x, patch.y, patch.width, patch.height) == (
        box.inside.x0,
        box.inside.y0,
        box.inside.width,
        box.inside.height,
    )
    out = _apply(layer, patch)
    changed = np.any(out != layer, axis=2)
    r = mask_rect(changed)
    assert box.inside.contains(r)
    assert changed[box.y0 + box.side // 2, box.x0 + box.side // 2]  # the middle changed
    assert np.array_equal(out[:, :, 3], layer[:, :, 3])
    # The box feather fades out: the first row of the box moves less than the middle.
    cx, cy = box.x0 + box.side // 2, box.y0 + box.side // 2
    edge = np.abs(out[box.y0, cx].astype(int) - layer[box.y0, cx])
    mid = np.abs(out[cy, cx].astype(int) - layer[cy, cx])
    assert edge[:3].sum() < mid[:3].sum()


def test_a_selection_bounds_every_change_on_an_odd_sized_layer() -> None:
    rng = np.random.default_rng(3)
    layer = rng.integers(0, 256, (23, 37, 4), dtype=np.uint8)
    sel = np.zeros((23, 37), np.uint8)
    sel[5:18, 9:30] = 255
    sel[2, 33] = 255  # an island far from the rest
    box = CropBox(x0=-10, y0=-12, side=50, layer_width=37, layer_height=23, resolution=16)
    patch = composite(layer, "u8", box, _result(16, 0.5), sel)
    out = _apply(layer, patch)
    assert np.array_equal(out[sel == 0], layer[sel == 0])
    assert np.array_equal(out[:, :, 3], layer[:, :, 3])
    assert (patch.x, patch.y, patch.width, patch.height) == (9, 2, 25, 16)  # bbox of selection
    assert not np.array_equal(out[11, 19], layer[11, 19])  # deep inside: changed


def test_crop_touching_every_border() -> None:
    rng = np.random.default_rng(4)
    layer = rng.integers(0, 256, (15, 21, 4), dtype=np.uint8)
    box = choose_box(Rect(0, 0, 21, 15), 21, 15, resolution=16)  # bigger than the layer
    assert box.x0 < 0 and box.y0 < 0 and box.x0 + box.side > 21 and box.y0 + box.side > 15
    patch = composite(layer, "u8", box, _result(16, 1.0))
    assert (patch.x, patch.y, patch.width, patch.height) == (0, 0, 21, 15)
    out = _apply(layer, patch)
    assert np.array_equal(out[:, :, 3], layer[:, :, 3])
    assert np.all(out[7, 10, :3] > layer[7, 10, :3]) or np.all(layer[7, 10, :3] == 255)


def test_one_pixel_selection_takes_the_edit_and_nothing_else_moves() -> None:
    layer = np.full((31, 33, 4), 10, np.uint8)
    sel = np.zeros((31, 33), np.uint8)
    sel[15, 16] = 255
    box = choose_box(Rect(16, 15, 17, 16), 33, 31, resolution=16)
    patch = composite(layer, "u8", box, _result(16, 1.0), sel)
    assert (patch.x, patch.y, patch.width, patch.height) == (16, 15, 1, 1)
    out = _apply(layer, patch)
    assert np.all(out[15, 16, :3] > 200)  # a hard edge: the pixel is replaced
    mask = np.ones((31, 33), bool)
    mask[15, 16] = False
    assert np.array_equal(out[mask], layer[mask])


def test_partial_selection_blends_like_gimp() -> None:
    layer = np.full((64, 64, 4), 40, np.uint8)
    sel = np.zeros((64, 64), np.uint8)
    sel[4:60, 4:60] = 128
    box = CropBox(x0=-8, y0=-8, side=80, layer_width=64, layer_height=64, resolution=16)
    patch = composite(layer, "u8", box, _result(16, 1.0), sel, feather=1 / 16)
    out = _apply(layer, patch)
    expected = 40 + (255 - 40) * 128 / 255  # deep inside: feather weight 1
    assert abs(int(out[32, 32, 0]) - expected) <= 1
    assert out[4, 32, 0] < out[32, 32, 0]  # on the edge: feathered inwards
    assert np.array_equal(out[sel == 0], layer[sel == 0])


def test_fully_transparent_pixels_are_untouched() -> None:
    rng = np.random.default_rng(5)
    layer = rng.integers(0, 256, (40, 40, 4), dtype=np.uint8)
    layer[:, :, 3] = 255
    layer[10:30, 20:, 3] = 0  # a transparent hole
    box = CropBox(x0=0, y0=0, side=40, layer_width=40, layer_height=40, resolution=16)
    patch = composite(layer, "u8", box, _result(16, 0.5))
    out = _apply(layer, patch)
    hole = layer[:, :, 3] == 0
    assert np.array_equal(out[hole], layer[hole])  # RGB under alpha 0 kept too
    assert not np.array_equal(out[20, 10], layer[20, 10])


@pytest.mark.parametrize("depth", ["u16", "f32"])
def test_high_bit_depths_keep_their_depth_and_bytes(depth: str) -> None:
    rng = np.random.default_rng(6)
    base = rng.uniform(0, 1, (30, 30, 4)).astype(np.float32)
    base[:, :, 3] = 1
    if depth == "f32":
        base[0:5, 0:5, :3] = 3.5  # HDR values outside [0, 1]
    layer = from_float(base, depth)
    sel = np.zeros((30, 30), np.uint8)
    sel[10:25, 8:26] = 255
    box = CropBox(x0=0, y0=0, side=30, layer_width=30, layer_height=30, resolution=16)
    patch = composite(layer, depth, box, _result(16, 0.25), sel)
    assert patch.pixels.dtype == layer.dtype
    out = _apply(layer, patch)
    assert out[sel == 0].tobytes() == layer[sel == 0].tobytes()
    assert not np.array_equal(out[17, 17], layer[17, 17])


def test_inward_feather_is_zero_outside_and_full_deep_inside() -> None:
    support = np.zeros((40, 40), bool)
    support[5:35, 5:35] = True
    f = inward_feather(support, 6)
    assert np.all(f[~support] == 0)
    assert f[20, 20] == pytest.approx(1.0, abs=1e-3)
    assert 0 < f[5, 20] < f[8, 20] < f[20, 20] + 1e-6
    thin = np.zeros((9, 9), bool)
    thin[4, 4] = True
    assert inward_feather(thin, 6)[4, 4] == 1.0  # too thin to feather: hard edge


def test_box_blur_keeps_the_mean_of_a_constant_inside() -> None:
    a = np.ones((30, 30), np.float32)
    assert box_blur(a, 3)[15, 15] == pytest.approx(1.0)
    assert box_blur(a, 3)[0, 0] < 0.5  # zeros outside


def test_colour_matching_adds_back_the_low_frequency_error() -> None:
    target = np.full((32, 32, 3), 0.6, np.float32)
    recon = np.full((32, 32, 3), 0.5, np.float32)
    result = np.full((32, 32, 3), 0.3, np.float32)
    out = match_low_frequencies(result, target, recon, radius=2)
    assert out[16, 16] == pytest.approx([0.4, 0.4, 0.4], abs=1e-5)
    with pytest.raises(ValueError, match="equal shapes"):
        match_low_frequencies(result, target[:8], recon, 2)


def test_bad_inputs_are_refused() -> None:
    layer = np.zeros((10, 10, 4), np.uint8)
    box = CropBox(0, 0, 10, 10, 10, 8)
    with pytest.raises(ValueError, match="result must be"):
        composite(layer, "u8", box, _result(4))
    with pytest.raises(ValueError, match="layer must be"):
        composite(layer, "u16", box, _result(8))
    with pytest.raises(ValueError, match="does not overlap"):
        composite(layer, "u8", box, _result(8), np.zeros((10, 10), np.uint8))


def test_a_layer_sized_selection_composites_with_bounded_memory() -> None:
    import tracemalloc

    layer = np.full((3000, 4000, 4), 90, np.uint8)  # 48 MB
    sel = np.full((3000, 4000), 255, np.uint8)
    box = choose_box(Rect(0, 0, 4000, 3000), 4000, 3000, resolution=64)
    tracemalloc.start()
    try:
        patch = composite(layer, "u8", box, _result(64, 1.0), sel)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (patch.width, patch.height) == (4000, 3000)
    extra = peak - patch.pixels.nbytes  # beyond the patch itself
    assert extra < 100 * 2**20, f"{extra / 2**20:.0f} MB beyond the patch"
    assert patch.pixels[1500, 2000, 0] == 255 and patch.pixels[0, 0, 0] == 90


def test_change_map_keeps_the_photo_where_the_drag_changed_nothing() -> None:
    recon = np.full((32, 32, 3), 0.5, np.float32)
    result = recon.copy()
    result[8:16, 8:16] = 0.9  # the drag moved this block only
    change = change_weight(result, recon, threshold=0.04, radius=2)
    assert change.shape == (32, 32)
    assert change[12, 12] == pytest.approx(1.0) and change[28, 28] == 0.0
    assert 0.0 < change[8, 18] <= 1.0  # spread a little beyond the block
    assert np.all(change_weight(recon, recon, 0.04, 2) == 0.0)

    rng = np.random.default_rng(7)
    layer = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    layer[:, :, 3] = 255
    box = CropBox(x0=0, y0=0, side=64, layer_width=64, layer_height=64, resolution=32)
    patch = composite(layer, "u8", box, _result(32, 1.0), change=change)
    out = _apply(layer, patch)
    assert not np.array_equal(out[24, 24], layer[24, 24])  # inside the changed block
    assert np.array_equal(out[50:, 50:], layer[50:, 50:])  # nothing changed there
    with pytest.raises(ValueError, match="change map must be"):
        composite(layer, "u8", box, _result(32), change=change[:16])
