"""GPU path: the drag step and a full photo edit per precision mode, with peak GPU memory.

For each mode of ``--modes`` (fp32 always runs first: it is the yardstick):

- fp32: TF32 off (``torch.backends.cuda.matmul.allow_tf32`` and ``cudnn.allow_tf32`` False);
- tf32: both on, for this mode only;
- bf16 / fp16: ``torch.autocast(device_type, dtype)`` around the drag (session set-up and steps)
  and around the whole photo edit; TF32 off.

Drag: a random-weight generator in the official StyleGAN2 configuration for ``--res`` (512: z = w
= 512, 8 mapping layers, channel base 32768, channel max 512; ``--tiny``: a 32 px toy for CPU
tests), the two handle/target pairs of bench_drag.py, no mask. One warm-up step, then
``--steps`` timed steps (``torch.cuda.synchronize`` around each on CUDA); ``sec_per_step`` is
their median. Afterwards the latent is rendered in fp32 and the handles tracked on it.

Tolerance (a mode is rejected when it fails or leaves it): against fp32 after the same steps,
every handle within ``--tol-px`` (default 1) model pixel of fp32's and the final image's PSNR
(images in [-1, 1], peak-to-peak 2) at least ``--tol-psnr`` (default 30 dB), and all finite.

``--photo``: a full ``gimp_draggan.edit.pipeline.run_edit`` per mode (a fresh session cache: model
load, PTI inversion, drag, photo-true composite) on scikit-image's astronaut (512x512, the mouth
corners of eval_photo.py, an elliptic selection) with the same random generator saved to a
temporary file. A random generator's inversion is meaningless, the timing is real.
``edit_seconds`` is the edit's total; the edit's points and patch PSNR against fp32's are
reported, not judged (its trajectory through inversion and drag of a random model amplifies
any rounding). On CUDA one untimed fp32 edit runs first (kernel and allocator warm-up). A mode
whose edit fails is rejected.

``--official DIR``: the official DragGAN tree (github.com/XingangPan/DragGAN). Its
``training.networks_stylegan2.Generator`` is built with the same weights (``num_fp16_res`` 4,
``conv_clamp`` 256: the FFHQ-512 checkpoint's; fp16 blocks run only on CUDA) and
``viz.renderer.Renderer._render_drag_impl`` (with the uint8 frame copied to the host, as its
``render`` does) is timed the same way in fp32, in the same run; ``image_psnr_db_vs_ours``
checks that both generators draw the same image from the latent (fp16 blocks lower it on CUDA).
Modules the renderer imports but the step never uses (click, matplotlib, requests, ...) are
stubbed when missing. Its custom CUDA ops are built as the GUI would; ``--official-ops ref``
uses its pure-PyTorch reference ops instead (a failed build falls back to them, said so).

    python tests/bench/bench_gpu.py [--device cuda] [--res 512 | --tiny] [--steps 20]
        [--modes fp32,tf32,bf16,fp16] [--photo] [--edit-steps 200] [--official DIR]

Prints a table on stderr and one JSON line on stdout: device, device_name, torch, commit, res,
config, steps, tolerance, goals, and per mode {sec_per_step, step_ms_min, edit_seconds,
edit_timings, peak_gpu_mb, edit_peak_gpu_mb, accepted, reason, handle_dx_px, psnr_db,
edit_points_dx_px, edit_psnr_db}; ``official`` when asked. Peak memory is
``torch.cuda.max_memory_allocated`` reset per mode and phase (null on CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from gimp_draggan.device import pick_device
from gimp_draggan.draggan.drag import DragParams, DragSession, default_feature_res
from gimp_draggan.draggan.lpips import psnr
from gimp_draggan.draggan.networks import Generator, GeneratorConfig, seed_to_z
from gimp_draggan_plugin.protocol import JobRequest

MODES = ("fp32", "tf32", "bf16", "fp16")
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
OFFICIAL_CHANNEL_BASE = {256: 16384, 512: 32768, 1024: 32768}  # as bench_drag.py
TINY = dict(z_dim=32, w_dim=32, channel_base=256, channel_max=32, mapping_layers=2)
GOALS = {"res": 512, "peak_gpu_mb": 4096, "sec_per_step": 0.025, "gpu": "H100-class"}
Pair = tuple[tuple[float, float], tuple[float, float]]


def model_config(res: int, tiny: bool) -> GeneratorConfig:
    if tiny:
        return GeneratorConfig(img_resolution=res, **TINY)  # type: ignore[arg-type]
    return GeneratorConfig(img_resolution=res, channel_base=OFFICIAL_CHANNEL_BASE.get(res, 32768))


def bench_points(res: int) -> tuple[list[tuple[int, int]], list[tuple[float, float]]]:
    """bench_drag.py's two pairs, far enough apart that no short run reaches its targets."""
    s = res / 512
    handles = [(round(180 * s), round(250 * s)), (round(330 * s), round(300 * s))]
    targets = [
        (float(round(300 * s)), float(round(250 * s))),
        (float(round(330 * s)), float(round(160 * s))),
    ]
    return handles, targets


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mb(device: str) -> float | None:
    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return None


@contextlib.contextmanager
def precision(mode: str, device: str) -> Iterator[None]:
    """TF32 on for ``tf32`` only (off otherwise: cuDNN allows it by default); autocast for
    ``bf16`` / ``fp16``. Restores the flags afterwards."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    torch.backends.cudnn.allow_tf32 = mode == "tf32"
    try:
        if mode in AUTOCAST:
            with torch.autocast(device.split(":")[0], dtype=AUTOCAST[mode]):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def time_steps(step: Callable[[], object], steps: int, device: str) -> list[float]:
    """Seconds per call; the first call (warm-up) not counted."""
    step()
    _sync(device)
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def _why(e: BaseException) -> str:
    """The exception's first line and the innermost frame it came from."""
    text = f"{type(e).__name__}: {e}".strip().splitlines()[0][:300]
    frames = traceback.extract_tb(e.__traceback__)
    if frames:
        f = frames[-1]
        text += f" (at {Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno})"
    return text


# ----------------------------------------------------------------------------------------------
# Drag step.


def drag_mode(
    G: Generator, ws: torch.Tensor, pairs: tuple[list, list], mode: str, device: str, steps: int
) -> dict:
    """Time ``steps`` drag steps in ``mode``; the result rendered in fp32."""
    _reset_peak(device)
    handles, targets = pairs
    with precision(mode, device):
        session = DragSession(G, ws, handles, targets, params=DragParams())
        times = time_steps(session.step, steps, device)
    peak = _peak_mb(device)
    with precision("fp32", device):
        image, _ = session.render(track=True)
    return {
        "times": times,
        "peak": peak,
        "points": list(session.points),
        "image": image,
        "converged": session.converged(),
        "steps_done": session.steps,
    }


def judge(run: dict, base: dict, tol_px: float, tol_psnr: float) -> tuple[bool, str | None, dict]:
    """Accepted?, why not, and the figures (handle_dx_px, psnr_db) against fp32's run."""
    dx = max(math.dist(a, b) for a, b in zip(run["points"], base["points"], strict=True))
    img, ref = run["image"].float(), base["image"].float()
    finite = bool(torch.isfinite(img).all()) and all(
        math.isfinite(c) for p in run["points"] for c in p
    )
    db = float(psnr(img.clamp(-1, 1), ref.clamp(-1, 1))[0]) if finite else float("nan")
    figures = {
        "handle_dx_px": round(dx, 3) if finite else None,
        "psnr_db": round(db, 2) if math.isfinite(db) else None,
    }
    if not finite:
        return False, "non-finite image or handles", figures
    if dx > tol_px:
        return False, f"handles {dx:.2f} px from fp32's (tolerance {tol_px:g} px)", figures
    if db < tol_psnr:
        return False, f"image {db:.1f} dB PSNR vs fp32 (tolerance {tol_psnr:g} dB)", figures
    return True, None, figures


# ----------------------------------------------------------------------------------------------
# Photo edit.


def photo() -> tuple[np.ndarray, np.ndarray, list[Pair]]:
    """The astronaut (512x512), an ellipse around the mouth, its corners dragged (eval_photo.py);
    a smooth synthetic picture of the same size when scikit-image is missing."""
    from PIL import Image, ImageDraw

    try:
        from skimage import data

        rgb = data.astronaut()
    except ImportError:
        yy, xx = np.mgrid[0:512, 0:512]
        rgb = np.stack([xx / 2, yy / 2, (xx + yy) / 4], axis=-1).astype(np.uint8)
    m = Image.new("L", (512, 512), 0)
    ImageDraw.Draw(m).ellipse((160, 70, 290, 240), fill=255)
    pairs: list[Pair] = [((205.0, 147.0), (200.0, 140.0)), ((245.0, 147.0), (250.0, 140.0))]
    return rgb, np.asarray(m, np.uint8), pairs


def edit_mode(model: Path, mode: str, device: str, edit_steps: int) -> dict:
    from gimp_draggan.edit.pipeline import run_edit
    from gimp_draggan.edit.sessions import SessionCache
    from gimp_draggan.edit.types import Params
    from gimp_draggan.models.store import ModelStore

    rgb, mask, pairs = photo()
    h, w = rgb.shape[:2]
    rgba = np.dstack([rgb, np.full((h, w), 255, np.uint8)])
    request = JobRequest.photo(
        rgba.tobytes(),
        w,
        h,
        pairs,
        depth="u8",
        model=str(model),
        mask=mask.tobytes(),
        params=Params(steps=edit_steps),
    )
    _reset_peak(device)
    with precision(mode, device):
        t0 = time.perf_counter()
        r = run_edit(
            request,
            device=device,
            sessions=SessionCache(),
            models=ModelStore(any_file=True),
            on_progress=lambda p: None,
            should_stop=lambda: False,
        )
        _sync(device)
        seconds = time.perf_counter() - t0
    patch = np.frombuffer(r.patch, np.uint8).reshape(r.height, r.width, 4)
    return {
        "seconds": seconds,
        "timings": {k: round(v, 3) for k, v in r.timings.items()},
        "peak": _peak_mb(device),
        "points": list(r.points),
        "box": (r.x, r.y),
        "patch": patch,
        "distances": list(r.distances),
        "steps": r.steps,
    }


def compare_edits(run: dict, base: dict) -> dict:
    dx = max(math.dist(a, b) for a, b in zip(run["points"], base["points"], strict=True))
    db = None
    if run["box"] == base["box"] and run["patch"].shape == base["patch"].shape:
        mse = float(
            np.mean((run["patch"][..., :3].astype(np.float64) - base["patch"][..., :3]) ** 2)
        )
        db = round(10 * math.log10(255.0**2 / max(mse, 1e-12)), 2)
    finite = all(math.isfinite(d) for d in run["distances"])
    return {
        "edit_points_dx_px": round(dx, 3) if math.isfinite(dx) else None,
        "edit_psnr_db": db,
        "edit_finite": finite,
    }


# ----------------------------------------------------------------------------------------------
# The official renderer's step.


class _Stub(types.ModuleType):
    """A stand-in for a module the official renderer imports but its drag step never uses."""

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub(f"{self.__name__}.{name}")


def _import_official(tree: Path, use_ref_ops: bool) -> tuple[types.ModuleType, type, list[str]]:
    sys.path.insert(0, str(tree))
    stubbed: list[str] = []
    for _ in range(20):
        try:
            renderer = importlib.import_module("viz.renderer")
            networks = importlib.import_module("training.networks_stylegan2")
            break
        except ModuleNotFoundError as e:
            name = e.name or ""
            if not name or name in stubbed or (tree / name.split(".")[0]).exists():
                raise
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                sys.modules.setdefault(".".join(parts[:i]), _Stub(".".join(parts[:i])))
            stubbed.append(name)
    else:
        raise RuntimeError(f"too many missing modules: {stubbed}")
    if use_ref_ops:
        _official_ref_ops()
    return renderer, networks.Generator, stubbed


def _official_ref_ops() -> None:
    """Make the official tree's custom ops take their pure-PyTorch reference path."""
    for name in ("bias_act", "upfirdn2d"):
        mod = importlib.import_module(f"torch_utils.ops.{name}")
        mod._init = lambda: False  # type: ignore[attr-defined]


def official_mode(
    tree: Path,
    G: Generator,
    cfg: GeneratorConfig,
    ws: torch.Tensor,
    pairs: tuple[list, list],
    device: str,
    steps: int,
    ops: str,
) -> dict:
    """The official renderer's drag step, same weights, latent, points; fp32 flags."""
    renderer, OfficialG, stubbed = _import_official(tree, ops == "ref")
    dnnlib = importlib.import_module("dnnlib")
    og = OfficialG(
        z_dim=cfg.z_dim,
        c_dim=0,
        w_dim=cfg.w_dim,
        img_resolution=cfg.img_resolution,
        img_channels=cfg.img_channels,
        mapping_kwargs={
            "num_layers": cfg.mapping_layers,
            "lr_multiplier": cfg.mapping_lr_multiplier,
        },
        synthesis_kwargs={
            "channel_base": cfg.channel_base,
            "channel_max": cfg.channel_max,
            "num_fp16_res": 4,
            "conv_clamp": cfg.conv_clamp,
        },
    )
    og.load_state_dict({k: v.detach().cpu() for k, v in G.state_dict().items()}, strict=True)
    og = og.eval().requires_grad_(False).to(device)
    r = renderer.Renderer(disable_timing=True)
    r._device = torch.device(device)
    r.G = og
    handles, targets = pairs
    feature_idx = og.synthesis.block_resolutions.index(default_feature_res(cfg.img_resolution))
    params = DragParams()
    state = {"points": [[y, x] for x, y in handles]}  # The official code keeps [row, col].
    goal = [[y, x] for x, y in targets]

    def start() -> None:
        r.w0 = ws.detach().clone().to(device)
        r.w = ws.detach().clone().to(device).requires_grad_(True)
        r.w_optim = torch.optim.Adam([r.w], lr=params.lr)
        r.feat_refs = None
        r.points0_pt = None
        state["points"] = [[y, x] for x, y in handles]

    def step() -> None:
        res = dnnlib.EasyDict()
        r._render_drag_impl(
            res,
            points=state["points"],
            targets=goal,
            mask=None,
            r1=3,
            r2=12,
            feature_idx=feature_idx,
            is_drag=True,
        )
        res.image.cpu()  # What Renderer.render copies to the host every step.

    with torch.no_grad(), precision("fp32", device):  # Same weights? Same image.
        label = torch.zeros([1, 0], device=device)
        theirs = og(ws, label, input_is_w=True, noise_mode="const").float()
        same_db = float(psnr(theirs.clamp(-1, 1), G.synthesis(ws).clamp(-1, 1))[0])
    built = "reference (pure PyTorch)" if ops == "ref" else "as the official code builds them"
    _reset_peak(device)
    with precision("fp32", device):
        start()
        try:
            times = time_steps(step, steps, device)
        except Exception as e:  # a failed plugin build: say so, use the ref ops
            if ops == "ref" or not device.startswith("cuda"):
                raise
            _official_ref_ops()
            built = f"reference (pure PyTorch): the plugin build failed: {_why(e)}"
            _reset_peak(device)
            start()
            times = time_steps(step, steps, device)
    return {
        "sec_per_step": round(statistics.median(times), 5),
        "step_ms_min": round(min(times) * 1000, 2),
        "peak_gpu_mb": _peak_mb(device),
        "ops": built,
        "stubbed_modules": stubbed,
        "num_fp16_res": 4,
        "image_psnr_db_vs_ours": round(same_db, 2),
    }


# ----------------------------------------------------------------------------------------------


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


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    if device == "mps":
        return "Apple MPS"
    import platform

    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", help="cuda, cuda:N, cpu, mps (default: cuda when available)")
    ap.add_argument("--res", type=int, help="model resolution (default 512; 32 with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="a toy config (CPU tests)")
    ap.add_argument("--steps", type=int, default=20, help="timed drag steps (default 20)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ",".join(MODES))
    ap.add_argument("--photo", action="store_true", help="also a full photo edit per mode")
    ap.add_argument("--edit-steps", type=int, default=200, help="the edit's max drag steps")
    ap.add_argument("--official", type=Path, metavar="DIR", help="the official DragGAN tree")
    ap.add_argument("--official-ops", choices=("plugin", "ref"), default="plugin")
    ap.add_argument("--tol-px", type=float, default=1.0)
    ap.add_argument("--tol-psnr", type=float, default=30.0)
    args = ap.parse_args(argv)
    modes = ["fp32"] + [m for m in args.modes.split(",") if m and m != "fp32"]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown modes {unknown}: use {','.join(MODES)}")
    if args.steps < 1:
        ap.error("--steps must be >= 1")

    device = pick_device(args.device)
    res = args.res or (32 if args.tiny else 512)
    cfg = model_config(res, args.tiny)
    torch.manual_seed(0)
    G = Generator(cfg).eval().requires_grad_(False)
    model_file = None
    tmp = tempfile.TemporaryDirectory(prefix="bench_gpu-")
    if args.photo:
        from gimp_draggan.draggan.checkpoint import save_generator

        model_file = save_generator(G, Path(tmp.name) / f"random-{res}.safetensors")
    G = G.to(device)
    with torch.no_grad():
        ws = G.mapping(seed_to_z(0, G.z_dim).to(device), truncation_psi=0.7)
    pairs = bench_points(res)

    if model_file is not None and device.startswith("cuda"):
        edit_mode(model_file, "fp32", device, args.edit_steps)  # warm-up, not reported

    report: dict[str, dict] = {}
    base: dict | None = None
    base_edit: dict | None = None
    for mode in modes:
        row: dict = {
            "sec_per_step": None,
            "step_ms_min": None,
            "edit_seconds": None,
            "edit_timings": None,
            "peak_gpu_mb": None,
            "edit_peak_gpu_mb": None,
            "accepted": False,
            "reason": None,
            "handle_dx_px": None,
            "psnr_db": None,
        }
        try:
            run = drag_mode(G, ws, pairs, mode, device, args.steps)
            row["sec_per_step"] = round(statistics.median(run["times"]), 5)
            row["step_ms_min"] = round(min(run["times"]) * 1000, 2)
            row["peak_gpu_mb"] = run["peak"]
            if run["converged"]:
                row["note"] = "the handles reached their targets: later steps did no work"
            if base is None:
                base = run
            ok, why, figures = judge(run, base, args.tol_px, args.tol_psnr)
            row.update(figures, accepted=ok, reason=why)
        except Exception as e:  # a mode that fails is reported, not raised
            row["reason"] = f"drag failed: {_why(e)}"
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        if model_file is not None:
            try:
                ed = edit_mode(model_file, mode, device, args.edit_steps)
                row.update(
                    edit_seconds=round(ed["seconds"], 3),
                    edit_timings=ed["timings"],
                    edit_peak_gpu_mb=ed["peak"],
                )
                if base_edit is None:
                    base_edit = ed
                row.update(compare_edits(ed, base_edit))
                if not row["edit_finite"] and row["accepted"]:
                    row.update(accepted=False, reason="the edit's distances are not finite")
            except Exception as e:
                if row["accepted"] or row["reason"] is None:
                    row.update(accepted=False, reason=f"edit failed: {_why(e)}")
                else:
                    row["edit_error"] = _why(e)
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
        report[mode] = row

    official = None
    if args.official is not None:
        try:
            official = official_mode(
                args.official, G, cfg, ws, pairs, device, args.steps, args.official_ops
            )
            ours = report["fp32"]["sec_per_step"]
            if ours:
                official["ours_fp32_over_official"] = round(ours / official["sec_per_step"], 4)
        except Exception as e:
            official = {"error": _why(e)}
    tmp.cleanup()

    print(
        f"bench_gpu: {res} px, {device} ({_device_name(device)}), torch {torch.__version__}, "
        f"{args.steps} steps",
        file=sys.stderr,
    )
    print(
        f"{'mode':<6}{'ms/step':>9}{'edit s':>9}{'peak MB':>9}{'edit MB':>9}  verdict",
        file=sys.stderr,
    )
    for mode, row in report.items():
        ms = "-" if row["sec_per_step"] is None else f"{row['sec_per_step'] * 1000:.1f}"
        es = "-" if row["edit_seconds"] is None else f"{row['edit_seconds']:.2f}"
        pk = "-" if row["peak_gpu_mb"] is None else f"{row['peak_gpu_mb']:.0f}"
        ep = "-" if row["edit_peak_gpu_mb"] is None else f"{row['edit_peak_gpu_mb']:.0f}"
        verdict = "accepted" if row["accepted"] else f"rejected: {row['reason']}"
        print(f"{mode:<6}{ms:>9}{es:>9}{pk:>9}{ep:>9}  {verdict}", file=sys.stderr)
    if official is not None:
        print(f"official: {official}", file=sys.stderr)
    print(
        json.dumps(
            {
                "device": device,
                "device_name": _device_name(device),
                "torch": torch.__version__,
                "commit": _commit(),
                "res": res,
                "tiny": args.tiny,
                "config": asdict(cfg),
                "steps": args.steps,
                "edit_steps": args.edit_steps if args.photo else None,
                "tolerance": {"handle_px": args.tol_px, "psnr_db": args.tol_psnr},
                "goals": GOALS,
                "modes": report,
                "official": official,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
