"""Drag quality on the embedded model: the DragGAN paper's face-landmark protocol, on our world.

For each of ``--n`` pairs of generated images (source, target; z from seeds, w = mapping(z) at
``--psi``, 0.7 as the official GUI): detect keypoints on both with the world's keypoint detector,
drag the source's keypoints to the target's with the engine, detect keypoints on the result, and
report the mean distance (MD, pixels of the model resolution) to the targets before and after.
Targets closer than ``--min-md`` to the source points (the engine stops at 2 px, so such pairs
measure nothing) are skipped: the next target seed is tried, and the count of tries is reported.
``outside_change`` is the mean absolute change (8-bit levels) of the pixels farther than
``--mask-radius`` from every handle and target; with ``--mask`` that region is also the drag's
fixed region.

Run: ``python tests/bench/eval_drag.py --n 20 --points 5 --json``. The last line with ``--json``
is JSON with ``n``, ``res``, ``points``, ``md_before``, ``md_after``, ``outside_change``,
``sec_per_edit`` (and a few more).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch


def points_for(mode: str, rng_choice: int) -> list[int]:
    from gimp_draggan_tools.train.world import FIVE_POINTS, KEYPOINT_NAMES

    if mode == "1":
        return [rng_choice % len(KEYPOINT_NAMES)]
    if mode == "5":
        return list(FIVE_POINTS)
    return list(range(len(KEYPOINT_NAMES)))


def region_mask(points: list[tuple[float, float]], res: int, radius: float) -> torch.Tensor:
    """``[res, res]`` float mask: 1 within ``radius`` of any of ``points`` (may move)."""
    ys, xs = torch.meshgrid(torch.arange(res), torch.arange(res), indexing="ij")
    m = torch.zeros(res, res)
    for x, y in points:
        m = torch.maximum(m, ((xs - x) ** 2 + (ys - y) ** 2 <= radius**2).float())
    return m


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20, help="number of (source, target) pairs")
    p.add_argument("--points", choices=["1", "5", "all"], default="1")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto)")
    p.add_argument("--model", default="embedded", help="registry name or generator file")
    p.add_argument("--steps", type=int, default=200, help="max drag steps per edit")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument(
        "--stop-floor",
        type=float,
        default=2.0,
        help="smallest stop distance in pixels (official rule: 2; at 64 px that is 3 %% "
        "of the image, so the product's quality figures also use 1)",
    )
    p.add_argument("--mask", action="store_true", help="fix the region outside --mask-radius")
    p.add_argument("--mask-radius", type=float, default=12.0, help="pixels at the model size")
    p.add_argument("--psi", type=float, default=0.7, help="truncation of the sampled latents")
    p.add_argument(
        "--min-md",
        type=float,
        default=3.0,
        help="skip targets closer than this (pixels, mean over the chosen points)",
    )
    p.add_argument("--seed", type=int, default=0, help="first source seed (source i = seed + i)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if a.n < 1 or a.steps < 1:
        print("error: --n and --steps must be >= 1", file=sys.stderr)
        return 2

    from gimp_draggan.device import pick_device
    from gimp_draggan.draggan.checkpoint import load_generator
    from gimp_draggan.draggan.drag import DragParams, DragSession
    from gimp_draggan.draggan.networks import seed_to_z
    from gimp_draggan.faces.keypoints import detect, load_detector
    from gimp_draggan.models.registry import resolve

    device = pick_device(a.device)
    G = load_generator(resolve(a.model)).to(device).eval()
    net = load_detector(device=device)
    res = G.img_resolution
    params = DragParams(lr=a.lr, max_steps=a.steps, stop_floor=a.stop_floor)

    def latent(seed: int) -> torch.Tensor:
        with torch.no_grad():
            ws = G.mapping(seed_to_z(seed, G.z_dim).to(device), truncation_psi=a.psi)
            return ws, G.synthesis(ws, noise_mode="const")

    md_before, md_after, outside, secs, steps = [], [], [], [], []
    target_seed = a.seed + 1_000_000
    tries = 0
    for i in range(a.n):
        ws_s, img_s = latent(a.seed + i)
        kp_s = detect(net, img_s)[0]
        sel = points_for(a.points, i)
        for _ in range(100):
            tries += 1
            _, img_t = latent(target_seed)
            target_seed += 1
            kp_t = detect(net, img_t)[0]
            if (kp_s[sel] - kp_t[sel]).norm(dim=1).mean() >= a.min_md:
                break
        # Detector points are pixel-centre coordinates (centre of column c = c + 0.5); the
        # engine's points are pixel indices.
        handles = (kp_s[sel] - 0.5).clamp(0, res - 1)
        targets = (kp_t[sel] - 0.5).clamp(0, res - 1)
        region = region_mask(
            [tuple(q) for q in torch.cat([handles, targets]).tolist()], res, a.mask_radius
        )
        session = DragSession(
            G,
            ws_s,
            handles.tolist(),
            targets.tolist(),
            mask=region.to(device) if a.mask else None,
            params=params,
        )
        t0 = time.perf_counter()
        result = session.run()
        secs.append(time.perf_counter() - t0)
        steps.append(result.steps)
        kp_r = detect(net, result.image)[0]
        before = (kp_s[sel] - kp_t[sel]).norm(dim=1).mean().item()
        after = (kp_r[sel] - kp_t[sel]).norm(dim=1).mean().item()
        md_before.append(before)
        md_after.append(after)
        fixed = (1 - region).bool()
        diff = ((result.image.clamp(-1, 1) - img_s.cpu().clamp(-1, 1)).abs() * 127.5)[0]
        outside.append(diff[:, fixed].mean().item() if fixed.any() else 0.0)
        if not a.json:
            print(
                f"pair {i}: MD {before:.2f} -> {after:.2f} px, {result.steps} steps, "
                f"{secs[-1]:.2f} s, outside change {outside[-1]:.2f}"
            )

    summary = {
        "n": a.n,
        "res": res,
        "points": a.points,
        "md_before": round(statistics.mean(md_before), 3),
        "md_after": round(statistics.mean(md_after), 3),
        "outside_change": round(statistics.mean(outside), 3),
        "sec_per_edit": round(statistics.mean(secs), 3),
        "md_after_median": round(statistics.median(md_after), 3),
        "steps_mean": round(statistics.mean(steps), 1),
        "targets_tried": tries,
        "min_md": a.min_md,
        "psi": a.psi,
        "mask": a.mask,
        "device": device,
        "model": a.model,
        "max_steps": a.steps,
        "lr": a.lr,
        "stop_floor": a.stop_floor,
    }
    print(
        f"MD {summary['md_before']} -> {summary['md_after']} px over {a.n} pairs "
        f"({a.points} point(s)), {summary['sec_per_edit']} s/edit on {device}"
    )
    if a.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
