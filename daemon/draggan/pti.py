"""PTI inversion (Roich et al. 2021, "Pivotal Tuning for Latent-based Editing of Real Images").

Step 1, W projection: find a latent ``w`` (or ``w+``) with ``G(w)`` close to the target under a
perceptual distance (+ optional L2). Adam from the mean latent ``w_avg``, learning rate warmed up
linearly and decayed by a cosine, decaying latent noise for exploration, and — when the
generator's constant noise maps are optimised too — a regulariser that keeps them white (their
autocorrelation at every scale pushed to zero), as in StyleGAN2's projector.

Step 2, pivotal tuning: with that ``w`` fixed as the pivot, fine-tune a copy of the synthesis
network's weights so that ``G'(w)`` reproduces the target (L2 + perceptual), stopping early once the
perceptual distance is below a threshold (PTI: LPIPS 0.06). An optional locality regulariser keeps
``G'`` equal to ``G`` at latents away from the pivot, so edits still behave.

The caller's generator is never modified: everything happens on a deep copy, which is returned
together with the pivot ``ws [1, num_ws, w_dim]``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from gimp_draggan.draggan.adam import Adam
from gimp_draggan.draggan.lpips import PerceptualLoss, psnr
from gimp_draggan.draggan.networks import Generator, SynthesisLayer

StepFn = Callable[[str, int, int], None]  # (phase "invert", step 1..total, total)
StopFn = Callable[[], bool]
Distance = Callable[[torch.Tensor], torch.Tensor]  # image [1, 3, r, r] -> distance [1]


class InversionCancelled(RuntimeError):
    """`should_stop` returned True; the caller's generator is untouched."""


@dataclass(frozen=True)
class InvertParams:
    # Step 1: W projection.
    projection_steps: int = 30  # Adam steps on w (photo-true edits need motion, not
    #                                   pixels: half of 60 + 50 kept their quality, PERFORMANCE.md).
    projection_lr: float = 0.04  # Peak learning rate.
    lr_rampup: float = 0.05  # Fraction of steps with a linear warm-up.
    lr_rampdown: float = 0.25  # Fraction of steps with a cosine decay to 0.
    w_plus: bool = False  # Optimise one w per layer (w+) instead of one w.
    optimize_noise: bool = False  # Also fit the generator's constant noise maps.
    noise_reg_weight: float = 1e5  # Weight of the noise whiteness regulariser.
    w_noise_start: float = 0.05  # Latent noise at step 0, in units of the w spread.
    w_noise_ramp: float = 0.75  # Fraction of steps over which it decays to 0.
    projection_l2: float = 0.0  # Weight of pixel MSE beside the perceptual distance.
    # Step 2: pivotal tuning.
    tuning_steps: int = 25  # Max Adam steps on the synthesis weights.
    tuning_lr: float = 3e-3  # Peak learning rate.
    tuning_schedule: str = "cosine"  # "constant" | "cosine" (decay to 10 % of tuning_lr).
    tuning_l2: float = 1.0  # Weight of pixel MSE.
    tuning_perceptual: float = 1.0  # Weight of the perceptual distance.
    stop_distance: float | None = None  # Early stop; None = the loss's threshold x stop_factor.
    stop_factor: float = 1.0  # Scales the loss's own threshold (PTI: LPIPS 0.06).
    locality_weight: float = 0.0  # Locality regulariser weight, 0 = off.
    locality_alpha: float = 30.0  # Distance from the pivot of the regularised latents.
    # Both.
    loss_resolution: int = 256  # Area-downsample images above this before the distance.
    w_avg_samples: int = 4096  # Mapping samples for w_avg and the w spread.
    tf32: bool = False  # Allow TF32 matmuls/convs on CUDA (bench_pti measures it).
    seed: int = 0

    def check(self) -> None:
        if self.projection_steps < 0 or self.tuning_steps < 0:
            raise ValueError("projection_steps and tuning_steps must be >= 0")
        if self.tuning_schedule not in ("constant", "cosine"):
            raise ValueError(
                f"tuning_schedule must be constant or cosine, not {self.tuning_schedule!r}"
            )
        if self.loss_resolution < 16 or self.w_avg_samples < 2:
            raise ValueError("loss_resolution must be >= 16 and w_avg_samples >= 2")


PRESETS: dict[str, InvertParams] = {
    # Default: a short W projection at a high learning rate, then a short, fast-decaying tuning.
    "fast": InvertParams(),
    # Longer, w+ and noise fitting in step 1; more, gentler tuning with locality kept, stopping at
    # half the loss's threshold.
    "quality": InvertParams(
        projection_steps=250,
        projection_lr=0.02,
        w_plus=True,
        optimize_noise=True,
        tuning_steps=200,
        tuning_lr=1e-3,
        locality_weight=0.1,
        stop_factor=0.5,
    ),
    # The PTI paper's settings (the benchmark's yardstick): 450 + 350 steps, lr 0.01 / 3e-4.
    "reference": InvertParams(
        projection_steps=450,
        projection_lr=0.01,
        optimize_noise=True,
        tuning_steps=350,
        tuning_lr=3e-4,
        tuning_schedule="constant",
    ),
}


def preset(name: str, **overrides: object) -> InvertParams:
    """The named preset, with fields replaced by ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"unknown inversion preset {name!r}: use one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)  # type: ignore[arg-type]


@dataclass
class InversionResult:
    generator: Generator  # Tuned deep copy of the input generator (eval, frozen).
    ws: torch.Tensor  # Pivot [1, num_ws, w_dim].
    psnr: float  # dB, G'(ws) vs the target.
    distance: float  # Perceptual distance G'(ws) vs the target.
    loss_name: str  # Which distance ("lpips-vgg16", "pyramid-l1", ...).
    steps: int  # Projection + tuning steps run.
    projection_steps: int
    tuning_steps: int
    projection_psnr: float  # After step 1 only.
    projection_distance: float
    seconds: float


def check_target(target: torch.Tensor, resolution: int) -> None:
    """Raise ValueError unless ``target`` is ``[1, 3, R, R]``, finite, in [-1, 1]."""
    if target.ndim != 4 or tuple(target.shape) != (1, 3, resolution, resolution):
        raise ValueError(
            f"target must be [1, 3, {resolution}, {resolution}] (the model resolution), "
            f"got {list(target.shape)}"
        )
    if not torch.isfinite(target).all():
        raise ValueError("target contains NaN or infinite values")
    lo, hi = float(target.min()), float(target.max())
    if lo < -1.001 or hi > 1.001:
        raise ValueError(f"target values must lie in [-1, 1], got [{lo:.3f}, {hi:.3f}]")


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    """Allow TF32 on CUDA inside the block, restoring the global flags after."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def projection_lr(params: InvertParams, t: float) -> float:
    """Step-1 learning rate at progress ``t`` in [0, 1): linear warm-up, cosine decay."""
    down = min(1.0, (1.0 - t) / params.lr_rampdown) if params.lr_rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(down * math.pi)
    if params.lr_rampup > 0:
        ramp *= min(1.0, t / params.lr_rampup)
    return params.projection_lr * ramp


def tuning_lr(params: InvertParams, step: int) -> float:
    """Step-2 learning rate: constant, or a cosine from tuning_lr down to 10 % of it."""
    if params.tuning_schedule == "constant" or params.tuning_steps <= 1:
        return params.tuning_lr
    t = step / (params.tuning_steps - 1)
    return params.tuning_lr * (0.1 + 0.9 * (0.5 + 0.5 * math.cos(t * math.pi)))


def noise_regularizer(bufs: list[torch.Tensor]) -> torch.Tensor:
    """Sum over maps and scales of squared one-pixel autocorrelations (0 for white noise)."""
    total = bufs[0].new_zeros(())
    for buf in bufs:
        v = buf[None, None]  # [1, 1, R, R]
        while True:
            total = total + (v * v.roll(1, dims=3)).mean().square()
            total = total + (v * v.roll(1, dims=2)).mean().square()
            if v.shape[-1] <= 8:
                break
            v = F.avg_pool2d(v, 2)
    return total


def w_stats(G: Generator, samples: int, seed: int) -> tuple[torch.Tensor, float]:
    """Mean latent ``[1, 1, w_dim]`` and the latents' spread (RMS distance to the mean)."""
    dev = G.mapping.w_avg.device
    z = torch.randn(samples, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(dev)
    with torch.no_grad():
        w = G.mapping(z)[:, :1]  # [S, 1, w_dim]
    w_avg = w.mean(dim=0, keepdim=True)
    spread = float((w - w_avg).square().sum() / samples) ** 0.5
    return w_avg, spread


def _noise_buffers(G: Generator) -> list[torch.Tensor]:
    return [
        m.noise_const
        for m in G.synthesis.modules()
        if isinstance(m, SynthesisLayer) and m.use_noise
    ]


def _to_loss_res(img: torch.Tensor, res: int) -> torch.Tensor:
    if img.shape[-1] > res:
        return F.interpolate(img, size=(res, res), mode="area")
    return img


def _render(G: Generator, ws: torch.Tensor) -> torch.Tensor:
    img = G.synthesis.run(ws, noise_mode="const").img
    assert img is not None
    return img


def invert(
    G: Generator,
    target: torch.Tensor,  # [1, 3, R, R] in [-1, 1], R = G.img_resolution.
    loss: PerceptualLoss,  # Moved to G's device in place.
    params: InvertParams | None = None,
    on_step: StepFn | None = None,
    should_stop: StopFn | None = None,
) -> InversionResult:
    """Project ``target`` into W, then tune a copy of ``G`` around the pivot (PTI)."""
    params = params or PRESETS["fast"]
    params.check()
    check_target(target, G.img_resolution)
    start = time.perf_counter()
    dev = next(G.parameters()).device
    target = target.to(dev, torch.float32)
    loss = loss.to(dev)
    Gt = copy.deepcopy(G).eval().requires_grad_(False)
    total = params.projection_steps + params.tuning_steps
    stop = params.stop_distance
    if stop is None:
        stop = loss.threshold * params.stop_factor
    to_target = loss.against(_to_loss_res(target, params.loss_resolution))
    counter = [0]

    def tick() -> None:
        if should_stop is not None and should_stop():
            raise InversionCancelled("inversion cancelled")
        counter[0] += 1
        if on_step is not None:
            on_step("invert", counter[0], total)

    def measure(ws: torch.Tensor) -> tuple[float, float]:
        with torch.no_grad():
            img = _render(Gt, ws)
            d = to_target(_to_loss_res(img, params.loss_resolution))
            return float(psnr(img, target)), float(d)

    with _tf32(params.tf32 and dev.type == "cuda"):
        ws = _project(Gt, target, to_target, params, tick)
        proj_psnr, proj_dist = measure(ws)
        tuned = _tune(Gt, ws, target, to_target, loss, params, stop, tick)
        final_psnr, final_dist = measure(ws)
    Gt.eval().requires_grad_(False)
    return InversionResult(
        generator=Gt,
        ws=ws,
        psnr=final_psnr,
        distance=final_dist,
        loss_name=loss.name,
        steps=params.projection_steps + tuned,
        projection_steps=params.projection_steps,
        tuning_steps=tuned,
        projection_psnr=proj_psnr,
        projection_distance=proj_dist,
        seconds=time.perf_counter() - start,
    )


def _project(
    Gt: Generator,
    target: torch.Tensor,
    to_target: Distance,
    params: InvertParams,
    tick: Callable[[], None],
) -> torch.Tensor:
    """Step 1 on ``Gt`` (its noise maps change when optimised); returns ``[1, num_ws, w_dim]``."""
    w_avg, spread = w_stats(Gt, params.w_avg_samples, params.seed)
    n = Gt.num_ws if params.w_plus else 1
    w_opt = w_avg.repeat(1, n, 1).clone().requires_grad_(True)  # [1, n, w_dim]
    bufs = _noise_buffers(Gt) if params.optimize_noise else []
    for b in bufs:
        b.requires_grad_(True)
    opt = Adam([w_opt, *bufs], lr=params.projection_lr, betas=(0.9, 0.999))
    g = torch.Generator(device=w_opt.device).manual_seed(params.seed)
    steps = params.projection_steps
    for step in range(steps):
        tick()
        t = step / steps
        opt.lr = projection_lr(params, t)
        fade = max(0.0, 1.0 - t / params.w_noise_ramp) ** 2 if params.w_noise_ramp > 0 else 0.0
        jitter = torch.randn(w_opt.shape, generator=g, device=w_opt.device)
        ws = (w_opt + jitter * spread * params.w_noise_start * fade).expand(1, Gt.num_ws, -1)
        img = _render(Gt, ws)
        objective = to_target(_to_loss_res(img, params.loss_resolution)).sum()
        if params.projection_l2 > 0:
            objective = objective + params.projection_l2 * F.mse_loss(img, target)
        if bufs:
            objective = objective + params.noise_reg_weight * noise_regularizer(bufs)
        opt.zero_grad()
        objective.backward()
        opt.step()
        with torch.no_grad():
            for b in bufs:
                b.sub_(b.mean()).mul_(b.square().mean().rsqrt())
    for b in bufs:
        b.requires_grad_(False)
    return w_opt.detach().expand(1, Gt.num_ws, -1).clone()


def _tune(
    Gt: Generator,
    ws: torch.Tensor,
    target: torch.Tensor,
    to_target: Distance,
    loss: PerceptualLoss,
    params: InvertParams,
    stop: float,
    tick: Callable[[], None],
) -> int:
    """Step 2: fine-tune ``Gt.synthesis`` around the pivot ``ws``; returns the steps run."""
    anchor = copy.deepcopy(Gt).requires_grad_(False) if params.locality_weight > 0 else None
    weights = list(Gt.synthesis.parameters())
    Gt.synthesis.requires_grad_(True)
    opt = Adam(weights, lr=params.tuning_lr)
    g = torch.Generator(device=ws.device).manual_seed(params.seed + 1)
    for step in range(params.tuning_steps):
        img = _render(Gt, ws)
        dist = to_target(_to_loss_res(img, params.loss_resolution)).sum()
        if float(dist.detach()) <= stop:
            return step
        tick()
        opt.lr = tuning_lr(params, step)
        objective = params.tuning_l2 * F.mse_loss(img, target) + params.tuning_perceptual * dist
        if anchor is not None:
            far = _locality(Gt, anchor, ws, loss, params, g)
            objective = objective + params.locality_weight * far
        opt.zero_grad()
        objective.backward()
        opt.step()
    return params.tuning_steps


def _locality(
    Gt: Generator,
    anchor: Generator,
    ws: torch.Tensor,
    loss: PerceptualLoss,
    params: InvertParams,
    g: torch.Generator,
) -> torch.Tensor:
    """L2 + perceptual between tuned and original G at a latent ``alpha`` away from the pivot."""
    z = torch.randn(1, Gt.z_dim, generator=g, device=ws.device)
    with torch.no_grad():
        w = Gt.mapping(z)[:, :1]
        step = w - ws[:, :1]
        w_far = ws + params.locality_alpha * step / step.norm().clamp_min(1e-8)
        want = _render(anchor, w_far)
    got = _render(Gt, w_far)
    res = params.loss_resolution
    return F.mse_loss(got, want) + loss(_to_loss_res(got, res), _to_loss_res(want, res)).sum()
