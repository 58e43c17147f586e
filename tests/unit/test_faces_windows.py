"""The window plan of ``find_faces`` (no model runs): scales, tiling, the tile budget, windows
kept inside the layer, and every point of the searched area well inside some window."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gimp_draggan.edit.geometry import Rect
from gimp_draggan.faces import blazeface, search


@pytest.mark.parametrize(
    "width, height, around",
    [
        (512, 512, Rect(200, 120, 240, 150)),
        (512, 512, Rect(0, 0, 512, 512)),
        (6000, 4000, Rect(3000, 2000, 3020, 2020)),
        (6000, 4000, Rect(0, 0, 6000, 4000)),
        (4000, 600, Rect(-50, -50, 4100, 700)),  # Bigger than the layer: clipped to it.
        (700, 300, Rect(690, 0, 700, 10)),  # In a corner.
        (30, 1000, Rect(0, 400, 30, 420)),  # Narrower than the smallest window.
    ],
)
def test_windows_cover_the_area_at_every_scale(width, height, around):
    boxes = search.windows(width, height, around)
    area = around.intersect(Rect(0, 0, width, height))
    sides = sorted({b.side for b in boxes})
    assert sides[-1] == max(width, height)
    assert all(b == a * 2 for a, b in itertools.pairwise(sides[:-1]))
    assert len(sides) == 1 or sides[-1] <= 2 * sides[-2]
    assert sides[0] >= min(search.MIN_WINDOW, max(width, height))
    ys, xs = np.mgrid[area.y0 : area.y1 : complex(0, 25), area.x0 : area.x1 : complex(0, 25)]
    for side in sides:
        scale = [b for b in boxes if b.side == side]
        assert len(scale) <= search.MAX_TILES
        for b in scale:
            assert b.resolution == blazeface.INPUT_SIZE and b.angle == 0.0
            for start, limit in ((b.x0, width), (b.y0, height)):
                if side <= limit:  # Fits: kept inside the layer.
                    assert 0 <= start <= limit - side
                else:  # Too big: centred on the layer.
                    assert abs(start + side / 2 - limit / 2) <= 1
        # Each point of the area lies at least a quarter window inside some window (or as deep
        # as the layer border allows), so a face there is seen whole at some scale.
        margin = np.full(xs.shape, -np.inf)
        for b in scale:
            dx = np.minimum(xs - b.x0, b.x0 + side - xs)
            dy = np.minimum(ys - b.y0, b.y0 + side - ys)
            reach_x = np.minimum(side / 4, np.minimum(xs, width - xs))
            reach_y = np.minimum(side / 4, np.minimum(ys, height - ys))
            margin = np.maximum(margin, np.minimum(dx - reach_x, dy - reach_y))
        assert margin.min() >= -1.0, (side, margin.min())


def test_windows_name_an_area_off_the_layer():
    with pytest.raises(ValueError, match="does not overlap"):
        search.windows(100, 100, Rect(100, 0, 120, 20))
    with pytest.raises(ValueError, match="must have pixels"):
        search.windows(0, 100, Rect(0, 0, 10, 10))
