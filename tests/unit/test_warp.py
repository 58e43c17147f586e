"""The photo-true composite: the layer's own pixels moved along a motion field."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gimp_draggan.edit.geometry import CropBox
from gimp_draggan.edit.pixels import DTYPES, from_float
from gimp_draggan.edit.warp import LayerField, sample_bicubic, warp_composite

R = 32


def _texture(w: int, h: int) -> np.ndarray:
    """A smooth texture (band-limited: bicubic reproduces it within a fraction of a level)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 0.5 + 0.2 * np.sin(0.21 * x + 0.4) * np.cos(0.17 * y)
    g = 0.5 + 0.2 * np.cos(0.13 * x - 0.11 * y)
    b = 0.4 + 0.15 * np.sin(0.19 * y + 0.07 * x)
    return np.dstack([r, g, b])


def _layer(rgb: np.ndarray, depth: str) -> np.ndarray:
    alpha = np.ones(rgb.shape[:2])
    return from_float(np.dstack([rgb, alpha]).astype(np.float32), depth)


def _field(box: CropBox, flow: np.ndarray | None = None, conf: float = 1.0) -> LayerField:
    r = box.resolution
    return LayerField(
        flow=np.zeros((r, r, 2), np.float32) if flow is None else flow.astype(np.float32),
        confidence=np.full((r, r), conf, np.float32),
        box=box,
    )


@pytest.mark.parametrize("depth", ["u8", "u16", "f32"])
def test_identity_field_gives_the_input_byte_for_byte(depth: str) -> None:
    rng = np.random.default_rng(3)
    layer = _layer(rng.random((90, 120, 3)), depth)
    box = CropBox(20, 10, 64, 120, 90, R)
    generated = np.zeros((R, R, 3), np.float32)  # would show if it were used
    patch = warp_composite(layer, depth, _field(box), generated)
    region = layer[patch.y : patch.y + patch.height, patch.x : patch.x + patch.width]
    assert patch.pixels.dtype == DTYPES[depth]
    assert patch.pixels.tobytes() == region.tobytes()


@pytest.mark.parametrize("angle", [0.0, 0.3])
def test_a_known_smooth_field_warps_the_photo_as_the_formula_says(angle: float) -> None:
    """Layer motion d(p) = a * bump(p) along x, inside a box with no feather at the tested
    pixels: out(p) = photo(p + d(p)), compared with the texture evaluated there."""
    w, h = 160, 160
    rgb = _texture(w, h)
    layer = _layer(rgb, "f32")
    box = CropBox(16, 16, 128, w, h, 64, angle)
    r = box.resolution
    # The field in model space: a smooth bump, 1.5 model px (3 layer px) at its centre.
    uu, vv = np.meshgrid(np.arange(r), np.arange(r))
    bump = 1.5 * np.exp(-((uu - 31.5) ** 2 + (vv - 31.5) ** 2) / (2 * 9.0**2))
    flow = np.dstack([bump, np.zeros_like(bump)])
    patch = warp_composite(
        layer, "f32", _field(box, flow), np.zeros((r, r, 3), np.float32), feather=1.0 / 64
    )
    c, s = math.cos(angle), math.sin(angle)
    ys, xs = np.mgrid[56:104, 56:104].astype(np.float64)  # well inside the box
    # Model coordinates of each layer pixel, the bump there, and its layer-space vector.
    cx, cy = box.centre
    u = (c * (xs + 0.5 - cx) + s * (ys + 0.5 - cy) + 64.0) * box.scale - 0.5
    v = (-s * (xs + 0.5 - cx) + c * (ys + 0.5 - cy) + 64.0) * box.scale - 0.5
    du = 1.5 * np.exp(-((u - 31.5) ** 2 + (v - 31.5) ** 2) / (2 * 9.0**2))
    sx, sy = xs + c * du / box.scale, ys + s * du / box.scale
    y, x = sy, sx
    expect = np.dstack(
        [
            0.5 + 0.2 * np.sin(0.21 * x + 0.4) * np.cos(0.17 * y),
            0.5 + 0.2 * np.cos(0.13 * x - 0.11 * y),
            0.4 + 0.15 * np.sin(0.19 * y + 0.07 * x),
        ]
    )
    got = patch.pixels[56 - patch.y : 104 - patch.y, 56 - patch.x : 104 - patch.x, :3]
    assert np.abs(got - expect).max() < 1.0 / 255.0
    assert np.abs(got - rgb[56:104, 56:104]).max() > 10.0 / 255.0  # it did move


def test_zero_confidence_falls_back_to_the_generators_pixels() -> None:
    layer = _layer(np.full((64, 64, 3), 0.2), "u8")
    box = CropBox(0, 0, 64, 64, 64, R)
    generated = np.full((R, R, 3), 0.8, np.float32)
    patch = warp_composite(layer, "u8", _field(box, conf=0.0), generated, feather=1.0 / 64)
    centre = patch.pixels[32 - patch.y, 32 - patch.x, :3]
    assert np.all(centre == round(0.8 * 255))
    # ...and full confidence keeps the photo.
    kept = warp_composite(layer, "u8", _field(box, conf=1.0), generated, feather=1.0 / 64)
    assert np.all(kept.pixels[32, 32, :3] == round(0.2 * 255))


def test_nothing_changes_outside_the_selection_and_grey_stays_grey() -> None:
    rng = np.random.default_rng(5)
    grey = np.repeat(rng.random((96, 96, 1)), 3, axis=2)
    layer = _layer(grey, "u8")
    box = CropBox(0, 0, 96, 96, 96, R)
    flow = np.zeros((R, R, 2), np.float32)
    flow[8:24, 8:24] = (1.5, -1.0)
    selection = np.zeros((96, 96), np.uint8)
    selection[20:76, 20:76] = 255
    colour = np.zeros((R, R, 3), np.float32)
    colour[..., 0] = 1.0  # a red generator image
    patch = warp_composite(layer, "u8", _field(box, flow, conf=0.5), colour, selection)
    out = np.array(layer)
    out[patch.y : patch.y + patch.height, patch.x : patch.x + patch.width] = patch.pixels
    assert np.array_equal(out[selection == 0], layer[selection == 0])
    assert not np.array_equal(out, layer)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_detail_is_carried_whole_across_a_half_pixel_shift() -> None:
    """Fine grain survives a fractional move: high-pass energy stays near the input's."""
    rng = np.random.default_rng(7)
    noise = 0.5 + 0.2 * rng.standard_normal((80, 80, 1)).repeat(3, axis=2)
    layer = _layer(np.clip(noise, 0, 1), "f32")
    box = CropBox(0, 0, 80, 80, 80, 40)
    flow = np.full((40, 40, 2), 0.25, np.float32)  # half a layer pixel, both axes
    patch = warp_composite(
        layer, "f32", _field(box, flow), np.zeros((40, 40, 3), np.float32), feather=1.0 / 80
    )
    inner = patch.pixels[20:60, 20:60, 0]
    grid = np.arange(20, 60, dtype=np.float64) + 0.5
    plain = sample_bicubic(
        layer[..., :3].astype(np.float32), np.tile(grid, 40), np.repeat(grid, 40)
    )[:, 0].reshape(40, 40)

    def energy(a: np.ndarray) -> float:
        return float(np.var(np.diff(a, axis=0)) + np.var(np.diff(a, axis=1)))

    src = layer[20:60, 20:60, 0]
    assert energy(inner) > 0.9 * energy(src)
    assert energy(plain) < 0.8 * energy(src)  # what plain bicubic would keep


def test_a_hard_edge_moved_by_a_fraction_leaves_no_bright_or_dark_line() -> None:
    """The detail band is copied from up to half a pixel away; at a hard edge that must not
    overshoot past the photo's own values (a light line along a dark collar, seen in the demo)."""
    rgb = np.where(np.arange(64)[:, None, None] < 30, 0.85, 0.08) * np.ones((64, 64, 3))
    rng = np.random.default_rng(2)
    rgb = np.clip(rgb + 0.03 * rng.standard_normal(rgb.shape), 0.0, 1.0)  # some grain
    layer = _layer(rgb, "f32")
    box = CropBox(0, 0, 64, 64, 64, 32)
    v = np.arange(32, dtype=np.float32)
    flow = np.zeros((32, 32, 2), np.float32)
    flow[..., 1] = (0.9 * np.exp(-((v - 15.0) ** 2) / 40.0))[:, None]  # rows squeezed up
    patch = warp_composite(
        layer, "f32", _field(box, flow), np.zeros((32, 32, 3), np.float32), feather=1.0 / 64
    )
    out = patch.pixels[..., :3]
    src = layer[patch.y : patch.y + patch.height, patch.x : patch.x + patch.width, :3]
    assert not np.array_equal(out, src)  # it moved
    assert out.min() >= layer[..., :3].min() - 1e-6
    assert out.max() <= layer[..., :3].max() + 1e-6
    # Around the edge no value leaves the range of the two sides' own pixels there.
    band = out[24:36]
    assert band.max() <= src[20:40].max() + 1e-6 and band.min() >= src[20:40].min() - 1e-6
