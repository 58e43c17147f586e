"""How the crop is framed for a model: a plain square, or a face placed as FFHQ placed it.

FFHQ models were trained on faces aligned by landmarks (eyes and mouth at fixed places, the
head turned upright), and a real photo inverts far better when it is cropped the same way.
`FaceAligner` finds the faces around the region to edit (a ``find_faces`` callable:
`gimp_draggan.faces.find_faces` in the daemon, a fake in tests), builds FFHQ's square from the
one holding the handles, targets and selection (searching ever wider areas when no face found
near them has a square that holds them), and returns it as a turned `CropBox`. When no face
holds them it falls back to `SquareFraming`, the square around the selection ∪ the points that
models without alignment get (`gimp_draggan.edit.aligners.aligner_for`: models.json's
``"alignment"`` says which; the embedded model's "embedded" is `gimp_draggan.edit.align_embedded`).
`SubjectFraming` frames the largest face for an inversion without points or selection.

`Aligner` is the protocol every aligner implements (this module's and the embedded model's):
``locate`` returns the box with the method that made it ("ffhq" / "embedded" / "square"), so the
pipeline can log which framing a session used; ``frame`` the box alone; ``forget`` drops what an
aligner remembers of a layer that was changed in place.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gimp_draggan.edit.geometry import CropBox, Rect, choose_box
from gimp_draggan.edit.pixels import depth_of
from gimp_draggan.edit.pyramid import LayerPyramid
from gimp_draggan.faces import FaceLandmarks

# find_faces(read, layer_width, layer_height, around) -> faces best first (`gimp_draggan.faces`).
FindFaces = Callable[[Callable[[CropBox], np.ndarray], int, int, Rect], "list[FaceLandmarks]"]

SQUARE = "square"
FFHQ = "ffhq"
EMBEDDED = "embedded"  # The embedded model's keypoint framing (`gimp_draggan.edit.align_embedded`).
_FIRST_GROWTH = 48  # Layer pixels the first wider face search adds on each side of `needed`.


@dataclass(frozen=True)
class Framing:
    box: CropBox
    method: str  # SQUARE, FFHQ or EMBEDDED.
    face: FaceLandmarks | None = None  # The face the box was built from.


class Aligner(Protocol):
    def frame(self, layer: np.ndarray, needed: Rect, resolution: int) -> CropBox:
        """The square of ``layer`` ([H, W, 4]) to show the model; it must hold ``needed``."""
        ...

    def locate(self, layer: np.ndarray, needed: Rect, resolution: int) -> Framing:
        """`frame`'s box with the method that made it."""
        ...

    def forget(self) -> None:
        """Drop what was remembered of the current layer (it was changed in place)."""
        ...


@dataclass(frozen=True)
class SquareFraming:
    """No alignment: the square around ``needed``, padded by ``margin`` (see `choose_box`)."""

    margin: float = 0.25

    def frame(self, layer: np.ndarray, needed: Rect, resolution: int) -> CropBox:
        h, w = layer.shape[:2]
        return choose_box(needed, w, h, resolution, margin=self.margin)

    def locate(self, layer: np.ndarray, needed: Rect, resolution: int) -> Framing:
        return Framing(self.frame(layer, needed, resolution), SQUARE)

    def forget(self) -> None:
        """Nothing is remembered."""


def ffhq_box(face: FaceLandmarks, layer_width: int, layer_height: int, resolution: int) -> CropBox:
    """The square FFHQ's alignment cuts around ``face``, as a turned box.

    Recipe (FFHQ dataset): with the eyes' mean e, eye_to_eye = right - left and eye_to_mouth =
    mouth - e, the square's half x-axis is eye_to_eye plus eye_to_mouth turned a quarter
    clockwise (for an upright face both point to the image's right), normalised, then scaled to
    max(2 |eye_to_eye|, 1.8 |eye_to_mouth|); the centre is e + 0.1 eye_to_mouth; the side is
    twice the half axis. The box keeps integer corner and side, so its centre and side are
    rounded to half a layer pixel."""
    el, er = np.asarray(face.eye_left, np.float64), np.asarray(face.eye_right, np.float64)
    mouth = np.asarray(face.mouth, np.float64)
    eye_avg = (el + er) / 2.0
    eye_to_eye = er - el
    eye_to_mouth = mouth - eye_avg
    x = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    norm = float(np.hypot(*x))
    half = max(2.0 * float(np.hypot(*eye_to_eye)), 1.8 * float(np.hypot(*eye_to_mouth)))
    if not (norm > 0.0 and half > 0.0 and math.isfinite(norm + half)):
        raise ValueError(f"face landmarks are degenerate (eyes and mouth coincide): {face}")
    x *= half / norm
    # Landmarks are pixel centres; the box's centre is in edge coordinates (+0.5).
    cx, cy = eye_avg + 0.1 * eye_to_mouth + 0.5
    side = max(1, round(2.0 * half))
    angle = _no_noise(math.atan2(x[1], x[0]))
    return CropBox.centred(
        (float(cx), float(cy)), side, layer_width, layer_height, resolution, angle
    )


def _no_noise(angle: float) -> float:
    """0 for an angle that is rounding noise, so an upright face takes the unturned crop path."""
    return 0.0 if abs(angle) < 1e-9 else angle


class FaceAligner:
    """FFHQ framing of the face that holds what must be edited; `SquareFraming` otherwise.

    The faces found around one ``needed`` region of one layer are remembered (the pipeline
    frames the same region several times while planning groups and looking up sessions)."""

    def __init__(self, find_faces: FindFaces, fallback: SquareFraming | None = None) -> None:
        self.find_faces = find_faces
        self.fallback = fallback or SquareFraming()
        self._layer: np.ndarray | None = None
        self._faces: dict[Rect, list[FaceLandmarks]] = {}
        self._pyramid: LayerPyramid | None = None

    def forget(self) -> None:
        """Drop what was found on the current layer (it was changed in place)."""
        self._layer, self._faces, self._pyramid = None, {}, None

    def faces(self, layer: np.ndarray, needed: Rect) -> list[FaceLandmarks]:
        """The faces ``find_faces`` sees around ``needed`` (what the model would see: the layer
        flattened over grey, big windows read from a `LayerPyramid`)."""
        if layer is not self._layer:
            self._layer, self._faces, self._pyramid = layer, {}, None
        if needed not in self._faces:
            h, w = layer.shape[:2]
            if self._pyramid is None:
                self._pyramid = LayerPyramid(layer, depth_of(layer))
            self._faces[needed] = list(self.find_faces(self._pyramid.read, w, h, needed))
        return self._faces[needed]

    def locate(self, layer: np.ndarray, needed: Rect, resolution: int) -> Framing:
        """FFHQ's box of the face whose turned square holds ``needed`` (the square centred
        nearest to it when several do), else the fallback square. A face's square reaches well
        past its detector box (hair, ears, chin), so when no face found around ``needed`` will
        do, faces are searched around ever wider areas (`_search_areas`) up to the layer."""
        h, w = layer.shape[:2]
        nx, ny = (needed.x0 + needed.x1) / 2.0, (needed.y0 + needed.y1) / 2.0
        for area in _search_areas(needed, w, h):
            best: tuple[float, CropBox, FaceLandmarks] | None = None
            for face in self.faces(layer, area):
                try:
                    box = ffhq_box(face, w, h, resolution)
                except ValueError:
                    continue
                if not box.holds(needed):
                    continue
                d = math.dist(box.centre, (nx, ny))
                if best is None or d < best[0]:
                    best = (d, box, face)
            if best is not None:
                return Framing(best[1], FFHQ, best[2])
        return Framing(self.fallback.frame(layer, needed, resolution), SQUARE)

    def frame(self, layer: np.ndarray, needed: Rect, resolution: int) -> CropBox:
        return self.locate(layer, needed, resolution).box

    def locate_subject(self, layer: np.ndarray, region: Rect, resolution: int) -> Framing | None:
        """Without points (inverting a portrait): FFHQ's box of the largest face found in
        ``region``, or None when there is none."""
        h, w = layer.shape[:2]
        faces = sorted(
            self.faces(layer, region),
            key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]),
            reverse=True,
        )
        for face in faces:
            try:
                return Framing(ffhq_box(face, w, h, resolution), FFHQ, face)
            except ValueError:
                continue
        return None


def _search_areas(needed: Rect, width: int, height: int) -> Iterator[Rect]:
    """``needed``, then ``needed`` grown on every side by its extent (at least
    ``_FIRST_GROWTH`` pixels), four times more each time, clipped to the layer, until the
    whole layer is searched."""
    whole = Rect(0, 0, width, height)
    yield needed
    grow = max(_FIRST_GROWTH, needed.width, needed.height)
    area = needed
    while not area.contains(whole):
        area = Rect(
            needed.x0 - grow, needed.y0 - grow, needed.x1 + grow, needed.y1 + grow
        ).intersect(whole)
        yield area
        grow *= 4


@dataclass(frozen=True)
class SubjectFraming:
    """The framing of an inversion without points: the largest face in the region to invert,
    framed as FFHQ (`FaceAligner.locate_subject`), else ``fallback``'s square around it."""

    faces: FaceAligner
    fallback: SquareFraming

    def locate(self, layer: np.ndarray, needed: Rect, resolution: int) -> Framing:
        found = self.faces.locate_subject(layer, needed, resolution)
        if found is not None:
            return found
        return Framing(self.fallback.frame(layer, needed, resolution), SQUARE)

    def frame(self, layer: np.ndarray, needed: Rect, resolution: int) -> CropBox:
        return self.locate(layer, needed, resolution).box

    def forget(self) -> None:
        self.faces.forget()
