"""Which feature block drags a small model best? Measured with a judge independent of the
features: the 9x9 RGB patch around the handle in the start image is searched (least squares)
in the dragged image; its distance to the target is the error.

    python tests/bench/bench_drag_features.py --model FILE_OR_NAME [--blocks 16,32] [--pairs 12]
        [--steps 100] [--json]

Random pairs (fixed seeds): handle in the central half, target 8-16 % of the image away.
Prints per block: mean/median patch error, mean tracked distance, steps; --json last line.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import numpy as np
import torch

from gimp_draggan.device import pick_device
from gimp_draggan.draggan.checkpoint import load_generator
from gimp_draggan.draggan.drag import DragParams, DragSession
from gimp_draggan.draggan.networks import seed_to_z
from gimp_draggan.models.registry import resolve


def random_pair(seed: int, res: int) -> tuple[tuple[int, int], tuple[float, float]]:
    rng = np.random.RandomState(1000 + seed)
    hx, hy = (int(v) for v in rng.randint(res // 4, 3 * res // 4, size=2))
    angle = rng.uniform(0, 2 * math.pi)
    length = res * rng.uniform(0.08, 0.16)
    tx = min(max(hx + length * math.cos(angle), 0), res - 1)
    ty = min(max(hy + length * math.sin(angle), 0), res - 1)
    return (hx, hy), (round(tx), round(ty))


def find_patch(start: torch.Tensor, end: torch.Tensor, x: int, y: int, p: int) -> tuple[int, int]:
    """Where the (2p+1)^2 patch of ``start`` [C, H, W] at (x, y) lies in ``end`` (least squares)."""
    patch = start[:, max(y - p, 0) : y + p + 1, max(x - p, 0) : x + p + 1]
    ph, pw = patch.shape[1:]
    windows = end.unfold(1, ph, 1).unfold(2, pw, 1)  # [C, H-ph+1, W-pw+1, ph, pw]
    ssd = (windows - patch[:, None, None]).square().sum(dim=(0, 3, 4))
    idx = int(ssd.reshape(-1).argmin())
    ox, oy = x - max(x - p, 0), y - max(y - p, 0)
    return idx % ssd.shape[1] + ox, idx // ssd.shape[1] + oy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--blocks", default="16,32", help="feature block resolutions to compare")
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--device")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    device = pick_device(args.device)
    G = load_generator(resolve(args.model)).to(device)
    res = G.img_resolution
    p = max(res // 16, 2)
    rows = {}
    for block in [int(b) for b in args.blocks.split(",")]:
        errors, tracked, steps, secs = [], [], [], []
        for seed in range(args.pairs):
            handle, target = random_pair(seed, res)
            with torch.no_grad():
                ws = G.mapping(seed_to_z(seed, G.z_dim).to(device), truncation_psi=0.7)
                img0 = G.synthesis(ws)[0]
            params = DragParams(feature_res=block, lr=args.lr)
            t0 = time.perf_counter()
            result = DragSession(G, ws, [handle], [target], params=params).run(args.steps)
            secs.append(time.perf_counter() - t0)
            fx, fy = find_patch(img0.cpu(), result.image[0], *handle, p)
            errors.append(math.dist((fx, fy), target))
            tracked.append(result.distances[0])
            steps.append(result.steps)
        start = statistics.mean(math.dist(*random_pair(s, res)) for s in range(args.pairs))
        rows[block] = {
            "patch_error_mean": round(statistics.mean(errors), 3),
            "patch_error_median": round(statistics.median(errors), 3),
            "tracked_distance_mean": round(statistics.mean(tracked), 3),
            "start_distance_mean": round(start, 3),
            "steps_mean": round(statistics.mean(steps), 1),
            "seconds_mean": round(statistics.mean(secs), 2),
        }
        print(
            f"block {block:4d}: " + ", ".join(f"{k} {v}" for k, v in rows[block].items()),
            flush=True,
        )
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model,
                    "res": res,
                    "pairs": args.pairs,
                    "steps": args.steps,
                    "lr": args.lr,
                    "blocks": rows,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
