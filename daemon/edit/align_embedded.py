"""Framing for the embedded cartoon-head model: the turned square its training images would show.

The embedded model only ever saw upright heads (`draggan.train.world`), so a head that is turned in
the user's layer inverts badly from a plain square crop. `KeypointAligner` runs the world's keypoint
detector (`draggan.train.keypoints`, weights in ``assets/keypoints.safetensors``) on a first square
around the needed region, fits the least-squares similarity transform (Umeyama 1991) that carries
the detected eyes and mouth corners onto the *template* — the mean of those keypoints over world
images — and returns that transform's square as a `CropBox` with its `angle`. Detection and fit are
repeated on each new crop until the square settles (the detector was trained upright, so each look
at a straighter head is better: a 30° turn is left at ~10° by the first fit, ~1° by the third;
tests/bench/bench_align.py measures it), and the round whose heatmaps were sharpest is kept.
When the rounds from the square around ``needed`` do not settle on a plausible head (points close
together on a big head, no selection), they start again from squares 2x and 4x as wide. Framings
are remembered per region of one layer (the pipeline frames a region several times).

Template: the mean of the world's ground-truth eyes and mouth corners over a fixed seed range
(`TEMPLATE_SEEDS`, 1024 images), stored as a constant (`TEMPLATE`): computing it takes seconds on a
busy CPU, too long for a daemon's first drag; a test recomputes it
(`gimp_draggan_tools.train.template`) so it cannot drift from the world's code. (Its sampling
error is ~0.1 px at 64 px: the means of two disjoint sets of 2048 seeds differ by 0.09 px at
most.)

Implausible detections fall back to `SquareFraming`: flat or face-less crops give broad heatmaps
(the soft-argmax's spread, `max_spread`), mis-detected points do not fit the template's shape
(`max_residual`), a turn over `max_angle` (60°) is not believed, and a crop that does not hold
``needed`` is refused as the protocol demands.

Coordinates: layer points are pixel centres (``crop``'s convention); the detector and the world
use pixel edges (a pixel centre at integer + 0.5); the template is in units of the square's side,
(0, 0) its top-left corner, so it serves every model resolution.
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from gimp_draggan.edit.align import EMBEDDED, SQUARE, Framing, SquareFraming
from gimp_draggan.edit.geometry import CropBox, Rect
from gimp_draggan.edit.pixels import depth_of
from gimp_draggan.edit.sampling import model_view
from gimp_draggan.faces.keypoints import ASSET, load_detector

FIT_POINTS: tuple[int, ...] = (0, 1, 3, 4)  # world.KEYPOINT_NAMES: eyes, mouth corners.
TEMPLATE_SEEDS = range(7_000_000, 7_001_024)  # Disjoint from the GAN's, detector's, eval seeds.


@dataclass(frozen=True)
class Similarity:
    """``x -> scale * rotation @ x + translation`` for 2-D points."""

    scale: float
    rotation: np.ndarray  # [2, 2], det +1.
    translation: np.ndarray  # [2]

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(points, np.float64) @ self.rotation.T + self.translation


def umeyama(src: np.ndarray, dst: np.ndarray) -> Similarity:
    """Least-squares similarity carrying ``src`` [N, 2] onto ``dst`` [N, 2] (Umeyama 1991:
    rotation from the SVD of the cross-covariance, reflection excluded, then scale, shift)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(
            f"umeyama needs two [N, 2] point sets of one shape with N >= 2, got "
            f"{list(src.shape)} and {list(dst.shape)}"
        )
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("umeyama: points must be finite")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    var_s = float((s * s).sum(axis=1).mean())
    if var_s <= 1e-12:
        raise ValueError("umeyama: the source points all coincide; no transform is defined")
    cov = d.T @ s / src.shape[0]
    u, sv, vt = np.linalg.svd(cov)
    flip = np.diag([1.0, float(np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0)])
    rotation = u @ flip @ vt
    scale = float(np.trace(np.diag(sv) @ flip)) / var_s
    return Similarity(scale, rotation, mu_d - scale * rotation @ mu_s)


# Mean eyes and mouth corners of the world images of TEMPLATE_SEEDS, in units of the square's side;
# `gimp_draggan_tools.train.template` recomputes it (a test checks that it still matches the world).
TEMPLATE = ((0.3933, 0.4558), (0.6041, 0.4558), (0.4086, 0.6439), (0.5887, 0.6439))


def template() -> np.ndarray:
    """`TEMPLATE` as a [4, 2] float64 array."""
    return np.array(TEMPLATE, np.float64)


@functools.lru_cache(maxsize=2)
def _detector(path: str | None) -> Any:
    return load_detector(path or ASSET).requires_grad_(False)


def box_from_similarity(sim: Similarity, like: CropBox) -> CropBox:
    """The square whose side-unit coordinates are ``sim`` of layer edge coordinates, rounded
    to whole layer pixels, for ``like``'s layer and resolution.

    With centre c, side S and angle a (`CropBox`) a layer edge point p has side-unit
    coordinates R(-a) (p - c) / S + 1/2, so S = 1/scale, R(-a) = rotation, c = R(a)(1/2 - t)/scale.
    """
    side_f = 1.0 / sim.scale
    angle = math.atan2(sim.rotation[0, 1], sim.rotation[0, 0])
    centre = sim.rotation.T @ (0.5 - sim.translation) / sim.scale
    side = max(1, round(side_f))
    return replace(
        like,
        x0=round(centre[0] - side / 2.0),
        y0=round(centre[1] - side / 2.0),
        side=side,
        angle=angle,
    )


@dataclass(frozen=True)
class AlignFit:
    """One detect -> fit round."""

    box: CropBox  # The square the fit calls for.
    seen: CropBox  # The square the detector looked at.
    points: np.ndarray  # Detected eyes and mouth corners [4, 2], layer pixel centres.
    spread: float  # Mean heatmap spread of those points, detector pixels.
    residual: float  # RMS distance from the template after the fit, in units of the side.


@dataclass(frozen=True)
class KeypointAligner:
    """`Aligner` for the embedded model (see the module docstring)."""

    margin: float = 0.25  # First square (and fallback): SquareFraming's margin.
    rounds: int = 8  # Most detect -> fit rounds (~10 ms each at 64 px, CPU).
    max_spread: float = 8.0  # Detector px; world images: mean 3.7, 95 % under 4.9.
    max_growth: float = 4.0  # A fitted square this many times larger/smaller is absurd.
    max_residual: float = 0.06  # Side units.
    max_angle: float = math.radians(60)
    detector: str | None = None  # Weights file; None = the shipped asset.
    starts: int = 3  # First squares tried: 1x, 2x, 4x the square around ``needed``.
    # Framings already made for one layer (the pipeline frames the same regions several times
    # while planning groups and finding sessions, and a repeat drag sends the same pixels
    # again): the layer they belong to, its content digest, and the framings by region.
    _layer: list[np.ndarray] = field(default_factory=list, compare=False, repr=False)
    _digest: list[str] = field(default_factory=list, compare=False, repr=False)
    _seen: dict[tuple[Rect, int], Framing] = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def frame(self, layer: np.ndarray, needed: Rect, resolution: int) -> CropBox:
        return self.locate(layer, needed, resolution).box

    def locate(self, layer: np.ndarray, needed: Rect, resolution: int) -> Framing:
        """`fresh_locate`, remembered per region of the same layer (the same object, or the
        same pixels: a framing depends on nothing else; hashing even 24 MP costs less than one
        framing)."""
        with self._lock:  # One aligner serves a cluster actor's concurrent jobs.
            if not self._layer or self._layer[0] is not layer:
                digest = _layer_digest(layer)
                if self._digest != [digest]:
                    self._seen.clear()
                self._layer[:] = [layer]
                self._digest[:] = [digest]
            key = (needed, resolution)
            if key not in self._seen:
                self._seen[key] = self.fresh_locate(layer, needed, resolution)
            return self._seen[key]

    def forget(self) -> None:
        """Drop the framings made on the current layer (it was changed in place)."""
        with self._lock:
            self._layer.clear()
            self._digest.clear()
            self._seen.clear()

    def fresh_locate(self, layer: np.ndarray, needed: Rect, resolution: int) -> Framing:
        """The aligned box ("embedded"), or the fallback square ("square").

        The rounds start from the square around ``needed``; when they do not settle on a
        plausible head there (points close together on a big head, no selection), they start
        again from squares twice and four times as wide around the same centre. A plausible
        fit whose rounds never settled is used only when no start settles."""
        first = SquareFraming(self.margin).frame(layer, needed, resolution)
        unsettled: AlignFit | None = None
        for start in _widening(first, self.starts):
            fits = self.fits(layer, needed, resolution, start)
            best = self.best(fits)
            if not self.plausible(best, needed):
                continue
            if _settled(fits[-1].seen, fits[-1].box):
                return Framing(best.box, EMBEDDED)
            unsettled = unsettled or best
        if unsettled is not None:
            return Framing(unsettled.box, EMBEDDED)
        return Framing(first, SQUARE)

    @staticmethod
    def best(fits: list[AlignFit]) -> AlignFit:
        """The round whose detection was surest (smallest spread): a round whose crop drifted
        onto texture sees the head worse than the one before."""
        return min(fits, key=lambda f: f.spread)

    def plausible(self, fit: AlignFit, needed: Rect) -> bool:
        """Whether ``fit``'s square can be trusted and holds ``needed``."""
        return (
            fit.spread <= self.max_spread
            and fit.residual <= self.max_residual
            and abs(fit.box.angle) <= self.max_angle
            and fit.box.holds(needed)
        )

    def fits(
        self, layer: np.ndarray, needed: Rect, resolution: int, start: CropBox | None = None
    ) -> list[AlignFit]:
        """Every round's fit, first to last, from ``start`` (default: the square around
        ``needed``). The rounds end early once the square stops moving (`_settled`), or leaves
        the layer, or grows or shrinks ``max_growth`` times the first."""
        if layer.ndim != 3 or layer.shape[2] != 4:
            raise ValueError(f"layer must be [H, W, 4] RGBA, got {list(layer.shape)}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        first = start or SquareFraming(self.margin).frame(layer, needed, resolution)
        box = first
        out: list[AlignFit] = []
        for _ in range(self.rounds):
            fit = self.fit_once(layer, box)
            out.append(fit)
            if (
                _settled(box, fit.box)
                or fit.box.inside.empty
                or not (
                    first.side / self.max_growth <= fit.box.side <= first.side * self.max_growth
                )
            ):
                break
            box = fit.box
        return out

    def fit_once(self, layer: np.ndarray, box: CropBox) -> AlignFit:
        """Detect in ``box`` and fit the template to what was found."""
        net = _detector(self.detector)
        r = int(net.resolution)
        seen = replace(box, resolution=r)
        crop = model_view(layer, depth_of(layer), seen)
        img = torch.from_numpy(crop).permute(2, 0, 1)[None] * 2.0 - 1.0
        with torch.no_grad():
            all_logits = net.heatmap_logits(img)
            kps = net.soft_argmax(all_logits)[0, list(FIT_POINTS)].double().numpy()  # edges, px
            logits = all_logits[0, list(FIT_POINTS)].double()
        spread = _spread(logits, r)
        points = np.asarray(seen.to_layer([(float(x) - 0.5, float(y) - 0.5) for x, y in kps]))
        tmpl = template()
        sim = umeyama(points + 0.5, tmpl)
        residual = float(np.sqrt(((sim.apply(points + 0.5) - tmpl) ** 2).sum(axis=1).mean()))
        return AlignFit(box_from_similarity(sim, box), seen, points, spread, residual)


def _layer_digest(layer: np.ndarray) -> str:
    """Content digest of a layer: shape, dtype and every pixel."""
    h = hashlib.blake2b(repr((layer.shape, layer.dtype.str)).encode(), digest_size=16)
    h.update(np.ascontiguousarray(layer).data)
    return h.hexdigest()


def _widening(first: CropBox, count: int) -> list[CropBox]:
    """``first`` and up to ``count - 1`` squares doubling in side around its centre, while they
    still fit within twice the layer's longer side."""
    out = [first]
    limit = 2 * max(first.layer_width, first.layer_height)
    while len(out) < count and out[-1].side * 2 <= limit:
        out.append(first.with_side(out[-1].side * 2))
    return out


def _settled(before: CropBox, after: CropBox) -> bool:
    """Whether a round moved the square by less than 1 % of its side and turned it by < 0.5°."""
    tol = 0.01 * before.side
    return (
        abs(after.side - before.side) <= tol
        and math.dist(after.centre, before.centre) <= tol
        and abs(math.remainder(after.angle - before.angle, 2 * math.pi)) < math.radians(0.5)
    )


def _spread(logits: Any, resolution: int) -> float:
    """Mean over keypoints of the soft-argmax distribution's RMS radius, in input pixels."""
    k, h, w = logits.shape
    prob = logits.reshape(k, -1).softmax(dim=1).reshape(k, h, w)
    centres = (np.arange(h) + 0.5) * (resolution / h)
    c = prob.new_tensor(centres)
    px, py = prob.sum(dim=1), prob.sum(dim=2)  # [K, W], [K, H]
    var_x = (px * c * c).sum(1) - (px * c).sum(1) ** 2
    var_y = (py * c * c).sum(1) - (py * c).sum(1) ** 2
    var = var_x + var_y
    return float(var.clamp(min=0).sqrt().mean())
