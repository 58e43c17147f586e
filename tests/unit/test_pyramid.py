"""LayerPyramid: big windows read from averaged copies of the layer look like the direct read."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from PIL import Image

from gimp_draggan.edit.geometry import CropBox
from gimp_draggan.edit.pixels import to_float
from gimp_draggan.edit.pyramid import LayerPyramid, _halve_opaque_u8
from gimp_draggan.edit.sampling import block_mean, flatten, model_view


def _photo(h: int, w: int) -> np.ndarray:
    img = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((w, h)))
    return np.dstack([img, np.full((h, w), 255, np.uint8)])


@pytest.mark.parametrize(("h", "w"), [(8, 8), (7, 9), (1, 5), (6, 1)])
def test_the_integer_first_level_is_the_float_block_mean(h: int, w: int) -> None:
    layer = np.random.default_rng(h * 10 + w).integers(0, 256, (h, w, 4), dtype=np.uint8)
    layer[..., 3] = 255
    want = block_mean(layer, 2, lambda a: flatten(to_float(a, "u8")))
    got = _halve_opaque_u8(layer)
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-6


@pytest.mark.parametrize("depth", ["u8", "u16"])
@pytest.mark.parametrize("angle", [0.0, 0.4])
def test_big_windows_match_the_direct_read(depth: str, angle: float) -> None:
    layer = _photo(1201, 1603)
    if depth == "u16":
        layer = layer.astype(np.uint16) * 257
    layer[:300, :300, 3] = 0  # a transparent corner
    pyramid = LayerPyramid(layer, depth)
    for side in (100, 600, 1100):  # read at k = 1, 2, 4: >= 2 level px per model px
        box = CropBox(
            x0=250,
            y0=40,
            side=side,
            layer_width=1603,
            layer_height=1201,
            resolution=128,
            angle=angle,
        )
        direct = model_view(layer, depth, box)
        read = pyramid.read(box)
        assert read.shape == (128, 128, 3) and read.dtype == np.float32
        assert np.abs(read - direct).mean() < 0.02
    assert sorted(pyramid.levels) == [2, 4]


def test_levels_are_built_once_from_each_other() -> None:
    layer = _photo(2100, 3000)
    pyramid = LayerPyramid(layer, "u8")
    box = CropBox(x0=0, y0=0, side=2100, layer_width=3000, layer_height=2100, resolution=128)
    first = pyramid.read(box)
    assert sorted(pyramid.levels) == [2, 4, 8]  # 2100 / 8 >= 2 x 128 > 2100 / 16
    level = pyramid.levels[8]
    assert level.shape == (263, 375, 3)
    assert np.array_equal(pyramid.read(box), first) and pyramid.levels[8] is level
    assert np.abs(first - model_view(layer, "u8", box)).mean() < 0.02


def test_bad_layers_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[H, W, 4\]"):
        LayerPyramid(np.zeros((4, 4, 3), np.uint8), "u8")
