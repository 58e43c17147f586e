"""FFHQ framing from face landmarks (FaceAligner) and the square fallback.

Faces come from a fake ``find_faces`` that returns landmarks the tests place themselves (on a
synthetic image where the pixels matter), so the geometry is known exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from gimp_draggan.edit.align import (
    FFHQ,
    SQUARE,
    FaceAligner,
    SquareFraming,
    ffhq_box,
)
from gimp_draggan.edit.align_embedded import KeypointAligner
from gimp_draggan.edit.aligners import aligner_for
from gimp_draggan.edit.geometry import CropBox, Rect
from gimp_draggan.edit.pixels import to_float
from gimp_draggan.edit.sampling import layer_to_model
from gimp_draggan.faces import FaceLandmarks
from gimp_draggan_plugin.protocol import Point


def _face(el: Point, er: Point, mouth: Point, score: float = 0.9) -> FaceLandmarks:
    xs = [el[0], er[0], mouth[0]]
    ys = [el[1], er[1], mouth[1]]
    pad = math.dist(el, er)
    box = (min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad)
    nose = ((el[0] + er[0] + mouth[0]) / 3, (el[1] + er[1] + mouth[1]) / 3)
    return FaceLandmarks(
        eye_left=el,
        eye_right=er,
        nose=nose,
        mouth=mouth,
        mouth_left=None,
        mouth_right=None,
        score=score,
        box=box,
    )


def _turn(p: Point, centre: Point, angle: float) -> Point:
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = p[0] - centre[0], p[1] - centre[1]
    return (centre[0] + c * dx - s * dy, centre[1] + s * dx + c * dy)


def _turned_face(face: FaceLandmarks, centre: Point, angle: float) -> FaceLandmarks:
    return _face(
        _turn(face.eye_left, centre, angle),
        _turn(face.eye_right, centre, angle),
        _turn(face.mouth, centre, angle),
    )


def _ffhq_model_points(face: FaceLandmarks, points: list[Point], res: int) -> list[Point]:
    """Where FFHQ puts ``points``: written from the recipe's quad, independently of CropBox.
    The quad's corner c - x - y is the output's top-left edge, x and y span half the side."""
    el, er, m = (np.array(p) for p in (face.eye_left, face.eye_right, face.mouth))
    eye_avg = (el + er) / 2
    e2e, e2m = er - el, m - eye_avg
    x = e2e - np.array([-e2m[1], e2m[0]])  # minus e2m turned a quarter
    x = x / np.linalg.norm(x) * max(2.0 * np.linalg.norm(e2e), 1.8 * np.linalg.norm(e2m))
    y = np.array([-x[1], x[0]])  # x turned a quarter: "down"
    corner = eye_avg + 0.1 * e2m - x - y
    side = 2 * np.linalg.norm(x)
    out = []
    for p in points:
        d = np.array(p) + 0.5 - (corner + 0.5)  # both in edge coordinates
        out.append(
            (
                d @ x / np.linalg.norm(x) / side * res - 0.5,
                d @ y / np.linalg.norm(y) / side * res - 0.5,
            )
        )
    return out


UPRIGHT = _face((180.0, 200.0), (240.0, 200.0), (210.0, 270.0))


def _tolerance(box: CropBox) -> float:
    """The box's corner and side are whole pixels: its centre is off by up to half a pixel
    in x and y and its side by up to half a pixel (model pixels = that times the scale, plus
    the side's share over half the square)."""
    return box.scale * (0.5 * math.sqrt(2) + 0.5) + 1e-6


def test_an_upright_face_lands_where_the_recipe_puts_it() -> None:
    res = 1024
    box = ffhq_box(UPRIGHT, 600, 500, res)
    assert box.angle == 0.0  # exactly: an upright face takes the unturned crop path
    # |eye_to_eye| = 60, |eye_to_mouth| = 70: half side = max(120, 126) = 126.
    assert box.side == 252
    eyes = [UPRIGHT.eye_left, UPRIGHT.eye_right, UPRIGHT.mouth]
    got = box.to_model(eyes)
    want = _ffhq_model_points(UPRIGHT, eyes, res)
    tol = _tolerance(box)
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, abs=tol)
    # Eyes level and symmetric about the middle, above the centre; the mouth below it.
    (lx, ly), (rx, ry), (_, my) = got
    assert ly == pytest.approx(ry) and (lx + rx) / 2 == pytest.approx(res / 2 - 0.5, abs=tol)
    assert ly < res / 2 < my


@pytest.mark.parametrize("angle", [0.4, -1.1, 2.6])
def test_a_turned_face_gives_the_same_model_positions(angle: float) -> None:
    res = 256
    turned = _turned_face(UPRIGHT, (300.0, 260.0), angle)
    box = ffhq_box(turned, 600, 500, res)
    assert math.remainder(box.angle - angle, 2 * math.pi) == pytest.approx(0.0, abs=1e-9)
    pts = [turned.eye_left, turned.eye_right, turned.mouth]
    want = ffhq_box(UPRIGHT, 600, 500, res).to_model(
        [UPRIGHT.eye_left, UPRIGHT.eye_right, UPRIGHT.mouth]
    )
    for g, w in zip(box.to_model(pts), want, strict=True):
        assert g == pytest.approx(w, abs=2 * _tolerance(box))
    for g, w in zip(box.to_model(pts), _ffhq_model_points(turned, pts, res), strict=True):
        assert g == pytest.approx(w, abs=_tolerance(box))


def _dots(shape: tuple[int, int], face: FaceLandmarks) -> np.ndarray:
    """An RGBA u8 image, light grey, with dark discs at the eyes (red, blue) and mouth
    (green): a face-like picture whose landmarks are known."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.full((h, w, 4), 230, np.uint8)
    for (px, py), channel in ((face.eye_left, 0), (face.eye_right, 2), (face.mouth, 1)):
        disc = (xx - px) ** 2 + (yy - py) ** 2 <= 8.0**2
        img[disc, :3] = 30
        img[disc, channel] = 250
    return img


def _spot(model: np.ndarray, channel: int) -> Point:
    """Centroid of the dark-but-``channel``-bright disc in a model image."""
    others = [c for c in range(3) if c != channel]
    w = np.clip(model[:, :, channel] - model[:, :, others].max(axis=2), 0, None) ** 2
    ys, xs = np.mgrid[0 : model.shape[0], 0 : model.shape[1]]
    return float((w * xs).sum() / w.sum()), float((w * ys).sum() / w.sum())


@pytest.mark.parametrize("angle", [0.0, 0.5, -2.0])
def test_the_aligned_crop_shows_the_face_upright_on_a_synthetic_picture(angle: float) -> None:
    res = 128
    face = _turned_face(UPRIGHT, (210.0, 230.0), angle)
    layer = _dots((480, 420), face)
    calls: list[Rect] = []

    def find_faces(
        read: Callable[[CropBox], np.ndarray], w: int, h: int, around: Rect
    ) -> list[FaceLandmarks]:
        calls.append(around)
        window = read(CropBox(0, 0, 64, w, h, 32))
        assert window.shape == (32, 32, 3) and window.dtype == np.float32
        assert window.min() >= 0.0 and window.max() <= 1.0
        return [face]

    aligner = FaceAligner(find_faces)
    needed = Rect(200, 220, 220, 240)
    framing = aligner.locate(layer, needed, res)
    assert framing.method == FFHQ and framing.face == face
    assert aligner.frame(layer, needed, res) == framing.box
    assert calls == [needed]  # remembered for the same region
    model = layer_to_model(layer, framing.box, lambda a: to_float(a, "u8"))
    want = _ffhq_model_points(UPRIGHT, [UPRIGHT.eye_left, UPRIGHT.eye_right, UPRIGHT.mouth], res)
    for channel, w in zip((0, 2, 1), want, strict=True):
        assert _spot(model, channel) == pytest.approx(w, abs=0.75)


def test_the_face_holding_the_points_is_chosen_and_else_the_square() -> None:
    left = UPRIGHT
    right = _face((480.0, 300.0), (520.0, 300.0), (500.0, 345.0))
    layer = np.zeros((500, 640, 4), np.uint8)
    aligner = FaceAligner(lambda read, w, h, around: [left, right])
    on_right = aligner.locate(layer, Rect(490, 310, 505, 330), 64)
    assert on_right.method == FFHQ and on_right.face == right
    on_left = aligner.locate(layer, Rect(200, 230, 230, 250), 64)
    assert on_left.face == left
    between = Rect(330, 250, 340, 260)  # in neither face's square
    fallback = aligner.locate(layer, between, 64)
    assert fallback.method == SQUARE and fallback.face is None
    assert fallback.box == SquareFraming().frame(layer, between, 64)
    too_big = Rect(150, 150, 560, 360)  # a selection over both faces
    assert aligner.locate(layer, too_big, 64).method == SQUARE
    nobody = FaceAligner(lambda read, w, h, around: [])
    assert nobody.locate(layer, Rect(200, 230, 230, 250), 64).method == SQUARE


def test_among_faces_holding_the_points_the_nearest_wins() -> None:
    big = _face((150.0, 200.0), (350.0, 200.0), (250.0, 420.0))  # a close-up...
    small = _face((240.0, 240.0), (262.0, 240.0), (251.0, 265.0))  # ...and a face within it
    layer = np.zeros((700, 700, 4), np.uint16)
    aligner = FaceAligner(lambda read, w, h, around: [big, small])
    needed = Rect(245, 245, 256, 256)
    assert ffhq_box(big, 700, 700, 64).holds(needed)
    assert ffhq_box(small, 700, 700, 64).holds(needed)
    assert aligner.locate(layer, needed, 64).face == small
    assert aligner.locate(layer, Rect(160, 380, 170, 390), 64).face == big


def test_degenerate_landmarks_are_skipped() -> None:
    flat = _face((100.0, 100.0), (100.0, 100.0), (100.0, 100.0))
    with pytest.raises(ValueError, match="degenerate"):
        ffhq_box(flat, 200, 200, 64)
    aligner = FaceAligner(lambda read, w, h, around: [flat])
    assert (
        aligner.locate(np.zeros((200, 200, 4), np.float32), Rect(95, 95, 105, 105), 64).method
        == SQUARE
    )


def test_aligner_for_follows_the_model_table_word() -> None:
    assert isinstance(aligner_for(None), SquareFraming)
    fake = lambda read, w, h, around: []  # noqa: E731
    face = aligner_for("ffhq", fake)
    assert isinstance(face, FaceAligner) and face.find_faces is fake
    from gimp_draggan import faces

    assert aligner_for("ffhq").find_faces is faces.find_faces  # type: ignore[attr-defined]
    assert isinstance(aligner_for("embedded"), KeypointAligner)
    with pytest.raises(ValueError, match="unknown face alignment 'dlib'"):
        aligner_for("dlib")
    assert (
        SquareFraming().locate(np.zeros((50, 50, 4), np.uint8), Rect(10, 10, 20, 20), 32).method
        == SQUARE
    )


def test_an_upright_face_with_rounding_noise_is_not_turned() -> None:
    face = _face((180.1, 200.3), (240.7, 200.3), (210.4, 270.9))  # atan2 gives ~-2e-16 here
    assert ffhq_box(face, 600, 500, 1024).angle == 0.0


def test_forget_makes_the_aligner_look_again_at_a_layer_changed_in_place() -> None:
    layer = np.zeros((200, 300, 4), np.uint8)
    asked: list[Rect] = []

    def find(read, w, h, around):
        asked.append(around)
        return []

    aligner = FaceAligner(find)
    needed = Rect(10, 10, 20, 20)
    aligner.faces(layer, needed)
    aligner.faces(layer, needed)
    assert len(asked) == 1  # remembered for this layer
    layer[:50] = 255  # an earlier edit pasted in place
    aligner.forget()
    aligner.faces(layer, needed)
    assert len(asked) == 2
