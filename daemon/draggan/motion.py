"""The motion a drag made: for each pixel of the dragged image, where it came from.

The composite moves the photo's own pixels along this field instead of pasting the generator's
image (which at 64-512 px, through an imperfect inversion, has none of the photo's texture).
The field is read from the generator itself, as DragGAN's point tracking reads it, but densely:

1. features of the reconstruction (``f0``, the pivot latent) and of the dragged latent (``f1``)
   from the tracking block, unit-normalised per pixel;
2. every pixel of ``f1`` finds its nearest neighbour (cosine distance) in ``f0`` within a window
   as wide as the drag's longest move, with a small pull towards zero motion so that where
   nothing moved the field is exactly zero; a parabola through the costs next to the minimum
   gives the sub-pixel offset;
3. pixels whose best match is about as good as the rest of the window (flat skin, sky) say
   little about motion: the field is smoothed with weights that favour distinct matches
   (normalised convolution), so such regions take their neighbours' motion;
4. the field is anchored to the tracked handles: a smooth correction (Gaussian RBF, solved
   exactly at the anchors) makes each anchor's content come from its source point, so the
   photo's content arrives where the drag says it did, to a fraction of a pixel;
5. confidence: 1 where the best match is close (the pixel's content exists in the
   reconstruction), falling to 0 where no feature in reach matches (content the drag revealed,
   e.g. an opened mouth) — only there does the composite fall back to the generator's pixels.

Layouts: features ``[1, C, f, f]``; the field ``[2, R, R]`` (dx, dy) in model pixels at the model
resolution R; points ``(x, y)`` model pixels, x = column.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gimp_draggan_plugin.protocol import Point


@dataclass(frozen=True)
class MotionParams:
    """How the field is read from the features (distances in feature pixels unless said)."""

    zero_prior: float = 2e-3  # Cost added per squared feature pixel of motion.
    smooth_sigma: float = 1.5  # Gaussian of the normalised-convolution smoothing.
    source_cost: tuple[float, float] = (0.15, 0.45)  # Cosine cost: full -> no confidence.
    anchor_sigma: float = 0.08  # RBF width around anchors, fraction of the resolution.
    max_radius: float = 0.25  # Search window cap, fraction of the feature map.


@dataclass(frozen=True)
class MotionField:
    """Backward motion at the model resolution: pixel (x, y) of the dragged image shows the
    reconstruction at (x + dx, y + dy); ``confidence`` says whether that source exists."""

    flow: torch.Tensor  # [2, R, R] float32, model pixels.
    confidence: torch.Tensor  # [R, R] float32 in [0, 1].

    def __post_init__(self) -> None:
        r = self.flow.shape[-1]
        assert self.flow.shape == (2, r, r), f"flow must be [2, R, R], got {self.flow.shape}"
        assert self.confidence.shape == (r, r), "confidence must be [R, R]"

    @property
    def resolution(self) -> int:
        return int(self.flow.shape[-1])

    def at(self, points: Sequence[Point]) -> list[Point]:
        """The flow (dx, dy) at model points (bilinear)."""
        return [(float(dx), float(dy)) for dx, dy in _sample(self.flow, points).t().tolist()]


def identity(resolution: int) -> MotionField:
    """No motion, full confidence: the composite of this field changes nothing."""
    return MotionField(
        flow=torch.zeros(2, resolution, resolution),
        confidence=torch.ones(resolution, resolution),
    )


def estimate_motion(
    f0: torch.Tensor,  # [1, C, f, f] reconstruction features.
    f1: torch.Tensor,  # [1, C, f, f] dragged features.
    resolution: int,  # Model resolution R.
    anchors: Sequence[tuple[Point, Point]],  # (where it is now, where it came from), model px.
    params: MotionParams | None = None,
) -> MotionField:
    """The dense backward motion from ``f0`` to ``f1`` at resolution R (see the module doc)."""
    params = params or MotionParams()
    assert f0.ndim == 4 and f0.shape == f1.shape and f0.shape[0] == 1, (
        f"features must be equal [1, C, f, f], got {list(f0.shape)} and {list(f1.shape)}"
    )
    f = int(f0.shape[-1])
    cell = resolution / f  # Model pixels per feature pixel.
    f0 = F.normalize(f0.detach().float(), dim=1)
    f1 = F.normalize(f1.detach().float(), dim=1)
    reach = max((math.dist(a, b) for a, b in anchors), default=0.0) / cell
    radius = int(min(max(math.ceil(reach) + 2, 2), max(2, round(params.max_radius * f))))
    cost = _cost_volume(f0, f1, radius)  # [K, K, f, f]
    disp, best, spread = _best_offsets(cost, radius, params.zero_prior)
    weight = (1.0 - best / spread.clamp(min=1e-6)).clamp(0.0, 1.0).square()
    flow = _normalised_blur(disp * weight, weight, params.smooth_sigma)  # [2, f, f]
    lo, hi = params.source_cost
    conf = 1.0 - ((best - lo) / (hi - lo)).clamp(0.0, 1.0)  # [f, f]
    size = (resolution, resolution)
    flow = F.interpolate(flow[None] * cell, size=size, mode="bicubic", align_corners=False)[0]
    conf = F.interpolate(conf[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    if anchors:
        sigma = max(params.anchor_sigma * resolution, 2.0 * cell, reach * cell)
        flow, near = _anchor(flow, anchors, sigma)
        conf = torch.maximum(conf, near)
    return MotionField(flow=flow.contiguous(), confidence=conf.clamp(0.0, 1.0).contiguous())


def _cost_volume(f0: torch.Tensor, f1: torch.Tensor, radius: int) -> torch.Tensor:
    """Cosine distance between ``f1`` at p and ``f0`` at p + (dx, dy), for |dx|, |dy| <= radius:
    ``[K, K, f, f]`` indexed [dy + radius, dx + radius]; a source off the map costs 2."""
    f = f0.shape[-1]
    k = 2 * radius + 1
    padded = F.pad(f0, [radius] * 4)  # zeros: cosine 0 -> cost 1 ...
    inside = F.pad(torch.ones_like(f0[:, :1]), [radius] * 4)
    cost = f0.new_empty(k, k, f, f)
    for i in range(k):
        for j in range(k):
            src = padded[..., i : i + f, j : j + f]
            sim = (f1 * src).sum(dim=1)[0]
            cost[i, j] = torch.where(inside[0, 0, i : i + f, j : j + f] > 0, 1.0 - sim, 2.0)
    return cost


def _best_offsets(
    cost: torch.Tensor, radius: int, zero_prior: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pixel: the sub-pixel offset of the cheapest source ``[2, f, f]`` (dx, dy), its
    cost ``[f, f]`` and the window's median cost ``[f, f]`` (how distinct the match is)."""
    k, f = cost.shape[0], cost.shape[-1]
    r = torch.arange(-radius, radius + 1, dtype=cost.dtype, device=cost.device)
    prior = zero_prior * (r[:, None].square() + r[None, :].square())
    total = (cost + prior[:, :, None, None]).reshape(k * k, f, f)
    idx = total.argmin(dim=0)  # [f, f]
    iy, ix = idx // k, idx % k
    best = cost.reshape(k * k, f, f).gather(0, idx[None])[0]
    spread = cost.reshape(k * k, f, f).median(dim=0).values
    sub = []
    for along, centre in ((1, ix), (0, iy)):
        lo = (centre - 1).clamp(0, k - 1)
        hi = (centre + 1).clamp(0, k - 1)

        def at(c: torch.Tensor, _along: int = along) -> torch.Tensor:
            y, x = (iy, c) if _along == 1 else (c, ix)
            return total.gather(0, (y * k + x)[None])[0]

        c0, cl, ch = at(centre), at(lo), at(hi)
        curve = cl - 2.0 * c0 + ch
        ok = (lo != centre) & (hi != centre) & (curve > 1e-9)
        off = torch.where(ok, 0.5 * (cl - ch) / curve.clamp(min=1e-9), torch.zeros_like(c0))
        # A parabola through a lopsided but exact minimum (c0 ~ 0) would still move it: trust
        # the offset only as far as the minimum is not exact (for a true offset t the cost
        # there is ~t^2 of its neighbours': t = 0.1 keeps half the offset, t = 0 none of it).
        ratio = c0 / torch.minimum(cl, ch).clamp(min=1e-9)
        off = off * ratio / (ratio + 0.01)
        sub.append(centre.to(cost.dtype) - radius + off.clamp(-0.5, 0.5))
    return torch.stack(sub), best, spread


def _gaussian_1d(sigma: float, device: torch.device) -> torch.Tensor:
    n = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-n, n + 1, dtype=torch.float32, device=device)
    g = torch.exp(-0.5 * (x / sigma).square())
    return g / g.sum()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian of ``[C, h, w]``, zeros outside."""
    g = _gaussian_1d(sigma, x.device)
    n = g.numel() // 2
    c = x.shape[0]
    y = F.conv2d(x[None], g.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, n), groups=c)
    y = F.conv2d(y, g.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(n, 0), groups=c)
    return y[0]


def _normalised_blur(values: torch.Tensor, weight: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian average of ``values`` ([C, h, w], already multiplied by ``weight``) where each
    pixel counts by ``weight`` ([h, w]); where no weight is in reach the result is 0."""
    num = _blur(values, sigma)
    den = _blur(weight[None], sigma)[0]
    return torch.where(den > 1e-4, num / den.clamp(min=1e-4), torch.zeros_like(num))


def _sample(field: torch.Tensor, points: Sequence[Point]) -> torch.Tensor:
    """Bilinear samples of ``[C, R, R]`` at model points (pixel centres at integers): ``[C, P]``."""
    r = field.shape[-1]
    pts = torch.tensor(points, dtype=torch.float32, device=field.device).reshape(1, 1, -1, 2)
    grid = (pts + 0.5) / r * 2.0 - 1.0
    out = F.grid_sample(
        field[None], grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return out[0, :, 0]


def _anchor(
    flow: torch.Tensor, anchors: Sequence[tuple[Point, Point]], sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``flow`` plus the smooth correction that makes it exact at the anchors, and a map
    ``[R, R]`` of how near each pixel is to an anchor (1 at an anchor, Gaussian falloff)."""
    r = flow.shape[-1]
    now = [a for a, _ in anchors]
    want = torch.tensor(
        [[sx - x, sy - y] for (x, y), (sx, sy) in anchors], dtype=torch.float32, device=flow.device
    ).t()  # [2, P]
    residual = want - _sample(flow, now)  # [2, P]
    pts = torch.tensor(now, dtype=torch.float32, device=flow.device)  # [P, 2]
    kernel = torch.exp(-0.5 * torch.cdist(pts, pts).square() / sigma**2)
    kernel = kernel + 1e-3 * torch.eye(len(now), device=flow.device)
    coef = torch.linalg.solve(kernel, residual.t())  # [P, 2]
    g = torch.arange(r, dtype=torch.float32, device=flow.device)
    dx = g[None, None, :] - pts[:, 0, None, None]
    dy = g[None, :, None] - pts[:, 1, None, None]
    bumps = torch.exp(-0.5 * (dx.square() + dy.square()) / sigma**2)  # [P, R, R]
    correction = torch.einsum("prc,pk->krc", bumps, coef)
    return flow + correction, bumps.amax(dim=0)
