"""DragGAN drag engine: motion supervision + point tracking on a StyleGAN2 w+ latent.

Pan et al., "Drag Your GAN" (SIGGRAPH 2023). `DragSession.step` is the algorithm, top to bottom:

1. synthesis: the features F of one block (the 6th, 128 px, for models of 128 px and more) from
   the current w+; F is "bilinearly resized to the image size";
2. point tracking (`track_handles`): each handle moves to the pixel in the r2 square around it
   whose feature is the nearest (L2) to the handle's *initial* feature;
3. stop check: done when every handle is within the stop distance of its target;
4. motion supervision (`motion_loss`): for each handle q still more than 1 px from its target, L1
   between the detached features at the pixels of the r1 disc around q and the features sampled
   bilinearly at those pixels + d (d the unit vector towards the target); plus lambda * L1
   between F and the initial F0 outside the movable region when a mask is given;
5. one Adam step on the first `num_optimised_ws` vectors of w+.

Tracking (2) measures the update of the step before, on this step's forward, as the official
code does, so one forward serves both. Each speed trick is one named call into its own module,
none changes the maths (tests/unit/test_drag_equivalence.py):
- `partial_synthesis.FeatureSynthesis`: synthesis stops after the feature block, only the window
  of the feature map a step can read is computed, and no generator parameter gets a gradient;
- `feature_grid.FeatureGrid`: pixels of the resized map gathered from that window through
  precomputed bilinear tables (exactly what ``F.interpolate`` computes), never the whole map
  except for the mask term;
- `supervision.shifted_disc_l1`: one handle's supervision term from one small gathered window,
  the disc offsets (`supervision.disc_offsets`) built once;
- `subpixel.refine_subpixel`: photo edits refine tracked handles to 1/8 pixel.
The checks on the inputs live in `drag_inputs`.

Layouts: features ``[1, C, r, r]``; images ``[1, C, H, W]`` in [-1, 1]; w+ ``[1, num_ws, w_dim]``;
points are ``(x, y)`` pixels of the model resolution, x = column, y = row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch

from gimp_draggan.draggan.adam import Adam
from gimp_draggan.draggan.drag_inputs import (
    as_points,
    check_feature_res,
    check_latent,
    check_pairs,
    fixed_region,
)
from gimp_draggan.draggan.feature_grid import FeatureGrid
from gimp_draggan.draggan.networks import Generator, to_uint8
from gimp_draggan.draggan.partial_synthesis import FeatureSynthesis, Window
from gimp_draggan.draggan.subpixel import refine_subpixel
from gimp_draggan.draggan.supervision import Disc, disc_offsets, shifted_disc_l1
from gimp_draggan_plugin.protocol import Point

REFERENCE_RES = 512  # The paper's radii and stop distance are given for 512 px images.
OFFICIAL_FEATURE_RES = 128  # The official code's feature_idx=5: output of the 6th block.
SMALL_MODEL_FEATURE_FRACTION = 2  # Below 128 px: the block at half the image size (docs/ENGINE.md).


@dataclass(frozen=True)
class DragParams:
    """Drag settings. Radii and stop distance are in pixels of a 512 px image (the paper's)."""

    r1: float = 3.0  # Motion-supervision disc radius.
    r2: float = 12.0  # Tracking half-window.
    stop_distance: float = 2.0  # Done when every handle is this close...
    stop_floor: float = 2.0  # ...but never closer than this many pixels (official: 2).
    mask_lambda: float = 20.0  # Weight of the fixed-region term (official GUI).
    lr: float = 2e-3  # Adam learning rate on the latent (paper; GUI uses 1e-3).
    max_steps: int = 200  # Optimiser steps per `run` unless the caller says otherwise.
    num_optimised_ws: int = 6  # Only the first N vectors of w+ move.
    feature_res: int | None = None  # Feature block resolution; None = `default_feature_res`.
    subpixel: bool = False  # Track and supervise at sub-pixel precision (photo edits).
    stop_pixels: float | None = None  # Stop distance in model pixels; None = the paper's rule.

    def validate(self) -> None:
        for name in ("r1", "r2", "stop_distance", "stop_floor", "lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"DragParams.{name} must be a positive number, got {value}")
        if not (math.isfinite(self.mask_lambda) and self.mask_lambda >= 0):
            raise ValueError(f"DragParams.mask_lambda must be >= 0, got {self.mask_lambda}")
        if self.max_steps < 0:
            raise ValueError(f"DragParams.max_steps must be >= 0, got {self.max_steps}")
        if self.stop_pixels is not None and not (
            math.isfinite(self.stop_pixels) and self.stop_pixels > 0
        ):
            raise ValueError(f"DragParams.stop_pixels must be > 0, got {self.stop_pixels}")
        if self.num_optimised_ws < 1:
            raise ValueError(
                f"DragParams.num_optimised_ws must be >= 1, got {self.num_optimised_ws}"
            )


@dataclass(frozen=True)
class PixelRadii:
    """The radii in pixels of one resolution."""

    r1: int  # Disc: pixels strictly closer than r1 to the handle.
    r2: int  # Tracking window: the (2*r2+1)^2 square, clipped to the image.
    stop: float  # Stop distance.


def pixel_radii(params: DragParams, resolution: int) -> PixelRadii:
    """Scale the 512-px radii as the official code does: r = round(r * H / 512).

    Python's round (half to even), as the official code. Below ~170 px that rounds r1 to 0 or 1
    (an empty or one-pixel disc), so r1 and r2 are at least 2 (a deliberate difference).
    """
    scale = resolution / REFERENCE_RES
    stop = params.stop_pixels
    return PixelRadii(
        r1=max(round(params.r1 * scale), 2),
        r2=max(round(params.r2 * scale), 2),
        stop=max(params.stop_distance * scale, params.stop_floor) if stop is None else stop,
    )


def default_feature_res(img_resolution: int) -> int:
    """The official 6th block (128 px) when the model has it, else half the image size."""
    if img_resolution >= OFFICIAL_FEATURE_RES:
        return OFFICIAL_FEATURE_RES
    return max(img_resolution // SMALL_MODEL_FEATURE_FRACTION, 4)


@dataclass(frozen=True)
class StepReport:
    step: int  # Optimiser steps done by the session so far.
    points: list[Point]  # Handles as tracked on the features this step used.
    distances: list[float]  # Handle-target distances, pixels.
    loss: float | None  # None when the step found every handle done.
    optimised: bool  # False: converged, no optimiser step taken.
    step_seconds: float
    elapsed: float  # Seconds since this `run` began.
    preview: torch.Tensor | None = None  # uint8 [H, W, C] on the CPU, when due.
    preview_feature: torch.Tensor | None = None  # [1, C, f, f] features of the preview.


@dataclass(frozen=True)
class DragResult:
    ws: torch.Tensor  # Final w+ [1, num_ws, w_dim], detached, on the CPU.
    image: torch.Tensor  # Final image [1, C, H, W] in [-1, 1], on the CPU.
    points: list[Point]  # Final handles, tracked on the final image's features.
    distances: list[float]
    steps: int  # Optimiser steps done by the session in total.
    converged: bool  # Every handle within the stop distance.
    cancelled: bool  # `should_stop` ended the run.
    reports: list[StepReport] = field(default_factory=list)  # This run's steps.
    start_points: list[Point] = field(default_factory=list)  # Handles at the start.
    start_feature: torch.Tensor | None = None  # [1, C, f, f] features of the start latent.
    feature: torch.Tensor | None = None  # [1, C, f, f] features of the final latent.


# ----------------------------------------------------------------------------------------------
# The two halves of the paper's step, on the resized feature map F read through a `FeatureGrid`.


def track_handles(
    grid: FeatureGrid,
    feat: torch.Tensor,  # [1, C, h, w] feature map (or window at origin), detached.
    refs: torch.Tensor,  # [P, C] initial feature of each handle.
    handles: list[tuple[int, int]],
    radius: int,
    origin: tuple[int, int] = (0, 0),
) -> list[tuple[int, int]]:
    """Move each handle to its reference's nearest neighbour (L2) in the clipped square window.

    Ties go to the first pixel in row-major order, as ``argmin`` (and the official code) does.
    """
    last = grid.image_res - 1
    moved = []
    for (x, y), ref in zip(handles, refs, strict=True):
        x0, x1 = max(x - radius, 0), min(x + radius, last)
        y0, y1 = max(y - radius, 0), min(y + radius, last)
        win = grid.window(feat, x0, x1, y0, y1, origin)  # [C, ny, nx]
        dist = (win - ref.reshape(-1, 1, 1)).square().sum(dim=0)  # [ny, nx]
        idx = int(dist.reshape(-1).argmin())
        nx = x1 - x0 + 1
        moved.append((x0 + idx % nx, y0 + idx // nx))
    return moved


def motion_loss(
    grid: FeatureGrid,
    feat: torch.Tensor,  # [1, C, h, w] with a graph to the latent.
    handles: list[tuple[int, int]],
    targets: list[Point],
    disc: Disc,
    origin: tuple[int, int] = (0, 0),
    points: Sequence[Point] | None = None,
    min_distance: float = 1.0,
) -> torch.Tensor:
    """Sum over handles more than ``min_distance`` from their target of mean
    |F(p + d) - sg(F(p))| over channels and the disc pixels p inside the image. The disc lies
    around the pixel ``handles``; d points from the handle (its sub-pixel ``points`` when given)
    towards the target, one pixel long, or as long as what is left when that is less."""
    loss = feat.new_zeros(())
    exact = handles if points is None else points
    for handle, (hx, hy), (tx, ty) in zip(handles, exact, targets, strict=True):
        dist = math.hypot(tx - hx, ty - hy)
        if dist <= min_distance:
            continue
        d = ((tx - hx) / dist, (ty - hy) / dist) if dist >= 1 else (tx - hx, ty - hy)
        loss = loss + shifted_disc_l1(grid, feat, handle, d, disc, origin)
    return loss


# ----------------------------------------------------------------------------------------------
# The session.


class DragSession:
    """A drag in progress: latent, handles, optimiser state. `run` may be called again after a
    cancel or `max_steps`: it goes on from where it stopped."""

    def __init__(
        self,
        G: Generator,
        ws: torch.Tensor,  # [1, num_ws, w_dim] start latent.
        handles: Sequence[Point] | torch.Tensor,  # [P] of (x, y).
        targets: Sequence[Point] | torch.Tensor,  # [P] of (x, y).
        mask: torch.Tensor | None = None,  # [H, W], 1 = may move; None = all.
        params: DragParams | None = None,
    ) -> None:
        params = params or DragParams()
        params.validate()
        synth = G.synthesis
        res = synth.img_resolution
        check_latent(ws, synth, params.num_optimised_ws)
        feature_res = params.feature_res or default_feature_res(res)
        check_feature_res(feature_res, synth)
        hs = as_points(handles, "handles", res)
        ts = as_points(targets, "targets", res)
        rounded = [(round(x), round(y)) for x, y in hs]
        starts = hs if params.subpixel else [(float(x), float(y)) for x, y in rounded]
        check_pairs(starts, ts)

        self.G = G
        self.params = params
        self.radii = pixel_radii(params, res)
        self.resolution = res
        self.feature_res = feature_res
        self.device = next(G.parameters()).device
        self.fixed = None if mask is None else fixed_region(mask, res, self.device)
        n = params.num_optimised_ws
        ws = ws.detach().to(device=self.device, dtype=torch.float32)
        self.w_opt = ws[:, :n].clone().requires_grad_(True)
        self.ws_fixed = ws[:, n:].clone()
        self.optimizer = Adam([self.w_opt], lr=params.lr)
        self.handles: list[tuple[int, int]] = rounded  # The pixels windows and discs centre on.
        self.points: list[Point] = list(starts)  # Where the handles are (sub-pixel).
        self.start_points: list[Point] = list(starts)
        self.targets: list[Point] = ts
        self.steps = 0
        self._tracked = True  # Handles belong to the current latent.
        self.local = True  # Synthesise only the window a step reads (False: everything).

        # The speed tricks, built once (see the module docstring).
        self.synthesis = FeatureSynthesis(G, self.ws_fixed, feature_res)
        self.grid = FeatureGrid(feature_res, res, self.device)
        self.disc = disc_offsets(self.radii.r1, self.device)
        with torch.no_grad():
            f0 = self.synthesis(self.w_opt)
            self.start_feature = f0.detach()
            self.refs = self.grid.at_points(f0, starts)  # [P, C] each handle's initial feature
            self.f0_fixed = None  # F0 outside the movable region, when the mask term applies.
            if self.fixed is not None and params.mask_lambda > 0:
                self.f0_fixed = self.grid.full(f0) * self.fixed

    def step(self, elapsed_from: float | None = None) -> StepReport:
        """One iteration of DragGAN (the module docstring's 1-5), top to bottom."""
        t0 = time.perf_counter()
        with torch.enable_grad():
            # 1. Synthesis: F of the current latent, with a graph to the optimised w.
            feat, origin = self._synthesise()
            # 2. Point tracking of the last update: each handle to the nearest neighbour of its
            # initial feature in the r2 square around it.
            if not self._tracked:
                self._track(feat.detach(), origin)
            points = list(self.points)
            distances = self.distances()
            loss_value = None
            # 3. Stop check.
            if not self.converged():
                # 4. Motion supervision (+ the mask term).
                loss = self.loss(feat, origin)
                # 5. One optimiser step on the optimised vectors of w+.
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                loss_value = float(loss.detach())
                self.steps += 1
                self._tracked = False
        t1 = time.perf_counter()
        return StepReport(
            step=self.steps,
            points=points,
            distances=distances,
            loss=loss_value,
            optimised=loss_value is not None,
            step_seconds=t1 - t0,
            elapsed=t1 - (t0 if elapsed_from is None else elapsed_from),
        )

    def _synthesise(self) -> tuple[torch.Tensor, tuple[int, int]]:
        """F of the current latent ``[1, C, h, w]``: the window this step can read and its
        top-left feature pixel, or the whole map at (0, 0)."""
        window = self.feature_window()
        origin = (0, 0) if window is None else (window[0], window[2])
        return self.synthesis(self.w_opt, window), origin

    def feature_window(self) -> Window | None:
        """The part of the feature map this step can read: tracking windows around the handles,
        then discs and their shifted samples around wherever tracking moves them. None (all)
        when the mask term needs the whole map or ``local`` is off."""
        if self.f0_fixed is not None or not self.local:
            return None
        m = self.radii.r2 + self.radii.r1 + 2
        last = self.resolution - 1
        xs = [x for x, _ in self.handles]
        ys = [y for _, y in self.handles]
        x0, x1 = self.grid.span(max(min(xs) - m, 0), min(max(xs) + m, last))
        y0, y1 = self.grid.span(max(min(ys) - m, 0), min(max(ys) + m, last))
        return x0, x1, y0, y1

    def _track(self, feat: torch.Tensor, origin: tuple[int, int] = (0, 0)) -> None:
        """Move the handles to the current latent's features (``feat``, detached)."""
        self.handles = track_handles(
            self.grid, feat, self.refs, self.handles, self.radii.r2, origin
        )
        if self.params.subpixel:
            self.points = refine_subpixel(self.grid, feat, self.refs, self.handles, origin)
            self.handles = [(round(x), round(y)) for x, y in self.points]
        else:
            self.points = [(float(x), float(y)) for x, y in self.handles]
        self._tracked = True

    def distances(self) -> list[float]:
        pairs = zip(self.points, self.targets, strict=True)
        return [math.hypot(tx - x, ty - y) for (x, y), (tx, ty) in pairs]

    def converged(self) -> bool:
        return all(d <= self.radii.stop for d in self.distances())

    def loss(self, feat: torch.Tensor, origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """Motion supervision + mask term at the current handles, on features ``[1, C, h, w]``:
        the whole map, or (no mask term) the window whose top-left pixel is ``origin``. Photo
        edits (``subpixel``) shift from the sub-pixel handles and pull every handle farther than
        half the stop distance."""
        subpixel = self.params.subpixel
        loss = motion_loss(
            self.grid,
            feat,
            self.handles,
            self.targets,
            self.disc,
            origin,
            points=self.points if subpixel else None,
            min_distance=self.radii.stop / 2 if subpixel else 1.0,
        )
        if self.f0_fixed is not None and self.fixed is not None:
            # Features outside the movable region held at their start values, on the whole map.
            fixed = self.grid.full(feat) * self.fixed
            loss = loss + self.params.mask_lambda * (fixed - self.f0_fixed).abs().mean()
        return loss

    @property
    def ws(self) -> torch.Tensor:
        """The current w+ ``[1, num_ws, w_dim]`` (detached)."""
        return torch.cat([self.w_opt.detach(), self.ws_fixed], dim=1)

    @torch.no_grad()
    def render(self, track: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The image ``[1, C, H, W]`` and features ``[1, C, f, f]`` of the current latent; with
        ``track``, the handles move to it (otherwise the next step tracks them)."""
        out = self.G.synthesis.run(self.ws, noise_mode="const", feature_res=self.feature_res)
        assert out.img is not None and out.feature is not None
        if track and not self._tracked:
            self._track(out.feature)
        return out.img, out.feature

    def run(
        self,
        max_steps: int | None = None,  # None = params.max_steps.
        on_step: Callable[[StepReport], None] | None = None,
        should_stop: Callable[[], bool] | None = None,  # Checked before every step.
        preview_every: int = 0,  # 0 = no previews.
    ) -> DragResult:
        """Step until every handle is done, ``max_steps`` optimiser steps, or ``should_stop()``."""
        limit = self.params.max_steps if max_steps is None else max_steps
        if limit < 0 or preview_every < 0:
            raise ValueError(f"max_steps ({limit}) and preview_every ({preview_every}) must be >=0")
        start = time.perf_counter()
        reports: list[StepReport] = []
        cancelled = False
        first = self.steps
        while self.steps - first < limit:
            if should_stop is not None and should_stop():
                cancelled = True
                break
            report = self.step(elapsed_from=start)
            if report.optimised and preview_every and report.step % preview_every == 0:
                img, feat = self.render(track=False)
                report = replace(report, preview=to_uint8(img)[0].cpu(), preview_feature=feat)
            reports.append(report)
            if on_step is not None:
                on_step(report)
            if not report.optimised:
                break
        image, feature = self.render()
        return DragResult(
            ws=self.ws.cpu(),
            image=image.cpu(),
            points=list(self.points),
            distances=self.distances(),
            steps=self.steps,
            converged=self.converged(),
            cancelled=cancelled,
            reports=reports,
            start_points=list(self.start_points),
            start_feature=self.start_feature.cpu(),
            feature=feature.cpu(),
        )
