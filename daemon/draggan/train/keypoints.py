"""Keypoint detector for the procedural world: a small CNN with soft-argmax heatmaps.

Trained only on ``world.render`` images, where ground truth is exact; used to measure drags on
the embedded model (detect on source, target and result). Heatmaps at 1/4 resolution with a
soft-argmax give sub-pixel coordinates at a fraction of a full-resolution network's cost.

Weights ship as ``daemon/assets/keypoints.safetensors`` (metadata: format, resolution, keypoint
names). Run ``python -m gimp_draggan.draggan.train.keypoints --out FILE`` to train one.
Points are (x, y) pixels of the input resolution, as in ``world``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gimp_draggan.draggan.train.world import KEYPOINT_NAMES, render

DETECTOR_FORMAT = "gimp-draggan-keypoints"
ASSET = Path(__file__).resolve().parents[2] / "assets" / "keypoints.safetensors"
EVAL_SEED_BASE = 5_000_000  # held-out world seeds for measuring the detector
TRAIN_SEED_BASE = 20_000_000  # detector training seeds (disjoint from the GAN's and eval's)


def _conv(i: int, o: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class KeypointNet(nn.Module):
    """Image ``[N, 3, R, R]`` in [-1, 1] -> keypoints ``[N, K, 2]`` (x, y) pixels."""

    def __init__(self, resolution: int = 64, num_keypoints: int = len(KEYPOINT_NAMES)) -> None:
        super().__init__()
        self.resolution = resolution
        self.num_keypoints = num_keypoints
        self.enc1 = nn.Sequential(_conv(5, 32), _conv(32, 32, 2))  # R/2
        self.enc2 = nn.Sequential(_conv(32, 64, 2), _conv(64, 64))  # R/4
        self.enc3 = nn.Sequential(_conv(64, 128, 2), _conv(128, 128))  # R/8
        self.lateral = nn.Conv2d(64, 128, 1)
        self.head = nn.Sequential(_conv(128, 128), nn.Conv2d(128, num_keypoints, 3, 1, 1))

    def heatmap_logits(self, img: torch.Tensor) -> torch.Tensor:
        n, _, h, w = img.shape
        ys = torch.linspace(-1, 1, h, device=img.device).reshape(1, 1, h, 1).expand(n, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=img.device).reshape(1, 1, 1, w).expand(n, 1, h, w)
        x = self.enc1(torch.cat([img, xs, ys], dim=1))
        x2 = self.enc2(x)
        x3 = self.enc3(x2)
        x = F.interpolate(x3, scale_factor=2.0, mode="nearest") + self.lateral(x2)
        return self.head(x)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        r = self.resolution
        if img.ndim != 4 or tuple(img.shape[1:]) != (3, r, r):
            raise ValueError(
                f"keypoint detector input: expected [N, 3, {r}, {r}], got {list(img.shape)}"
            )
        logits = self.heatmap_logits(img)
        n, k, h, w = logits.shape
        prob = logits.flatten(2).softmax(dim=2).reshape(n, k, h, w)
        cell = r / h
        centres = (torch.arange(h, device=img.device, dtype=prob.dtype) + 0.5) * cell
        x = (prob.sum(dim=2) * centres).sum(dim=2)
        y = (prob.sum(dim=3) * centres).sum(dim=2)
        return torch.stack([x, y], dim=2)


@dataclass(frozen=True)
class DetectorAccuracy:
    n: int
    mean_px: float  # mean Euclidean error over all keypoints, pixels
    per_keypoint_px: dict[str, float]
    p95_px: float


def load_detector(path: str | Path = ASSET, device: str = "cpu") -> KeypointNet:
    """Load a trained detector (eval mode); clear error if the file is missing or foreign."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"keypoint detector weights not found at {path}; train them with "
            "`python -m gimp_draggan.draggan.train.keypoints --out {path}`"
        )
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != DETECTOR_FORMAT:
        raise ValueError(f"{path}: not a gimp-draggan keypoint detector (metadata {meta})")
    net = KeypointNet(int(meta["resolution"]), len(json.loads(meta["keypoints"])))
    net.load_state_dict(load_file(str(path)))
    return net.to(device).eval()


def detect(net: KeypointNet, images: torch.Tensor) -> torch.Tensor:
    """Keypoints ``[N, K, 2]`` for ``images [N, 3, R, R]`` in [-1, 1], no gradients."""
    dev = next(net.parameters()).device
    with torch.no_grad():
        return net(images.to(dev, torch.float32)).cpu()


def measure(net: KeypointNet, n: int = 512, seed_base: int = EVAL_SEED_BASE) -> DetectorAccuracy:
    """Error on held-out world images (seeds disjoint from every training stream)."""
    errs = []
    for start in range(0, n, 128):
        b = render(list(range(seed_base + start, seed_base + min(start + 128, n))), net.resolution)
        errs.append((detect(net, b.images) - b.keypoints).norm(dim=2))
    e = torch.cat(errs)
    per = {name: round(float(e[:, i].mean()), 3) for i, name in enumerate(KEYPOINT_NAMES)}
    return DetectorAccuracy(
        n=n, mean_px=float(e.mean()), per_keypoint_px=per, p95_px=float(e.flatten().quantile(0.95))
    )


def train_detector(
    steps: int,
    batch: int = 32,
    lr: float = 2e-3,
    resolution: int = 64,
    seed: int = 0,
    noise: float = 0.03,
    log_every: int = 100,
) -> KeypointNet:
    """Adam on the L1 error of soft-argmax points; light pixel noise so GAN outputs are in range."""
    torch.manual_seed(seed)
    net = KeypointNet(resolution)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    t0 = time.monotonic()
    for step in range(steps):
        first = TRAIN_SEED_BASE + step * batch
        b = render(list(range(first, first + batch)), resolution)
        img = b.images + noise * torch.randn_like(b.images)
        loss = (net(img) - b.keypoints).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log_every and (step + 1) % log_every == 0:
            print(
                f"step {step + 1}/{steps} L1 {loss.item():.3f} px "
                f"{(step + 1) * batch / (time.monotonic() - t0):.0f} img/s",
                flush=True,
            )
    return net.eval()


def save_detector(
    net: KeypointNet, path: str | Path, accuracy: DetectorAccuracy | None = None
) -> None:
    from safetensors.torch import save_file

    meta: dict[str, Any] = {
        "format": DETECTOR_FORMAT,
        "version": "1",
        "resolution": str(net.resolution),
        "keypoints": json.dumps(list(KEYPOINT_NAMES)),
    }
    if accuracy is not None:
        meta["heldout_mean_px"] = f"{accuracy.mean_px:.4f}"
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path), metadata=meta)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m gimp_draggan.draggan.train.keypoints",
        description="Train the world's keypoint detector and report its held-out error.",
    )
    p.add_argument("--out", default=str(ASSET), help="safetensors file to write")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads, 0 = default")
    p.add_argument("--eval-n", type=int, default=1024)
    a = p.parse_args(argv)
    if a.steps < 1 or a.batch < 2:
        print("error: --steps must be >= 1 and --batch >= 2", file=sys.stderr)
        return 2
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    net = train_detector(a.steps, a.batch, a.lr)
    acc = measure(net, a.eval_n)
    save_detector(net, a.out, acc)
    print(
        json.dumps(
            {
                "n": acc.n,
                "mean_px": round(acc.mean_px, 4),
                "p95_px": round(acc.p95_px, 4),
                "per_keypoint_px": acc.per_keypoint_px,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
