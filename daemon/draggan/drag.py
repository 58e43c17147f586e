"""DragGAN drag engine: motion supervision + point tracking on a StyleGAN2 w+ latent.

Pan et al., "Drag Your GAN" (SIGGRAPH 2023). One step of a `DragSession`:

1. synthesise the features F of one block (the 6th, 128 px, for models of 128 px and more) from
   the current w+, stopping right after that block; F is "bilinearly resized to the image size";
2. point tracking: each handle moves to the pixel in the r2 square around it whose feature is the
   nearest (L2) to the handle's *initial* feature;
3. stop if every handle is within the stop distance of its target;
4. motion supervision: for each handle q still more than 1 px from its target, L1 between the
   detached features at the pixels of the r1 disc around q and the features sampled bilinearly at
   those pixels + d (d the unit vector towards the target); plus lambda * L1 between F and the
   initial F0 outside the movable region when a mask is given; one Adam step on the first
   `num_optimised_ws` vectors of w+.

Tracking (2) uses the forward pass of the step that follows the update it measures, as the
official code does, so one forward serves both. Speed, without changing the maths:
- the generator's parameters are read through detached views: no parameter gradients, no flags
  changed on the caller's generator, no graph kept beyond a step;
- synthesis stops after the feature block and never runs a ToRGB layer;
- without a mask term only the window of the feature map the step can read is synthesised, each
  layer computing exactly the part of its output that window depends on;
- layers fed by the fixed part of w+ use weights modulated once at the start; the others scale
  activations instead of weights, so no weight gradient is ever computed;
- the resized feature map is never materialised for supervision or tracking: the few resized
  pixels needed are gathered from the window with precomputed bilinear tables (exactly what
  `F.interpolate` computes); only the mask term resizes the whole map.

Layouts: features ``[1, C, r, r]``; images ``[1, C, H, W]`` in [-1, 1]; w+ ``[1, num_ws, w_dim]``;
points are ``(x, y)`` pixels of the model resolution, x = column, y = row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from gimp_draggan.draggan.adam import Adam
from gimp_draggan.draggan.networks import (
    LRELU_GAIN,
    Generator,
    SynthesisLayer,
    to_uint8,
    upfirdn2d,
)

REFERENCE_RES = 512  # The paper's radii and stop distance are given for 512 px images.
OFFICIAL_FEATURE_RES = 128  # The official code's feature_idx=5: output of the 6th block.
SMALL_MODEL_FEATURE_FRACTION = 2  # Below 128 px: the block at half the image size (docs/ENGINE.md).

Point = tuple[float, float]


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
# Resized-feature sampling without materialising the resized map.


class FeatureGrid:
    """Reads pixels of ``F.interpolate(feat, (H, W), mode="bilinear", align_corners=False)``.

    Per output row/column: the two source indices and the weight of the second, exactly as
    PyTorch computes them, so any set of resized pixels is a gather of 4 feature pixels.
    ``feat`` may be a window of the feature map whose top-left pixel is ``origin`` (x, y).
    """

    def __init__(self, feature_res: int, image_res: int, device: torch.device) -> None:
        self.feature_res = feature_res
        self.image_res = image_res
        scale = feature_res / image_res
        src = ((torch.arange(image_res, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(min=0)
        lo = src.floor().long()
        hi = (lo + 1).clamp(max=feature_res - 1)
        self.lo_list: list[int] = lo.tolist()
        self.hi_list: list[int] = hi.tolist()
        self.lo = lo.to(device)
        self.hi = hi.to(device)
        self.lam = (src - lo).to(torch.float32).to(device)

    def window(
        self,
        feat: torch.Tensor,
        x0: int,
        x1: int,
        y0: int,
        y1: int,
        origin: tuple[int, int] = (0, 0),
    ) -> torch.Tensor:
        """Resized pixels of rows y0..y1 and columns x0..x1 (inclusive): ``[C, ny, nx]``."""
        dev = feat.device
        xs = torch.arange(x0, x1 + 1, device=dev)
        ys = torch.arange(y0, y1 + 1, device=dev)
        ox, oy = origin
        lam = self.lam[xs]
        cols = (1 - lam) * feat[..., self.lo[xs] - ox] + lam * feat[..., self.hi[xs] - ox]
        lam = self.lam[ys].reshape(1, 1, -1, 1)
        rows = (1 - lam) * cols[:, :, self.lo[ys] - oy] + lam * cols[:, :, self.hi[ys] - oy]
        return rows[0]

    def pixels(self, feat: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Resized pixels at integer ``(xs, ys)`` (long ``[K]``) of a whole map: ``[C, K]``."""
        f = feat[0]
        wx = self.lam[xs]
        wy = self.lam[ys]
        lx, hx, ly, hy = self.lo[xs], self.hi[xs], self.lo[ys], self.hi[ys]
        top = (1 - wx) * f[:, ly, lx] + wx * f[:, ly, hx]
        bottom = (1 - wx) * f[:, hy, lx] + wx * f[:, hy, hx]
        return (1 - wy) * top + wy * bottom

    def span(self, a: int, b: int) -> tuple[int, int]:
        """Feature rows (or columns) ``[lo, hi)`` that image rows ``a..b`` (inclusive) read."""
        return self.lo_list[a], self.hi_list[b] + 1

    def full(self, feat: torch.Tensor) -> torch.Tensor:
        """The whole resized map ``[1, C, H, W]``."""
        size = (self.image_res, self.image_res)
        return F.interpolate(feat, size=size, mode="bilinear", align_corners=False)


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


SUBPIXEL_STEPS = 8  # Sub-pixel tracking resolves 1/8 pixel.


def refine_subpixel(
    grid: FeatureGrid,
    feat: torch.Tensor,  # [1, C, h, w] feature map (or window at origin), detached.
    refs: torch.Tensor,  # [P, C] initial feature of each handle.
    found: list[tuple[int, int]],
    origin: tuple[int, int] = (0, 0),
) -> list[Point]:
    """Each nearest-neighbour pixel refined to 1/`SUBPIXEL_STEPS` pixel: the resized map is
    sampled bilinearly on that grid within one pixel of it, and the closest sample (L2) wins."""
    last = grid.image_res - 1
    n = SUBPIXEL_STEPS
    offsets = torch.arange(-n, n + 1, device=feat.device, dtype=feat.dtype) / n
    out = []
    for (x, y), ref in zip(found, refs, strict=True):
        x0, x1 = max(x - 1, 0), min(x + 1, last)
        y0, y1 = max(y - 1, 0), min(y + 1, last)
        win = grid.window(feat, x0, x1, y0, y1, origin)  # [C, ny, nx]
        sx = (x + offsets).clamp(x0, x1) - x0
        sy = (y + offsets).clamp(y0, y1) - y0
        gx = sx / max(x1 - x0, 1) * 2 - 1 if x1 > x0 else torch.zeros_like(sx)
        gy = sy / max(y1 - y0, 1) * 2 - 1 if y1 > y0 else torch.zeros_like(sy)
        gyy, gxx = torch.meshgrid(gy, gx, indexing="ij")
        samples = F.grid_sample(
            win[None],
            torch.stack([gxx, gyy], dim=-1)[None],
            mode="bilinear",
            align_corners=True,
        )[0]  # [C, 2n+1, 2n+1]
        dist = (samples - ref.reshape(-1, 1, 1)).square().sum(dim=0)
        idx = int(dist.reshape(-1).argmin())
        k = 2 * n + 1
        out.append((float(sx[idx % k] + x0), float(sy[idx // k] + y0)))
    return out


@dataclass(frozen=True)
class Disc:
    """Integer offsets ``(dx, dy)`` strictly closer than ``radius`` to the origin."""

    dx: torch.Tensor
    dy: torch.Tensor
    radius: int


def disc_offsets(radius: int, device: torch.device) -> Disc:
    r = torch.arange(-radius, radius + 1, device=device)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    keep = dx.square() + dy.square() < radius * radius
    return Disc(dx=dx[keep], dy=dy[keep], radius=radius)


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
    |F(p + d) - sg(F(p))| over channels and the disc pixels p inside the image; F(p + d) is
    bilinear, clamped to the border (``grid_sample(align_corners=True, padding_mode="border")``
    on the resized map). The disc lies around the pixel ``handles``; d points from the handle
    (its sub-pixel ``points`` when given) towards the target, one pixel long, or as long as
    what is left when that is less."""
    last = grid.image_res - 1
    reach = disc.radius  # farthest disc offset (radius - 1) plus the unit shift
    loss = feat.new_zeros(())
    exact = handles if points is None else points
    for (x, y), (hx, hy), (tx, ty) in zip(handles, exact, targets, strict=True):
        dist = math.hypot(tx - hx, ty - hy)
        if dist <= min_distance:
            continue
        ux, uy = ((tx - hx) / dist, (ty - hy) / dist) if dist >= 1 else (tx - hx, ty - hy)
        # The resized pixels the disc and its shifted samples touch, as one dense window.
        wx0, wx1 = max(x - reach, 0), min(x + reach + 1, last)
        wy0, wy1 = max(y - reach, 0), min(y + reach + 1, last)
        win = grid.window(feat, wx0, wx1, wy0, wy1, origin)  # [C, ny, nx]
        px, py = disc.dx + x, disc.dy + y
        inside = (px >= 0) & (px <= last) & (py >= 0) & (py <= last)
        px, py = px[inside], py[inside]
        src = win[:, py - wy0, px - wx0].detach()
        sx = (px.to(feat.dtype) + ux).clamp(0, last)
        sy = (py.to(feat.dtype) + uy).clamp(0, last)
        x0 = sx.floor().long().clamp(max=max(last - 1, 0))
        y0 = sy.floor().long().clamp(max=max(last - 1, 0))
        ax, ay = sx - x0, sy - y0
        x0, y0 = x0 - wx0, y0 - wy0
        x1, y1 = x0 + 1, y0 + 1  # inside the window by construction of ``reach``
        moved = (1 - ay) * ((1 - ax) * win[:, y0, x0] + ax * win[:, y0, x1]) + ay * (
            (1 - ax) * win[:, y1, x0] + ax * win[:, y1, x1]
        )
        loss = loss + (moved - src).abs().mean()
    return loss


# ----------------------------------------------------------------------------------------------
# Synthesis up to the feature block, with the fixed part of w+ folded into the weights.


Window = tuple[int, int, int, int]  # (x0, x1, y0, y1), half-open, in one layer's pixels.


def _crop_pad(x: torch.Tensor, x0: int, x1: int, y0: int, y1: int) -> torch.Tensor:
    """``x[..., y0:y1, x0:x1]`` where indices outside ``x`` read as zeros."""
    h, w = x.shape[-2:]
    core = x[..., max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)]
    pad = [max(-x0, 0), max(x1 - w, 0), max(-y0, 0), max(y1 - h, 0)]
    return F.pad(core, pad) if any(pad) else core


class _Layer:
    """One SynthesisLayer read through detached tensors, computable on a window of its output.

    Same maths as ``SynthesisLayer.forward`` with constant noise: modulated (and demodulated)
    3x3 weight; either a padded conv, or a stride-2 transposed conv followed by the 4x4 FIR
    filter; + noise, + bias, leaky ReLU, clamp. On a window, every sum sees exactly the terms
    the full layer would (zeros only where the full layer pads), so the values are the same.
    """

    def __init__(self, layer: SynthesisLayer, w_index: int, fixed_w: torch.Tensor | None) -> None:
        self.w_index = w_index
        self.up = layer.up
        self.res = layer.resolution
        self.clamp = layer.conv_clamp
        self.filter = layer.resample_filter
        self.kernel = layer.weight.shape[-1]
        fw = self.filter.shape[-1]
        self.fir_taps = fw
        self.fir_pad0 = layer.padding + (fw + 1) // 2 - (self.kernel - 1)  # as modulated_conv2d
        self.bias = layer.bias.detach().reshape(1, -1, 1, 1)
        self.noise = None
        if layer.use_noise:
            self.noise = (layer.noise_const * layer.noise_strength).detach()
        aff = layer.affine
        self.affine_w = (aff.weight.detach() * aff.weight_gain).t()
        self.affine_b = aff.bias.detach()
        if aff.bias_gain != 1:
            self.affine_b = self.affine_b * aff.bias_gain
        self.weight = layer.weight.detach()
        self.weight_sq = self.weight.square().sum(dim=[2, 3])  # [O, I]
        self.fixed_weight = None
        if fixed_w is not None:
            with torch.no_grad():
                styles, dcoefs = self._styles(fixed_w)
                self.fixed_weight = self.weight * styles.reshape(1, -1, 1, 1) * dcoefs

    def _styles(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input scales ``[1, I]`` and demodulation ``[O, 1, 1, 1]`` for ``w [1, w_dim]``:
        sum_ik (W_oik s_i)^2 = sum_i s_i^2 sum_k W_oik^2, so no modulated weight is needed."""
        styles = torch.addmm(self.affine_b.unsqueeze(0), w, self.affine_w)
        dcoefs = (self.weight_sq @ styles.square().t() + 1e-8).rsqrt()
        return styles, dcoefs.reshape(-1, 1, 1, 1)

    def in_span(self, a: int, b: int) -> tuple[int, int]:
        """Input rows (or columns) ``[i0, i1)`` that output rows ``[a, b)`` depend on."""
        r_in = self.res // self.up
        if self.up == 1:
            pad = self.kernel // 2
            return max(a - pad, 0), min(b + pad, r_in)
        t0, t1 = a - self.fir_pad0, b + self.fir_taps - 1 - self.fir_pad0
        return max(-((self.kernel - 1 - t0) // 2), 0), min((t1 - 1) // 2 + 1, r_in)

    def __call__(
        self, x: torch.Tensor, w_opt: torch.Tensor, inp: Window, out: Window
    ) -> torch.Tensor:
        """``x`` is the input on window ``inp``; returns the output on window ``out``.

        Optimised layers scale the input by the styles and the output by the demodulation
        (StyleGAN2's non-fused form): the weight stays constant, so the backward pass needs no
        weight gradient."""
        weight = self.fixed_weight
        dcoefs = None
        if weight is None:
            styles, dcoefs = self._styles(w_opt[:, self.w_index])
            weight = self.weight
            x = x * styles.reshape(1, -1, 1, 1)
        ix0, _, iy0, _ = inp
        ox0, ox1, oy0, oy1 = out
        if self.up == 1:
            pad = self.kernel // 2
            x = _crop_pad(x, ox0 - pad - ix0, ox1 + pad - ix0, oy0 - pad - iy0, oy1 + pad - iy0)
            x = F.conv2d(x, weight)
        else:
            t = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)  # rows from 2*iy0
            p0, extra = self.fir_pad0, self.fir_taps - 1
            t = _crop_pad(
                t,
                ox0 - p0 - 2 * ix0,
                ox1 + extra - p0 - 2 * ix0,
                oy0 - p0 - 2 * iy0,
                oy1 + extra - p0 - 2 * iy0,
            )
            x = upfirdn2d(t, self.filter, gain=4.0)
        if dcoefs is not None:
            x = x * dcoefs.reshape(1, -1, 1, 1)
        if self.noise is not None:
            x = x + self.noise[oy0:oy1, ox0:ox1]
        x = F.leaky_relu(x + self.bias, 0.2) * LRELU_GAIN
        if self.clamp is not None:
            x = x.clamp(-self.clamp, self.clamp)
        return x


class FeatureSynthesis:
    """``w_opt [1, N, w_dim]`` -> output of block ``feature_res`` ``[1, C, r, r]``, same maths as
    ``G.synthesis.run(cat(w_opt, ws_fixed), feature_res=...)`` without ToRGB or later blocks.

    Given a window of the feature map, every layer computes only what that window depends on,
    and the result is that window ``[1, C, y1 - y0, x1 - x0]``.
    """

    def __init__(self, G: Generator, ws_fixed: torch.Tensor, feature_res: int) -> None:
        synth = G.synthesis
        n_opt = synth.num_ws - ws_fixed.shape[1]
        self.feature_res = feature_res
        self.const = synth.block(4).const.detach().unsqueeze(0)
        self.layers: list[_Layer] = []
        idx = 0
        for res in synth.block_resolutions:
            block = synth.block(res)
            convs = [block.conv1] if block.in_channels == 0 else [block.conv0, block.conv1]
            for layer in convs:
                fixed = ws_fixed[:, idx - n_opt] if idx >= n_opt else None
                self.layers.append(_Layer(layer, idx, fixed))
                idx += 1
            if res == feature_res:
                break

    def plan(self, window: Window | None) -> list[Window]:
        """The output window of every layer (last = ``window``), and first the const's."""
        r = self.feature_res
        out = window or (0, r, 0, r)
        plan = [out]
        for layer in reversed(self.layers):
            x0, x1 = layer.in_span(out[0], out[1])
            y0, y1 = layer.in_span(out[2], out[3])
            out = (x0, x1, y0, y1)
            plan.append(out)
        return plan[::-1]

    def __call__(self, w_opt: torch.Tensor, window: Window | None = None) -> torch.Tensor:
        plan = self.plan(window)
        x0, x1, y0, y1 = plan[0]
        x = self.const[..., y0:y1, x0:x1]
        for layer, inp, out in zip(self.layers, plan[:-1], plan[1:], strict=True):
            x = layer(x, w_opt, inp, out)
        return x


# ----------------------------------------------------------------------------------------------
# Validation.


def _as_points(points: Sequence[Point] | torch.Tensor, name: str, res: int) -> list[Point]:
    t = torch.as_tensor(points, dtype=torch.float64).cpu()
    if t.numel() == 0:
        raise ValueError("no handle/target pairs: give at least one")
    if t.ndim != 2 or t.shape[1] != 2:
        raise ValueError(f"{name}: expected a list of (x, y) points, got shape {list(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: points must be finite numbers (found NaN or inf): {t.tolist()}")
    for i, (x, y) in enumerate(t.tolist()):
        if not (0 <= x <= res - 1 and 0 <= y <= res - 1):
            raise ValueError(
                f"{name}[{i}] = ({x:g}, {y:g}) is outside the {res}x{res} image; "
                f"x and y must be in [0, {res - 1}]"
            )
    return [(float(x), float(y)) for x, y in t.tolist()]


def _as_mask(mask: torch.Tensor, res: int, device: torch.device) -> torch.Tensor | None:
    """[H, W] in [0, 1], 1 = may move -> the fixed-region weight [1, 1, H, W], None if all 1."""
    mask = torch.as_tensor(mask)
    if tuple(mask.shape) != (res, res):
        raise ValueError(
            f"mask: expected shape [{res}, {res}] (the model resolution, [H, W]), "
            f"got {list(mask.shape)}"
        )
    mask = mask.to(device=device, dtype=torch.float32)
    if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise ValueError("mask: values must be finite and in [0, 1] (1 = may move)")
    if mask.max() == 0:
        raise ValueError("mask: no pixel may move (all 0); mark the movable region with 1")
    if mask.min() == 1:
        return None
    return (1 - mask).reshape(1, 1, res, res)


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
        if tuple(ws.shape) != (1, synth.num_ws, synth.w_dim):
            raise ValueError(
                f"ws: expected shape [1, {synth.num_ws}, {synth.w_dim}], got {list(ws.shape)}"
            )
        if not torch.isfinite(ws).all():
            raise ValueError("ws: latent contains NaN or inf")
        if params.num_optimised_ws > synth.num_ws:
            raise ValueError(
                f"DragParams.num_optimised_ws = {params.num_optimised_ws} exceeds the model's "
                f"num_ws = {synth.num_ws}"
            )
        feature_res = params.feature_res or default_feature_res(res)
        if feature_res not in synth.block_resolutions:
            raise ValueError(
                f"DragParams.feature_res = {feature_res} is not a block resolution of this "
                f"model: {synth.block_resolutions}"
            )
        hs = _as_points(handles, "handles", res)
        ts = _as_points(targets, "targets", res)
        if len(hs) != len(ts):
            raise ValueError(f"{len(hs)} handles but {len(ts)} targets: give them in pairs")
        rounded = [(round(x), round(y)) for x, y in hs]
        starts = hs if params.subpixel else [(float(x), float(y)) for x, y in rounded]
        for i, ((x, y), (tx, ty)) in enumerate(zip(starts, ts, strict=True)):
            if math.hypot(tx - x, ty - y) < 1e-6:
                raise ValueError(f"pair {i}: handle ({x:g}, {y:g}) is already on its target")

        self.G = G
        self.params = params
        self.radii = pixel_radii(params, res)
        self.resolution = res
        self.feature_res = feature_res
        self.device = next(G.parameters()).device
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

        self.synthesis = FeatureSynthesis(G, self.ws_fixed, feature_res)
        self.grid = FeatureGrid(feature_res, res, self.device)
        self.disc = disc_offsets(self.radii.r1, self.device)
        with torch.no_grad():
            f0 = self.synthesis(self.w_opt)
            self.start_feature = f0.detach()
            self.refs = self._features_at(f0, starts)  # [P, C]
            self.fixed = None if mask is None else _as_mask(mask, res, self.device)
            self.f0_fixed = None
            if self.fixed is not None and params.mask_lambda > 0:
                self.f0_fixed = self.grid.full(f0) * self.fixed

    @property
    def ws(self) -> torch.Tensor:
        """The current w+ ``[1, num_ws, w_dim]`` (detached)."""
        return torch.cat([self.w_opt.detach(), self.ws_fixed], dim=1)

    def _features_at(self, feat: torch.Tensor, points: Sequence[Point]) -> torch.Tensor:
        """Resized features of a whole map at (maybe fractional) points: ``[P, C]``."""
        rows = []
        for x, y in points:
            x0, y0 = math.floor(x), math.floor(y)
            x1, y1 = min(x0 + 1, self.resolution - 1), min(y0 + 1, self.resolution - 1)
            ax, ay = x - x0, y - y0
            xs = torch.tensor([x0, x1, x0, x1], device=self.device)
            ys = torch.tensor([y0, y0, y1, y1], device=self.device)
            corners = self.grid.pixels(feat, xs, ys)  # [C, 4]
            w = torch.tensor(
                [(1 - ax) * (1 - ay), ax * (1 - ay), (1 - ax) * ay, ax * ay],
                device=self.device,
                dtype=corners.dtype,
            )
            rows.append(corners @ w)
        return torch.stack(rows)

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

    def loss(self, feat: torch.Tensor, origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """Motion supervision + mask term at the current handles, on features ``[1, C, h, w]``:
        the whole map, or (no mask term) the window whose top-left pixel is ``origin``."""
        if self.params.subpixel:
            loss = motion_loss(
                self.grid,
                feat,
                self.handles,
                self.targets,
                self.disc,
                origin,
                points=self.points,
                min_distance=self.radii.stop / 2,
            )
        else:
            loss = motion_loss(self.grid, feat, self.handles, self.targets, self.disc, origin)
        if self.f0_fixed is not None and self.fixed is not None:
            fixed = self.grid.full(feat) * self.fixed
            loss = loss + self.params.mask_lambda * (fixed - self.f0_fixed).abs().mean()
        return loss

    def step(self, elapsed_from: float | None = None) -> StepReport:
        """Forward to the feature block, track, then (unless done) one optimiser step."""
        t0 = time.perf_counter()
        with torch.enable_grad():
            window = self.feature_window()
            origin = (0, 0) if window is None else (window[0], window[2])
            feat = self.synthesis(self.w_opt, window)
            if not self._tracked:
                self._track(feat.detach(), origin)
            points = list(self.points)
            distances = self.distances()
            loss_value = None
            if not self.converged():
                loss = self.loss(feat, origin)
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
