"""Drag step speed: a step written the way the official DragGAN renderer does it (A) against
`DragSession.step` (B), same generator, device and points, in one run.

(A) synthesises the full image every step with the generator's parameters requiring gradients,
resizes the whole feature map, tracks on it, builds the disc from a full-image distance map and
samples with grid_sample (the official code's shape of computation, written here from its
description). (B) is ours. Weights are random: timing does not depend on them.

    python tests/bench/bench_drag.py [--device cpu] [--res 512] [--steps 5] [--mask] [--threads N]
        [--json]

Prints a table; with --json the last line is JSON: device, res, reference_ms, ours_ms, ratio
(ours / reference, median per step), peak_mem_mb (ours; CUDA: max_memory_allocated, CPU: peak
RSS of the process, which (B) runs first so its figure excludes (A)), reference_peak_mem_mb,
and the same medians in process CPU time (reference_cpu_ms, ours_cpu_ms, cpu_ratio).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from gimp_draggan.device import pick_device
from gimp_draggan.draggan.drag import DragParams, DragSession, default_feature_res, pixel_radii
from gimp_draggan.draggan.networks import Generator, GeneratorConfig, seed_to_z

# The official StyleGAN2 configurations DragGAN's checkpoints use (stylegan2-ada "paper256",
# "paper512", "stylegan2" for 1024).
OFFICIAL_CHANNEL_BASE = {256: 16384, 512: 32768, 1024: 32768}


def official_config(res: int) -> GeneratorConfig:
    return GeneratorConfig(img_resolution=res, channel_base=OFFICIAL_CHANNEL_BASE.get(res, 32768))


def bench_points(res: int) -> tuple[list[tuple[int, int]], list[tuple[float, float]]]:
    """Two pairs, far enough apart that no run here reaches its targets."""
    s = res / 512
    handles = [(round(180 * s), round(250 * s)), (round(330 * s), round(300 * s))]
    targets = [(round(300 * s), round(250 * s)), (round(330 * s), round(160 * s))]
    return handles, targets


class ReferenceStep:
    """One official-style step per call: full forward, track, supervise, backward, Adam."""

    def __init__(
        self,
        G: Generator,
        ws: torch.Tensor,
        handles: list[tuple[int, int]],
        targets: list[tuple[float, float]],
        mask: torch.Tensor | None,
        params: DragParams,
    ) -> None:
        self.G = G.requires_grad_(True)
        self.res = G.img_resolution
        self.n = params.num_optimised_ws
        self.feature_res = default_feature_res(self.res)
        self.radii = pixel_radii(params, self.res)
        self.lam = params.mask_lambda
        self.w0 = ws.detach().clone()
        self.w = ws.detach().clone().requires_grad_(True)
        self.optim = torch.optim.Adam([self.w], lr=params.lr)
        self.points = [[y, x] for x, y in handles]  # The official code keeps [row, col].
        self.targets = [[y, x] for x, y in targets]
        self.fixed = None if mask is None else (1 - mask).reshape(1, 1, self.res, self.res)
        self.feat0: torch.Tensor | None = None
        self.refs: list[torch.Tensor] = []

    def __call__(self) -> None:
        h = w = self.res
        dev = self.w.device
        ws = torch.cat([self.w[:, : self.n], self.w0[:, self.n :]], dim=1)
        out = self.G.synthesis.run(ws, noise_mode="const", feature_res=self.feature_res)
        assert out.img is not None and out.feature is not None
        _ = (out.img[0] * 127.5 + 128).clamp(0, 255).to(torch.uint8)  # the GUI's frame
        feat = F.interpolate(out.feature, [h, w], mode="bilinear")
        if self.feat0 is None:
            self.feat0 = feat.detach()
            self.refs = [self.feat0[:, :, py, px] for py, px in self.points]
        with torch.no_grad():
            r = self.radii.r2
            for j, (py, px) in enumerate(self.points):
                up, down = max(py - r, 0), min(py + r + 1, h)
                left, right = max(px - r, 0), min(px + r + 1, w)
                patch = feat[:, :, up:down, left:right]
                dist = torch.linalg.norm(patch - self.refs[j].reshape(1, -1, 1, 1), dim=1)
                idx = int(dist.reshape(-1).argmin())
                width = right - left
                self.points[j] = [idx // width + up, idx % width + left]
        coords = torch.linspace(0, h, h, device=dev)
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")
        loss = feat.new_zeros(())
        for (py, px), (ty, tx) in zip(self.points, self.targets, strict=True):
            d = torch.tensor([tx - px, ty - py], dtype=torch.float32)
            norm = float(torch.linalg.norm(d))
            if norm <= 1:
                continue
            d = d / norm
            dist = ((yy - py) ** 2 + (xx - px) ** 2) ** 0.5
            rows, cols = torch.where(dist < self.radii.r1)
            gx = (cols - float(d[0])) / (w - 1) * 2 - 1
            gy = (rows - float(d[1])) / (h - 1) * 2 - 1
            grid = torch.stack([gx, gy], dim=-1).reshape(1, 1, -1, 2)
            target = F.grid_sample(feat, grid, align_corners=True).squeeze(2)
            loss = loss + F.l1_loss(feat[:, :, rows, cols], target.detach())
        if self.fixed is not None:
            loss = loss + self.lam * F.l1_loss(feat * self.fixed, self.feat0 * self.fixed)
        self.optim.zero_grad()
        loss.backward()
        self.optim.step()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def time_steps(
    step: Callable[[], object], steps: int, device: str
) -> tuple[list[float], list[float]]:
    """Wall-clock and process-CPU milliseconds per call; the first call (warm-up) not counted.

    On a shared CPU the process CPU time is the steadier measure of the work done."""
    step()
    _sync(device)
    wall, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        _sync(device)
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return wall, cpu


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", help="cpu, cuda, cuda:N, mps (default: auto)")
    ap.add_argument("--res", type=int, default=512, help="model resolution (default 512)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant (default 5)")
    ap.add_argument("--mask", action="store_true", help="add the fixed-region term (left half)")
    ap.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's). 1 makes CPU time a clean measure of work on "
        "a shared machine: idle threads of a team spin and count as CPU time",
    )
    ap.add_argument("--json", action="store_true", help="last line: JSON figures")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = pick_device(args.device)
    torch.manual_seed(0)
    G = Generator(official_config(args.res)).eval().to(device)
    with torch.no_grad():
        ws = G.mapping(seed_to_z(0, G.z_dim).to(device), truncation_psi=0.7)
    handles, targets = bench_points(args.res)
    mask = None
    if args.mask:
        mask = torch.ones(args.res, args.res, device=device)
        mask[:, : args.res // 4] = 0
    params = DragParams()

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    G.requires_grad_(False)  # ours never needs them; (A) turns them back on
    session = DragSession(G, ws, handles, targets, mask=mask, params=params)
    ours, ours_cpu = time_steps(session.step, args.steps, device)
    peak_ours = _peak_mb(device)
    if session.converged():
        print("warning: (B) reached its targets; later steps did no optimisation", file=sys.stderr)

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    reference = ReferenceStep(G, ws, handles, targets, mask, params)
    ref, ref_cpu = time_steps(reference, args.steps, device)
    peak_ref = _peak_mb(device)

    ref_ms, ours_ms = statistics.median(ref), statistics.median(ours)
    ratio = ours_ms / ref_ms
    ref_cpu_ms, ours_cpu_ms = statistics.median(ref_cpu), statistics.median(ours_cpu)
    threads = torch.get_num_threads()
    masked = "on" if mask is not None else "off"
    print(
        f"drag step, {args.res} px, feature block {session.feature_res} px, {device}, "
        f"{threads} threads, torch {torch.__version__}, mask {masked}"
    )
    print(f"{'variant':<32}{'median ms':>11}{'min ms':>10}{'CPU ms':>10}{'peak MB':>9}")
    for name, wall, cpu, peak in [
        ("(A) official-style full step", ref, ref_cpu_ms, peak_ref),
        ("(B) DragSession.step", ours, ours_cpu_ms, peak_ours),
    ]:
        med = statistics.median(wall)
        print(f"{name:<32}{med:>11.1f}{min(wall):>10.1f}{cpu:>10.1f}{peak:>9.0f}")
    print(f"ratio ours/reference = {ratio:.3f} (wall), {ours_cpu_ms / ref_cpu_ms:.3f} (CPU time)")
    if args.json:
        print(
            json.dumps(
                {
                    "device": device,
                    "res": args.res,
                    "reference_ms": round(ref_ms, 2),
                    "ours_ms": round(ours_ms, 2),
                    "ratio": round(ratio, 4),
                    "peak_mem_mb": round(peak_ours, 1),
                    "reference_peak_mem_mb": round(peak_ref, 1),
                    "reference_cpu_ms": round(ref_cpu_ms, 2),
                    "ours_cpu_ms": round(ours_cpu_ms, 2),
                    "cpu_ratio": round(ours_cpu_ms / ref_cpu_ms, 4),
                    "steps": args.steps,
                    "mask": mask is not None,
                    "threads": threads,
                    "torch": torch.__version__,
                    "commit": _commit(),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
