"""`gimp-draggan invert` on a photo for a face model cuts the face out as FFHQ frames it.

The real face detector runs on scikit-image's astronaut, turned by a known angle; only the
model table's ``"alignment"`` matters for the framing, so no FFHQ weights are needed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import skimage.data
from PIL import Image

from gimp_draggan.commands.invert import frame_face
from gimp_draggan.edit.geometry import Rect
from gimp_draggan.faces import find_faces

pytestmark = pytest.mark.timeout(120)


def _turned_astronaut(degrees: float) -> np.ndarray:
    img = Image.fromarray(skimage.data.astronaut()).rotate(degrees, Image.Resampling.BICUBIC)
    return np.asarray(img, np.float32) / 255.0


def _eye_line(img: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Angle (degrees) of the eye line and the eyes' midpoint, as the detector sees them."""
    h, w = img.shape[:2]
    rgba = np.dstack([img, np.ones((h, w), np.float32)])
    from gimp_draggan.edit.sampling import model_view

    faces = find_faces(lambda box: model_view(rgba, "f32", box), w, h, Rect(0, 0, w, h))
    assert faces, "no face found"
    (lx, ly), (rx, ry) = faces[0].eye_left, faces[0].eye_right
    return math.degrees(math.atan2(ry - ly, rx - lx)), ((lx + rx) / 2, (ly + ry) / 2)


@pytest.mark.parametrize("degrees", [0.0, 25.0])
def test_a_face_model_gets_the_face_upright_and_centred(degrees: float) -> None:
    photo = _turned_astronaut(degrees)
    tilt, _ = _eye_line(photo)
    assert abs(tilt + degrees) < 4.0  # Pillow turns counter-clockwise
    out, framing = frame_face(photo, "stylegan2-ffhq-512x512", 256)
    assert framing == "ffhq" and out.shape == (256, 256, 3)
    level, (mx, my) = _eye_line(out)
    # FFHQ: eye line level, eyes centred left-right, above the middle (centre = eyes + 0.1 of
    # the eye-to-mouth vector, side >= 4 eye distances).
    assert abs(level) < 2.0
    assert abs(mx - 127.5) < 4.0 and 80.0 < my < 128.0


def test_models_without_alignment_and_model_sized_images_are_left_alone() -> None:
    photo = _turned_astronaut(25.0)
    same, framing = frame_face(photo, "embedded", 64)
    assert framing is None and same is photo
    small = photo[:256, :256]
    same, framing = frame_face(small, "stylegan2-ffhq-512x512", 256)
    assert framing is None and same is small
