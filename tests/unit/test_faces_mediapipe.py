"""The converted models and their decoding against MediaPipe 0.10.14 itself.

Reference figures were recorded once with the mediapipe wheel (not a dependency of this project)
through its own Python solutions on scikit-image's astronaut: ``face_detection.FaceDetection
(model_selection=0)`` (the short-range BlazeFace) and ``face_mesh.FaceMesh(static_image_mode=True,
refine_landmarks=False)`` (the same detector, then FaceMesh on the detection's ROI). Its relative
coordinates were multiplied by the image size, so they are edge coordinates (0 = left edge of the
image), as in ``blazeface`` and ``facemesh``.

Where MediaPipe sees exactly our input (a 128 x 128 image), BlazeFace's score, box and keypoints
must agree: that pins the anchors, the box/keypoint scale, the sigmoid and the weighted NMS.
FaceMesh is run on the ROI MediaPipe derives from its own detection (upright and turned), so
the crop framing, its rotation, the [0, 1] input, the output order and the way back to the
layer are compared with MediaPipe's landmarks. MediaPipe resamples the ROI with OpenCV's
pixel-centre convention (its crop is ~0.13-0.4 px off the exact square) and we resample with
Lanczos + bilinear, so a few tenths of a pixel apart is agreement; a half-pixel convention slip
or a turned crop would be several times that.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from gimp_draggan.edit.geometry import CropBox, box_iou
from gimp_draggan.edit.sampling import layer_to_model
from gimp_draggan.faces import blazeface, facemesh

data = pytest.importorskip("skimage.data")

# MediaPipe FaceDetection on the 128 x 128 image below: score, box (x0, y0, width, height) and
# keypoints (subject's right eye, left eye, nose tip, mouth, right ear, left ear), 128 px units.
MP_128_SCORE = 0.92047
MP_128_BOX = (44.553, 20.217, 23.539, 23.539)
MP_128_KEYPOINTS = (
    (50.911, 25.179),
    (61.997, 26.91),
    (55.471, 30.925),
    (54.765, 36.217),
    (44.454, 27.557),
    (67.893, 31.15),
)

# MediaPipe on the 512 x 512 astronaut, upright and turned by PIL's rotate(35) about the centre:
# its detection (box x0, y0, width, height; the two eye keypoints), and FaceMesh's landmarks
# (eye = mean of the eye's 16 contour vertices), 512 px units.
MP_512 = {
    0: {
        "box": (177.565, 82.871, 95.344, 95.344),
        "eyes": ((201.495, 104.898), (245.846, 109.097)),
        "mesh": {
            "eye_r": (203.99, 101.62),
            "eye_l": (247.39, 103.77),
            1: (224.1, 131.18),
            61: (201.85, 139.45),
            291: (245.91, 142.24),
            10: (227.5, 72.43),
            152: (221.34, 175.49),
            234: (179.03, 111.05),
            454: (270.86, 116.26),
        },
    },
    35: {
        "box": (107.425, 124.286, 86.775, 86.775),
        "eyes": ((122.351, 163.444), (158.921, 141.689)),
        "mesh": {
            "eye_r": (124.33, 158.92),
            "eye_l": (161.04, 135.9),
            1: (158.11, 171.3),
            61: (145.21, 190.73),
            291: (182.14, 167.66),
            10: (126.7, 122.16),
            152: (180.7, 206.6),
            234: (109.76, 179.89),
            454: (186.84, 131.89),
        },
    },
}


def _to_float(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def test_blazeface_matches_mediapipe_on_the_same_input(astronaut):
    """The 128 px image MediaPipe was given: the astronaut through our Lanczos crop, 8-bit."""
    small = layer_to_model(astronaut, CropBox(0, 0, 512, 512, 512, 128), _to_float)
    image = np.clip(np.round(small * 255.0), 0, 255).astype(np.uint8)
    dets = blazeface.detect(torch.from_numpy(_to_float(image))[None])[0]
    assert len(dets) == 1
    d = dets[0]
    assert abs(d.score - MP_128_SCORE) < 2e-3
    x0, y0, w, h = MP_128_BOX
    np.testing.assert_allclose(np.array(d.box) * 128, (x0, y0, x0 + w, y0 + h), atol=0.05)
    np.testing.assert_allclose(d.keypoints * 128, MP_128_KEYPOINTS, atol=0.05)


@pytest.mark.parametrize("deg", [0, 35])
def test_facemesh_on_mediapipes_roi_matches_mediapipe(astronaut, deg):
    img = np.asarray(
        Image.fromarray(astronaut).rotate(deg, Image.Resampling.BICUBIC, center=(256, 256))
    )
    ref = MP_512[deg]
    x0, y0, w, h = ref["box"]
    eye_r, eye_l = (np.array(p) for p in ref["eyes"])
    roi = facemesh.roi_from_eyes((x0, y0, x0 + w, y0 + h), eye_r, eye_l)
    mesh = facemesh.run(lambda box: layer_to_model(img, box, _to_float), roi, 512, 512)
    assert mesh.presence > 0.9
    pts = mesh.points
    ours = {
        "eye_r": pts[list(facemesh.RIGHT_EYE_CONTOUR)].mean(axis=0),
        "eye_l": pts[list(facemesh.LEFT_EYE_CONTOUR)].mean(axis=0),
    }
    ours.update({k: pts[k] for k in ref["mesh"] if isinstance(k, int)})
    offsets = np.array([ours[k] - np.array(v) for k, v in ref["mesh"].items()])
    distances = np.linalg.norm(offsets, axis=1)
    iod = math.dist(ref["mesh"]["eye_r"], ref["mesh"]["eye_l"])  # ~43 px
    assert distances.max() < 0.025 * iod, dict(zip(ref["mesh"], distances.round(2), strict=True))
    assert np.linalg.norm(offsets.mean(axis=0)) < 0.35, offsets.mean(axis=0)


def _det(score: float, box: tuple[float, float, float, float], k: float) -> blazeface.Detection:
    return blazeface.Detection(score, box, np.full((blazeface.NUM_KEYPOINTS, 2), k))


def test_weighted_nms_as_mediapipe():
    """MediaPipe's WEIGHTED algorithm: the best box takes every box overlapping *it* by more than
    the threshold (not boxes that only overlap those), averages boxes and keypoints by score,
    and keeps its own score."""
    a = _det(0.9, (0.0, 0.0, 1.0, 1.0), 1.0)
    b = _det(0.6, (0.0, 0.0, 1.0, 0.4), 4.0)  # IoU with a 0.4: merged into a.
    c = _det(0.7, (0.0, 0.2, 1.0, 0.45), 9.0)  # IoU with a 0.25, with b 0.44: kept.
    d = _det(0.5, (0.0, 0.3, 1.0, 0.55), 5.0)  # IoU with a 0.25, with c 0.43: into c.
    for x, y, want in (
        (a, b, 0.4),
        (a, c, 0.25),
        (b, c, 0.2 / 0.45),
        (a, d, 0.25),
        (c, d, 0.15 / 0.35),
    ):
        assert box_iou(x.box, y.box) == pytest.approx(want)
    merged = blazeface.weighted_nms([b, d, a, c], blazeface.NMS_IOU)
    assert [m.score for m in merged] == [0.9, 0.7]
    np.testing.assert_allclose(merged[0].box, (0.0, 0.0, 1.0, (0.9 * 1.0 + 0.6 * 0.4) / 1.5))
    np.testing.assert_allclose(merged[0].keypoints, (0.9 * 1.0 + 0.6 * 4.0) / 1.5)
    np.testing.assert_allclose(
        merged[1].box, (0.0, (0.7 * 0.2 + 0.5 * 0.3) / 1.2, 1.0, (0.7 * 0.45 + 0.5 * 0.55) / 1.2)
    )
    np.testing.assert_allclose(merged[1].keypoints, (0.7 * 9.0 + 0.5 * 5.0) / 1.2)


def test_decode_drops_boxes_with_negative_or_nan_size_as_mediapipe():
    """MediaPipe's TensorsToDetectionsCalculator skips a decoded box whose width or height is
    negative or NaN (a model glitch); kept, it would poison the weighted NMS and give FaceMesh a
    crop of negative side."""
    raw = np.zeros((896, 16))
    scores = np.zeros(896)
    good, shrunk, flat, nan = 300, 301, 302, 303
    raw[good, 2:4] = 40.0  # A 40 x 40 box (128 px input).
    raw[shrunk, 2:4] = -40.0
    raw[flat, 2:4] = (30.0, -5.0)
    raw[nan, 2:4] = (np.nan, 30.0)
    scores[[good, shrunk, flat, nan]] = (0.8, 0.95, 0.9, 0.85)
    found = blazeface.decode(raw, scores, blazeface.MIN_SCORE)
    assert len(found) == 1
    assert found[0].score == 0.8
    x0, y0, x1, y1 = found[0].box
    assert x1 - x0 == pytest.approx(40 / 128) and y1 - y0 == pytest.approx(40 / 128)
