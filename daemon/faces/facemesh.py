"""FaceMesh (MediaPipe's 468-point face landmark model) on a rotated square of the layer.

MediaPipe crops the face as a square turned by the eye line (so the eyes are level in the crop),
1.5x the detector's box, resamples it bilinearly to 192 x 192 RGB in [0, 1], and reads 468 (x, y, z)
points in crop pixels plus a face-presence logit. Here the square is read axis-aligned through
``read`` (a ``CropBox`` around the turned square) and turned in torch with ``grid_sample``.
Layer coordinates in this module are *edge* coordinates: pixel (i, j) covers [i, i+1) x [j, j+1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gimp_draggan.edit.geometry import CropBox
from gimp_draggan.faces.graph import Graph

INPUT_SIZE = 192
NUM_LANDMARKS = 468
ROI_SCALE = 1.5
MIN_PRESENCE = 0.5
_MAX_READ = 512  # Cap on the axis-aligned read's resolution (pixels per side).
_ASSETS = Path(__file__).resolve().parent.parent / "assets"

# Mesh vertex numbers (MediaPipe's canonical face topology). "Right"/"left" are the subject's.
RIGHT_EYE_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
LEFT_EYE_CONTOUR = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
NOSE_TIP = 1
MOUTH_RIGHT = 61  # Subject's right mouth corner (the image's left on an upright face).
MOUTH_LEFT = 291


@dataclass(frozen=True)
class Roi:
    """A square of the layer turned by ``angle`` (radians) about its centre; the crop's +x axis
    points along (cos a, sin a) in the layer (y down)."""

    cx: float
    cy: float
    side: float
    angle: float

    def to_layer(self, crop_points: np.ndarray, size: int) -> np.ndarray:
        """[K, 2] points in crop pixels (0..size, edge coordinates) -> layer edge coordinates."""
        u = (crop_points[:, 0] / size - 0.5) * self.side
        v = (crop_points[:, 1] / size - 0.5) * self.side
        c, s = math.cos(self.angle), math.sin(self.angle)
        return np.stack([self.cx + c * u - s * v, self.cy + s * u + c * v], axis=1)


@dataclass(frozen=True)
class Mesh:
    """FaceMesh result: landmarks [468, 2] in layer edge coordinates and the presence score."""

    points: np.ndarray
    presence: float


@lru_cache(maxsize=1)
def network() -> Graph:
    """The converted FaceMesh graph, loaded once per process."""
    return Graph.load(_ASSETS / "face_landmark.json", _ASSETS / "face_landmark.safetensors")


def read_turned(
    read: Callable[[CropBox], np.ndarray], roi: Roi, layer_width: int, layer_height: int, size: int
) -> torch.Tensor:
    """The ``roi`` square resampled to ``size`` x ``size`` ([size, size, 3] float32, bilinear)."""
    if roi.side <= 0:
        raise ValueError(f"face crop side must be positive, got {roi.side}")
    c, s = abs(math.cos(roi.angle)), abs(math.sin(roi.angle))
    span = roi.side * (c + s)  # Side of the axis-aligned square holding the ROI.
    x0 = math.floor(roi.cx - span / 2) - 1
    y0 = math.floor(roi.cy - span / 2) - 1
    side = max(math.ceil(roi.cx + span / 2) + 1 - x0, math.ceil(roi.cy + span / 2) + 1 - y0)
    resolution = min(_MAX_READ, max(size, math.ceil(size * side / roi.side)))
    box = CropBox(x0, y0, side, layer_width, layer_height, resolution)
    pixels = np.asarray(read(box), dtype=np.float32)
    if pixels.shape != (resolution, resolution, 3):
        raise ValueError(
            f"read({box}) must return [{resolution}, {resolution}, 3], got {list(pixels.shape)}"
        )
    grid_crop = np.arange(size) + 0.5
    gu, gv = np.meshgrid(grid_crop, grid_crop)
    layer = roi.to_layer(np.stack([gu.ravel(), gv.ravel()], axis=1), size)
    norm = ((layer - np.array([x0, y0])) / side) * 2.0 - 1.0
    grid = torch.from_numpy(norm.reshape(1, size, size, 2)).float()
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0].permute(1, 2, 0)


def run(
    read: Callable[[CropBox], np.ndarray], roi: Roi, layer_width: int, layer_height: int
) -> Mesh:
    """FaceMesh landmarks of the face in ``roi``."""
    crop = read_turned(read, roi, layer_width, layer_height, INPUT_SIZE)
    with torch.no_grad():
        landmarks, flag = network()(crop[None])
    xyz = landmarks.double().numpy().reshape(NUM_LANDMARKS, 3)
    presence = 1.0 / (1.0 + math.exp(-float(flag.reshape(-1)[0])))
    return Mesh(roi.to_layer(xyz[:, :2], INPUT_SIZE), presence)


def roi_from_eyes(
    box: tuple[float, float, float, float], eye_right: np.ndarray, eye_left: np.ndarray
) -> Roi:
    """MediaPipe's detection -> landmark ROI: the box's centre, 1.5x its longer side, turned so
    the line from the subject's right eye to the left eye is level."""
    angle = math.atan2(eye_left[1] - eye_right[1], eye_left[0] - eye_right[0])
    side = ROI_SCALE * max(box[2] - box[0], box[3] - box[1])
    return Roi((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, side, angle)
