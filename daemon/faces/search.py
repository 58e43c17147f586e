"""find_faces: faces near the user's points, at any scale, with eye and mouth landmarks.

BlazeFace sees 128 x 128 squares and finds faces whose box is roughly 15-70 % of the square, so
the layer is searched with square windows around ``around`` whose sides double from a small face
up to the whole layer; where a window is smaller than ``around`` it is tiled over it. All windows
go through the detector in one batch, detections from every window are merged by weighted NMS in
layer coordinates, and each face is refined by FaceMesh on MediaPipe's rotated ROI for precise eye
centres and mouth corners; faces FaceMesh does not confirm are dropped. (A second FaceMesh pass on
the ROI of the first pass's landmarks was measured on the astronaut: no gain, so one pass.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from gimp_draggan.edit.geometry import CropBox, Rect
from gimp_draggan.edit.types import Point
from gimp_draggan.faces import blazeface, facemesh

MIN_WINDOW = 48  # Smallest window side (layer pixels): faces down to ~10 px.
MAX_TILES = 64  # Windows of one scale tiled over a big ``around``.
_MERGE_IOU = 0.3


@dataclass(frozen=True)
class FaceLandmarks:
    """One face, in layer pixel-centre coordinates (x = column, y = row)."""

    eye_left: Point  # Centre of the eye on the image's left (the subject's right eye).
    eye_right: Point  # Centre of the eye on the image's right.
    nose: Point
    mouth: Point  # Centre of the mouth (mean of the two corners when known).
    mouth_left: Point | None  # Mouth corners when the refinement stage ran, else None.
    mouth_right: Point | None
    score: float  # Detector confidence in [0, 1].
    box: tuple[float, float, float, float]  # Face box x0, y0, x1, y1 (layer pixels).


def windows(layer_width: int, layer_height: int, around: Rect) -> list[CropBox]:
    """Square windows (edge coordinates) to search: every scale from ``MIN_WINDOW`` to the
    layer's longer side, centred on ``around`` or tiled over it, shifted inside the layer."""
    if layer_width <= 0 or layer_height <= 0:
        raise ValueError(f"layer must have pixels, got {layer_width}x{layer_height}")
    area = around.intersect(Rect(0, 0, layer_width, layer_height))
    if area.empty:
        raise ValueError(
            f"the area to search {around} does not overlap the {layer_width}x{layer_height} layer"
        )
    largest = max(layer_width, layer_height)
    extent = max(area.width, area.height)
    side = max(MIN_WINDOW, math.ceil(extent / math.sqrt(MAX_TILES) * 2))
    boxes = []
    while True:
        side = min(side, largest)
        boxes += _tile(area, side, layer_width, layer_height)
        if side >= largest:
            return boxes
        side *= 2


def _tile(area: Rect, side: int, width: int, height: int) -> list[CropBox]:
    """Windows of ``side`` covering ``area`` with half-window overlap (one if it fits)."""

    def starts(lo: int, hi: int, limit: int) -> list[int]:
        half = side / 2
        count = 1 if hi - lo <= half else math.ceil((hi - lo - half) / half) + 1
        first, last = lo + half / 2, hi - half / 2  # Window centres, evenly spaced.
        centres = [(first + last) / 2] if count == 1 else np.linspace(first, last, count)
        return sorted({_clamp(math.floor(c - half + 0.5), side, limit) for c in centres})

    return [
        CropBox(x, y, side, width, height, blazeface.INPUT_SIZE)
        for y in starts(area.y0, area.y1, height)
        for x in starts(area.x0, area.x1, width)
    ]


def _clamp(start: int, side: int, limit: int) -> int:
    """Shift a window inside [0, limit) when it fits, else centre it on the layer."""
    if side >= limit:
        return (limit - side) // 2
    return min(max(start, 0), limit - side)


def detect(
    read: Callable[[CropBox], np.ndarray], boxes: list[CropBox], layer_width: int, layer_height: int
) -> list[blazeface.Detection]:
    """BlazeFace on every window, merged in layer edge coordinates (boxes and keypoints); faces
    centred off the layer (mirror images from the reflected border) are dropped."""
    images = []
    for box in boxes:
        pixels = np.asarray(read(box), dtype=np.float32)
        if pixels.shape != (box.resolution, box.resolution, 3):
            raise ValueError(
                f"read({box}) must return [{box.resolution}, {box.resolution}, 3], "
                f"got {list(pixels.shape)}"
            )
        images.append(pixels)
    per_window = blazeface.detect(torch.from_numpy(np.stack(images)))
    found = []
    for box, dets in zip(boxes, per_window, strict=True):
        origin = np.array([box.x0, box.y0], dtype=np.float64)
        for d in dets:
            b = tuple(float(v) * box.side + origin[i % 2] for i, v in enumerate(d.box))
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            if 0 <= cx < layer_width and 0 <= cy < layer_height:
                found.append(blazeface.Detection(d.score, b, d.keypoints * box.side + origin))
    return blazeface.weighted_nms(found, _MERGE_IOU)


def _centre(p: np.ndarray) -> Point:
    """Edge coordinates -> pixel-centre coordinates."""
    return (float(p[0]) - 0.5, float(p[1]) - 0.5)


def refine(
    read: Callable[[CropBox], np.ndarray],
    face: blazeface.Detection,
    layer_width: int,
    layer_height: int,
) -> FaceLandmarks | None:
    """Landmarks of one detected face, or None when FaceMesh does not confirm it (BlazeFace's
    weaker boxes on textures, or a box holding a whole head and shoulders)."""
    kp = face.keypoints
    mesh = facemesh.run(
        read, facemesh.roi_from_eyes(face.box, kp[0], kp[1]), layer_width, layer_height
    )
    if mesh.presence < facemesh.MIN_PRESENCE:
        return None
    pts = mesh.points
    mouth_l, mouth_r = pts[facemesh.MOUTH_RIGHT], pts[facemesh.MOUTH_LEFT]
    return FaceLandmarks(
        eye_left=_centre(pts[list(facemesh.RIGHT_EYE_CONTOUR)].mean(axis=0)),
        eye_right=_centre(pts[list(facemesh.LEFT_EYE_CONTOUR)].mean(axis=0)),
        nose=_centre(pts[facemesh.NOSE_TIP]),
        mouth=_centre((mouth_l + mouth_r) / 2),
        mouth_left=_centre(mouth_l),
        mouth_right=_centre(mouth_r),
        score=face.score,
        box=tuple(v - 0.5 for v in face.box),
    )


def _same_face(a: FaceLandmarks, b: FaceLandmarks) -> bool:
    """Two results whose eyes lie within a quarter of the eye distance of each other."""
    iod = math.dist(a.eye_left, a.eye_right)
    return (
        math.dist(a.eye_left, b.eye_left) < iod / 4
        and math.dist(a.eye_right, b.eye_right) < iod / 4
    )


def find_faces(
    read: Callable[[CropBox], np.ndarray], layer_width: int, layer_height: int, around: Rect
) -> list[FaceLandmarks]:
    """Faces whose box overlaps ``around`` and that FaceMesh confirms, best
    score first. ``read(box)`` returns the box's
    pixels at ``box.resolution`` as float32 [R, R, 3] RGB in [0, 1]."""
    faces = detect(read, windows(layer_width, layer_height, around), layer_width, layer_height)
    near = [
        f
        for f in faces
        if not Rect(
            math.floor(f.box[0]),
            math.floor(f.box[1]),
            math.ceil(f.box[2]),
            math.ceil(f.box[3]),
        )
        .intersect(around)
        .empty
    ]
    near.sort(key=lambda f: -f.score)
    result: list[FaceLandmarks] = []
    for f in near:
        face = refine(read, f, layer_width, layer_height)
        if face is not None and not any(_same_face(face, kept) for kept in result):
            result.append(face)
    return result
