"""Points in a face's FFHQ square but outside the detector's face box (hair, ears, chin)
still get the face's aligned crop."""

from __future__ import annotations

import numpy as np
import skimage.data

from gimp_draggan.edit.align import FFHQ, FaceAligner, ffhq_box
from gimp_draggan.edit.geometry import Rect
from gimp_draggan.faces import FaceLandmarks, find_faces

FACE = FaceLandmarks(
    eye_left=(203.0, 101.0),
    eye_right=(247.0, 103.0),
    nose=(225.0, 125.0),
    mouth=(223.0, 140.0),
    mouth_left=None,
    mouth_right=None,
    score=0.9,
    box=(173.0, 73.0, 275.0, 175.0),
)


def _overlapping(read, width, height, around: Rect) -> list[FaceLandmarks]:
    """As find_faces promises: the faces whose box overlaps ``around``."""
    x0, y0, x1, y1 = FACE.box
    near = not Rect(int(x0), int(y0), int(x1) + 1, int(y1) + 1).intersect(around).empty
    return [FACE] if near else []


def test_points_on_the_hair_inside_the_square_are_framed_on_the_face() -> None:
    layer = np.zeros((512, 512, 4), np.uint8)
    square = ffhq_box(FACE, 512, 512, 64)
    aligner = FaceAligner(_overlapping)
    for needed in (Rect(230, 50, 245, 62), Rect(285, 150, 300, 160), Rect(150, 30, 160, 40)):
        assert square.holds(needed)
        framing = aligner.locate(layer, needed, 64)
        assert framing.method == FFHQ and framing.box == square
    assert aligner.locate(layer, Rect(400, 400, 410, 410), 64).method != FFHQ


def test_the_astronauts_hair_gets_her_aligned_crop() -> None:
    rgba = np.dstack([skimage.data.astronaut(), np.full((512, 512), 255, np.uint8)])
    framing = FaceAligner(find_faces).locate(rgba, Rect(230, 60, 245, 70), 256)
    assert framing.method == FFHQ and framing.face is not None
    assert framing.box.holds(Rect(230, 60, 245, 70))
