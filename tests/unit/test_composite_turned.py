"""Composite through a turned crop box: only the turned square (and selection) may change."""

from __future__ import annotations

import math

import numpy as np
import pytest
import skimage.data

from gimp_draggan.edit.composite import Patch, composite
from gimp_draggan.edit.geometry import CropBox, Rect
from gimp_draggan.edit.pixels import from_float, to_float
from gimp_draggan.edit.sampling import layer_to_model
from gimp_draggan.edit.sessions import SessionCache, crop_digest


def _apply(layer: np.ndarray, patch: Patch) -> np.ndarray:
    out = layer.copy()
    out[patch.y : patch.y + patch.height, patch.x : patch.x + patch.width] = patch.pixels
    return out


def _in_square(box: CropBox, h: int, w: int) -> np.ndarray:
    """[h, w] bool: pixel centres strictly inside the turned square."""
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    u, v = box.local(xs, ys)
    return np.maximum(np.abs(u), np.abs(v)) < box.side / 2.0


def test_outside_the_turned_square_nothing_changes_on_an_odd_sized_layer() -> None:
    rng = np.random.default_rng(1)
    layer = rng.integers(0, 256, (97, 131, 4), dtype=np.uint8)
    layer[:, :, 3] = 255
    box = CropBox(x0=30, y0=20, side=61, layer_width=131, layer_height=97, resolution=16, angle=0.5)
    patch = composite(layer, "u8", box, np.ones((16, 16, 3), np.float32))
    assert (patch.x, patch.y, patch.width, patch.height) == (
        box.inside.x0,
        box.inside.y0,
        box.inside.width,
        box.inside.height,
    )
    out = _apply(layer, patch)
    square = _in_square(box, 97, 131)
    assert np.array_equal(out[~square], layer[~square])
    assert np.array_equal(out[:, :, 3], layer[:, :, 3])
    cx, cy = (int(c) for c in box.centre)
    assert np.all(out[cy, cx, :3] > 240)  # deep inside: fully replaced
    changed = np.any(out != layer, axis=2)
    assert changed[square].mean() > 0.5  # the square itself did change


@pytest.mark.parametrize("angle", [0.35, -2.2])
def test_a_turned_box_over_the_layer_border_changes_only_its_square(angle: float) -> None:
    img = skimage.data.chelsea()  # 451 x 300
    layer = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    h, w = layer.shape[:2]
    box = CropBox(
        x0=-40, y0=200, side=160, layer_width=w, layer_height=h, resolution=32, angle=angle
    )
    assert box.rect.x0 < 0 and box.rect.y1 > h  # sticks out left and bottom
    target = layer_to_model(layer, box, lambda a: to_float(a, "u8"))[:, :, :3]
    result = np.clip(1.0 - target, 0.0, 1.0)  # an obvious edit
    patch = composite(layer, "u8", box, result)
    assert box.inside == Rect(patch.x, patch.y, patch.x + patch.width, patch.y + patch.height)
    out = _apply(layer, patch)
    square = _in_square(box, h, w)
    assert np.array_equal(out[~square], layer[~square])
    assert np.any(out[square] != layer[square])


def test_a_selection_and_the_turned_square_both_bound_the_change_at_16_bit() -> None:
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 1, (73, 89, 4)).astype(np.float32)
    base[:, :, 3] = 1
    layer = from_float(base, "u16")
    sel = np.zeros((73, 89), np.uint8)
    sel[10:60, 5:80] = 255  # wider than the square
    box = CropBox(x0=20, y0=15, side=45, layer_width=89, layer_height=73, resolution=16, angle=-0.8)
    patch = composite(layer, "u16", box, np.full((16, 16, 3), 0.9, np.float32), sel)
    assert patch.pixels.dtype == np.uint16
    out = _apply(layer, patch)
    keep = (sel == 0) | ~_in_square(box, 73, 89)
    assert out[keep].tobytes() == layer[keep].tobytes()
    cx, cy = (int(c) for c in box.centre)
    assert not np.array_equal(out[cy, cx], layer[cy, cx])


def test_the_box_feather_follows_the_turned_edges() -> None:
    layer = np.full((120, 120, 4), 20, np.uint8)
    box = CropBox(
        x0=20, y0=20, side=80, layer_width=120, layer_height=120, resolution=16, angle=math.pi / 4
    )
    out = _apply(
        layer, composite(layer, "u8", box, np.ones((16, 16, 3), np.float32), feather=1 / 8)
    )
    # Along the square's +x axis from the centre: full at the centre, less near the edge.
    cx, cy = box.centre
    d = np.array([math.cos(box.angle), math.sin(box.angle)])

    def at(t: float) -> int:
        x, y = cx + t * d[0], cy + t * d[1]
        return int(out[int(y), int(x), 0])

    assert at(0) == 255 and 20 < at(37) < at(30) <= 255
    assert at(41) == 20  # just outside the square


def test_crop_digest_and_session_lookup_see_the_angle() -> None:
    layer = np.zeros((200, 200, 4), np.uint8)
    upright = CropBox(x0=50, y0=50, side=100, layer_width=200, layer_height=200, resolution=16)
    turned = CropBox(
        x0=50, y0=50, side=100, layer_width=200, layer_height=200, resolution=16, angle=math.pi / 4
    )
    other = CropBox(
        x0=50, y0=50, side=100, layer_width=200, layer_height=200, resolution=16, angle=-math.pi / 4
    )
    assert turned.rect == other.rect
    d = {crop_digest(layer, "u8", b) for b in (upright, turned, other)}
    assert len(d) == 3

    from gimp_draggan.edit.sessions import Session

    img = np.zeros((16, 16, 3), np.float32)
    cache = SessionCache()
    cache.put(
        Session(
            id="t",
            model_key="m",
            box=turned,
            digest="x",
            generator=None,
            pivot=None,
            target=img,
            recon=img,
        )
    )
    corner = Rect(
        int(turned.rect.x0) + 1,
        int(turned.rect.y0) + 1,
        int(turned.rect.x0) + 6,
        int(turned.rect.y0) + 6,
    )
    assert turned.rect.contains(corner)
    assert cache.find("m", (200, 200), corner, lambda b: "x") is None  # outside the diamond
    assert cache.find("m", (200, 200), Rect(90, 90, 110, 110), lambda b: "x").id == "t"
