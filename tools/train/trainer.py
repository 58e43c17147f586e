"""StyleGAN2 training for the embedded model, on CPU (2 cores) or a GPU.

Non-saturating logistic loss, lazy R1 on reals, generator EMA, optional path-length
regularisation; the data stream is the procedural world (``world.render``), seeded by the count
of images seen, so a resumed run sees exactly the images it would have seen.

Run: ``python -m gimp_draggan_tools.train.trainer --out runs/embedded --minutes 100``.
The output folder holds ``checkpoint.pt`` (resumable; a plain dict of state dicts, loadable with
``torch.load(..., weights_only=True)``), ``ema/ema-KKKKKK.pt`` snapshots of the EMA generator,
``log.jsonl`` (one line of losses per log interval) and ``grid-latest.png`` (fixed-z samples).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "gimp-draggan-train-checkpoint"
DATA_SEED_BASE = 10_000_000  # world seeds used for training start here (eval sets use lower seeds)


@dataclass
class TrainConfig:
    out: str = "runs/embedded"
    resolution: int = 64
    z_dim: int = 256
    w_dim: int = 256
    mapping_layers: int = 4
    mapping_lr_multiplier: float = 0.01
    g_channel_base: int = 1024
    g_channel_max: int = 128
    d_channel_base: int = 1024
    d_channel_max: int = 128
    batch: int = 16
    lr: float = 0.0025
    beta1: float = 0.0
    beta2: float = 0.99
    r1_gamma: float = 0.1
    r1_interval: int = 16
    pl_weight: float = 0.0  # 0 = no path-length regularisation
    pl_interval: int = 4
    style_mixing: float = 0.0  # probability of mixing two latents in a batch sample
    ema_kimg: float = 5.0  # EMA half-life in thousands of images
    ema_rampup: float = 0.05  # half-life <= this fraction of images seen (0 = off)
    kimg: float = 1000.0  # stop after this many thousand images ...
    minutes: float = 0.0  # ... or this many minutes of wall time in total (0 = no limit)
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch CPU threads, 0 = leave torch's default
    log_every: int = 20  # steps
    checkpoint_minutes: float = 5.0
    grid_minutes: float = 5.0
    fused_modconv: bool = False  # False: split modconv (same maths, ~1.5x faster to train)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch < 2:
            raise ValueError(f"batch must be >= 2 (minibatch stddev), got {self.batch}")
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 8, got {self.resolution}")
        for name in ("lr", "r1_interval", "pl_interval", "log_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    def generator_config(self) -> Any:
        from gimp_draggan.draggan.networks import GeneratorConfig

        return GeneratorConfig(
            img_resolution=self.resolution,
            z_dim=self.z_dim,
            w_dim=self.w_dim,
            channel_base=self.g_channel_base,
            channel_max=self.g_channel_max,
            mapping_layers=self.mapping_layers,
            mapping_lr_multiplier=self.mapping_lr_multiplier,
            conv_clamp=None,
        )

    def discriminator_config(self) -> Any:
        from gimp_draggan_tools.train.discriminator import DiscriminatorConfig

        return DiscriminatorConfig(
            img_resolution=self.resolution,
            channel_base=self.d_channel_base,
            channel_max=self.d_channel_max,
        )


def _split_modulated_conv2d(
    x: Any,
    weight: Any,
    styles: Any,
    noise: Any = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: Any = None,
    demodulate: bool = True,
) -> Any:
    """Modulated conv as scale-conv-scale with one shared weight: the same maths as the fused
    grouped conv, but batched convolutions train about 1.5x faster on CPU (measured)."""
    import torch.nn.functional as F

    from gimp_draggan.draggan import networks

    n = x.shape[0]
    out_c, in_c, _, kw = weight.shape
    x = x * styles.reshape(n, in_c, 1, 1)
    if up == 1:
        x = F.conv2d(x, weight, padding=padding)
    else:
        x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
        fw = resample_filter.shape[-1]
        p0 = padding + (fw + 1) // 2 - (kw - 1)
        p1 = padding + (fw - 2) // 2 - (kw - 2)
        x = networks.upfirdn2d(x, resample_filter, pad=(p0, p1, p0, p1), gain=4.0)
    if demodulate:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, in_c, 1, 1)
        x = x * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(n, out_c, 1, 1)
    if noise is not None:
        x = x + noise
    return x


@contextlib.contextmanager
def split_modconv(enabled: bool) -> Iterator[None]:
    """Use the split modulated conv inside this block (training only; restored on exit)."""
    from gimp_draggan.draggan import networks

    original = networks.modulated_conv2d
    if enabled:
        networks.modulated_conv2d = _split_modulated_conv2d
    try:
        yield
    finally:
        networks.modulated_conv2d = original


class Trainer:
    """Holds G, D, G_ema, optimisers and counters; ``step()`` does one training iteration."""

    def __init__(self, cfg: TrainConfig) -> None:
        import copy

        import torch

        from gimp_draggan.device import pick_device
        from gimp_draggan.draggan.networks import Generator
        from gimp_draggan_tools.train.discriminator import Discriminator

        self.cfg = cfg
        self.device = torch.device(pick_device(None if cfg.device == "auto" else cfg.device))
        torch.manual_seed(cfg.seed)
        self.G = Generator(cfg.generator_config()).to(self.device)
        self.D = Discriminator(cfg.discriminator_config()).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        # Lazy R1: the D optimiser's lr and betas are scaled as in StyleGAN2 (§B, "lazy").
        ratio = cfg.r1_interval / (cfg.r1_interval + 1)
        self.opt_D = torch.optim.Adam(
            self.D.parameters(),
            lr=cfg.lr * ratio,
            betas=(float(cfg.beta1**ratio), float(cfg.beta2**ratio)),
        )
        self.gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        self.step_count = 0
        self.nimg = 0
        self.wall = 0.0
        self.pl_mean = torch.zeros([], device=self.device)

    # -- data and latents --------------------------------------------------------------------

    def reals(self, n: int) -> Any:
        from gimp_draggan_tools.train.world import render

        seeds = range(DATA_SEED_BASE + self.nimg, DATA_SEED_BASE + self.nimg + n)
        return render(list(seeds), self.cfg.resolution).images.to(self.device)

    def latents(self, n: int) -> Any:
        import torch

        return torch.randn([n, self.cfg.z_dim], generator=self.gen).to(self.device)

    def mapped(self, G: Any, n: int) -> Any:
        """ws ``[n, num_ws, w_dim]`` with optional style mixing."""
        import torch

        ws = G.mapping(self.latents(n), update_emas=G is self.G)
        if self.cfg.style_mixing > 0:
            u = torch.rand([], generator=self.gen).item()
            if u < self.cfg.style_mixing:
                cut = int(torch.randint(1, ws.shape[1], [], generator=self.gen).item())
                ws2 = G.mapping(self.latents(n))
                ws = torch.cat([ws[:, :cut], ws2[:, cut:]], dim=1)
        return ws

    # -- one iteration -----------------------------------------------------------------------

    def step(self) -> dict[str, float]:
        import torch
        import torch.nn.functional as F

        cfg = self.cfg
        n = cfg.batch
        stats: dict[str, float] = {}
        # Noise inputs draw from the global RNG: seed it from our own stream so a resumed run
        # takes exactly the steps the uninterrupted one would have taken.
        torch.manual_seed(int(torch.randint(2**62, [], generator=self.gen).item()))
        with split_modconv(not cfg.fused_modconv):
            # G: non-saturating logistic loss.
            self.D.requires_grad_(False)
            self.G.requires_grad_(True)
            fake = self.G.synthesis(self.mapped(self.G, n), noise_mode="random")
            loss_g = F.softplus(-self.D(fake)).mean()
            self.opt_G.zero_grad(set_to_none=True)
            loss_g.backward()
            stats["loss_G"] = loss_g.item()
            if cfg.pl_weight > 0 and self.step_count % cfg.pl_interval == 0:
                stats["pl"] = self._path_length()
            self._finite_step(self.opt_G, self.G)

            # D: logistic loss on the same fakes (detached; saves a G forward per step) and
            # on reals, lazy R1 on reals.
            self.G.requires_grad_(False)
            self.D.requires_grad_(True)
            real = self.reals(n)
            logits_f = self.D(fake.detach())
            logits_r = self.D(real)
            loss_d = F.softplus(logits_f).mean() + F.softplus(-logits_r).mean()
            self.opt_D.zero_grad(set_to_none=True)
            loss_d.backward()
            stats.update(
                loss_D=loss_d.item(), D_real=logits_r.mean().item(), D_fake=logits_f.mean().item()
            )
            if cfg.r1_gamma > 0 and self.step_count % cfg.r1_interval == 0:
                real = real.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(self.D(real).sum(), real, create_graph=True)
                r1 = grad.square().sum(dim=[1, 2, 3]).mean()
                (r1 * (cfg.r1_gamma / 2) * cfg.r1_interval).backward()
                stats["r1"] = r1.item()
            self._finite_step(self.opt_D, self.D)

        self.nimg += n
        self.step_count += 1
        self._update_ema()
        return stats

    def _path_length(self) -> float:
        import torch

        n = max(self.cfg.batch // 2, 1)
        ws = self.mapped(self.G, n)
        img = self.G.synthesis(ws, noise_mode="random")
        noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
        (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()
        self.pl_mean.copy_(self.pl_mean.lerp(lengths.mean().detach(), 0.01))
        penalty = (lengths - self.pl_mean).square().mean()
        (penalty * self.cfg.pl_weight * self.cfg.pl_interval).backward()
        return float(penalty.item())

    @staticmethod
    def _finite_step(opt: Any, module: Any) -> None:
        """Replace NaN/inf gradients by 0 (as StyleGAN2 does) and step."""
        import torch

        for p in module.parameters():
            if p.grad is not None:
                torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)
        opt.step()

    def _update_ema(self) -> None:
        import torch

        half = self.cfg.ema_kimg * 1000
        if self.cfg.ema_rampup > 0:
            half = min(half, self.nimg * self.cfg.ema_rampup)
        beta = 0.5 ** (self.cfg.batch / max(half, 1e-8))
        with torch.no_grad():
            for pe, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
                pe.copy_(p.detach().lerp(pe, beta))
            for be, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
                be.copy_(b)

    # -- checkpoints ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": dataclasses.asdict(self.cfg),
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "rng": self.gen.get_state(),
            "step": self.step_count,
            "nimg": self.nimg,
            "wall": self.wall,
            "pl_mean": self.pl_mean.detach().cpu(),
        }

    def save(self, path: Path) -> None:
        import torch

        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state(), tmp)
        os.replace(tmp, path)

    def load(self, path: Path) -> None:
        import torch

        state = torch.load(path, map_location=self.device, weights_only=True)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not a gimp-draggan training checkpoint")
        for key in ("G", "D", "G_ema"):
            getattr(self, key).load_state_dict(state[key])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.gen.set_state(state["rng"].cpu())
        self.step_count = int(state["step"])
        self.nimg = int(state["nimg"])
        self.wall = float(state["wall"])
        self.pl_mean.copy_(state["pl_mean"])

    def save_grid(self, path: Path, n: int = 64) -> None:
        """Fixed-z samples of G_ema (seed 123, constant noise), 8 per row."""
        import torch
        from PIL import Image

        from gimp_draggan_tools.train.world import grid

        z = torch.randn([n, self.cfg.z_dim], generator=torch.Generator().manual_seed(123))
        with torch.no_grad():
            img = self.G_ema(z.to(self.device), noise_mode="const").cpu()
        tmp = path.with_name(path.name + ".tmp.png")
        Image.fromarray(grid(img.clamp(-1, 1))).save(tmp)
        os.replace(tmp, path)


def train(cfg: TrainConfig) -> Trainer:
    """Run (or resume) training until ``cfg.kimg`` or ``cfg.minutes``; returns the trainer."""
    import torch

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    (out / "ema").mkdir(parents=True, exist_ok=True)
    tr = Trainer(cfg)
    ckpt = out / CHECKPOINT_NAME
    if ckpt.exists():
        tr.load(ckpt)
        print(f"resumed from {ckpt}: {tr.nimg} images, step {tr.step_count}", flush=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))

    stop = {"flag": False}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    t_last = time.monotonic()
    last_ckpt = last_grid = t_last
    window: list[dict[str, float]] = []
    n_at_log, t_at_log = tr.nimg, t_last
    with (out / "log.jsonl").open("a") as log:
        while not stop["flag"]:
            if tr.nimg >= cfg.kimg * 1000 or (cfg.minutes > 0 and tr.wall >= cfg.minutes * 60):
                break
            window.append(tr.step())
            now = time.monotonic()
            tr.wall += now - t_last
            t_last = now
            if tr.step_count % cfg.log_every == 0:
                keys = {k for s in window for k in s}
                mean = {
                    k: sum(s[k] for s in window if k in s) / sum(k in s for s in window)
                    for k in sorted(keys)
                }
                rate = (tr.nimg - n_at_log) / max(now - t_at_log, 1e-9)
                row = {
                    "step": tr.step_count,
                    "kimg": tr.nimg / 1000,
                    "wall_s": round(tr.wall, 1),
                    "img_per_s": round(rate, 2),
                    **{k: round(v, 4) for k, v in mean.items()},
                }
                log.write(json.dumps(row) + "\n")
                log.flush()
                print(json.dumps(row), flush=True)
                window, n_at_log, t_at_log = [], tr.nimg, now
            if now - last_grid >= cfg.grid_minutes * 60:
                tr.save_grid(out / "grid-latest.png")
                tr.save_grid(out / f"grid-{tr.nimg // 1000:06d}.png")
                last_grid = now
            if now - last_ckpt >= cfg.checkpoint_minutes * 60:
                _snapshot(tr, out)
                last_ckpt = now
    _snapshot(tr, out)
    tr.save_grid(out / "grid-latest.png")
    print(f"stopped at {tr.nimg} images, step {tr.step_count}, {tr.wall:.0f} s", flush=True)
    return tr


def _snapshot(tr: Trainer, out: Path) -> None:
    import torch

    tr.save(out / CHECKPOINT_NAME)
    ema = {
        "G_ema": tr.G_ema.state_dict(),
        "nimg": tr.nimg,
        "step": tr.step_count,
        "wall": tr.wall,
        "config": dataclasses.asdict(tr.cfg),
    }
    torch.save(ema, out / "ema" / f"ema-{tr.nimg // 1000:06d}.pt")


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Every TrainConfig field is a ``--dashed-name`` option with the field's type."""
    p = argparse.ArgumentParser(
        prog="python -m gimp_draggan_tools.train.trainer",
        description="Train the embedded StyleGAN2 on the procedural world (resumes from --out).",
    )
    for f in dataclasses.fields(TrainConfig):
        if f.name == "extra":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            p.add_argument(flag, type=type(default), default=default, help=f"default {default}")
    return TrainConfig(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
