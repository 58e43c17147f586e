"""Training and measuring the embedded model's keypoint detector (`gimp_draggan.faces.keypoints`).

Trained only on ``world.render`` images, where ground truth is exact; used to measure drags on
the embedded model (detect on source, target and result). Heatmaps at 1/4 resolution with a
soft-argmax give sub-pixel coordinates at a fraction of a full-resolution network's cost.

Weights ship as ``daemon/assets/keypoints.safetensors`` (metadata: format, resolution, keypoint
names). Run ``python -m gimp_draggan_tools.train.keypoints --out FILE`` to train one.
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

from gimp_draggan.faces.keypoints import ASSET, DETECTOR_FORMAT, KeypointNet, detect
from gimp_draggan_tools.train.world import KEYPOINT_NAMES, render

EVAL_SEED_BASE = 5_000_000  # held-out world seeds for measuring the detector
TRAIN_SEED_BASE = 20_000_000  # detector training seeds (disjoint from the GAN's and eval's)


@dataclass(frozen=True)
class DetectorAccuracy:
    n: int
    mean_px: float  # mean Euclidean error over all keypoints, pixels
    per_keypoint_px: dict[str, float]
    p95_px: float


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
    net = KeypointNet(resolution, len(KEYPOINT_NAMES))
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
        prog="python -m gimp_draggan_tools.train.keypoints",
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
