"""BlazeFace (MediaPipe's short-range face detector): anchors, box decoding and weighted NMS.

The network runs on 128 x 128 RGB scaled to [-1, 1] and scores 896 SSD anchors; each anchor
regresses a box and six keypoints (subject's right eye, left eye, nose tip, mouth centre, right
ear, left ear). The constants below are MediaPipe's face_detection_short_range graph options.
Coordinates here are normalised to the input square: 0 = left/top edge, 1 = right/bottom edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from gimp_draggan.edit.geometry import box_iou
from gimp_draggan.faces.graph import Graph

INPUT_SIZE = 128
NUM_KEYPOINTS = 6
_STRIDES = (8, 16, 16, 16)  # One entry per SSD layer; equal strides share a feature map.
_ANCHORS_PER_LAYER = 2  # Aspect ratio 1.0 plus the interpolated scale.
_SCORE_CLIP = 100.0
MIN_SCORE = 0.5
NMS_IOU = 0.3
_ASSETS = Path(__file__).resolve().parent.parent / "assets"


@dataclass(frozen=True)
class Detection:
    """One face in normalised input coordinates."""

    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    keypoints: np.ndarray  # [6, 2] (x, y)


@lru_cache(maxsize=1)
def network() -> Graph:
    """The converted BlazeFace graph, loaded once per process."""
    return Graph.load(_ASSETS / "face_detection.json", _ASSETS / "face_detection.safetensors")


@lru_cache(maxsize=1)
def anchors() -> np.ndarray:
    """[896, 2] anchor centres, in the order the network emits them (row, column, anchor)."""
    centres = []
    layer = 0
    while layer < len(_STRIDES):
        stride = _STRIDES[layer]
        same = sum(1 for s in _STRIDES[layer:] if s == stride)
        cells = -(-INPUT_SIZE // stride)
        for y in range(cells):
            for x in range(cells):
                centres += [((x + 0.5) / cells, (y + 0.5) / cells)] * (same * _ANCHORS_PER_LAYER)
        layer += same
    return np.asarray(centres, dtype=np.float64)


def detect(images: torch.Tensor, min_score: float = MIN_SCORE) -> list[list[Detection]]:
    """Faces in each of ``images`` ([N, 128, 128, 3] float32 RGB in [0, 1]), after NMS."""
    if images.ndim != 4 or tuple(images.shape[1:]) != (INPUT_SIZE, INPUT_SIZE, 3):
        raise ValueError(
            f"BlazeFace needs [N, {INPUT_SIZE}, {INPUT_SIZE}, 3] images, got {list(images.shape)}"
        )
    with torch.no_grad():
        regressors, classificators = network()(images.float() * 2.0 - 1.0)
    raw = regressors.double().numpy()
    logits = classificators[..., 0].double().numpy().clip(-_SCORE_CLIP, _SCORE_CLIP)
    scores = 1.0 / (1.0 + np.exp(-logits))
    return [decode(raw[i], scores[i], min_score) for i in range(raw.shape[0])]


def decode(raw: np.ndarray, scores: np.ndarray, min_score: float) -> list[Detection]:
    """Boxes and keypoints of the anchors scoring at least ``min_score``, merged by NMS."""
    centres = anchors()
    keep = np.flatnonzero(scores >= min_score)
    found = []
    for i in keep:
        r = raw[i] / INPUT_SIZE
        cx, cy = r[0] + centres[i, 0], r[1] + centres[i, 1]
        w, h = r[2], r[3]
        if not (w >= 0 and h >= 0):  # As MediaPipe: a negative or NaN size is a glitch.
            continue
        points = r[4 : 4 + 2 * NUM_KEYPOINTS].reshape(NUM_KEYPOINTS, 2) + centres[i]
        found.append(
            Detection(float(scores[i]), (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), points)
        )
    return weighted_nms(found, NMS_IOU)


def weighted_nms(found: list[Detection], threshold: float) -> list[Detection]:
    """MediaPipe's weighted NMS: each best-scoring box absorbs the boxes overlapping it by more
    than ``threshold`` IoU, its box and keypoints becoming their score-weighted mean."""
    rest = sorted(found, key=lambda d: -d.score)
    merged = []
    while rest:
        best = rest[0]
        group = [d for d in rest if box_iou(best.box, d.box) > threshold or d is best]
        rest = [d for d in rest if all(d is not g for g in group)]
        weights = np.array([d.score for d in group])
        boxes = np.array([d.box for d in group])
        points = np.stack([d.keypoints for d in group])
        total = weights.sum()
        box = tuple(float(v) for v in (weights @ boxes) / total)
        merged.append(
            Detection(
                best.score,
                box,  # type: ignore[arg-type]
                np.tensordot(weights, points, axes=1) / total,
            )
        )
    return merged
