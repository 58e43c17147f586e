"""Export a training run's EMA generator as the shipped ``embedded`` model, with pictures.

``python -m gimp_draggan_tools.train.export --run runs/embedded`` writes
``daemon/assets/embedded.safetensors`` + ``embedded.json`` (``checkpoint.save_generator`` format,
provenance: steps, images seen, wall time, hardware, commit, quality), the model card's sample grid
and an interpolation strip (``docs/images/``), and prints the provenance as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "daemon" / "assets" / "embedded.safetensors"
DEFAULT_IMG = REPO / "docs" / "images"


def load_run_generator(run: Path, snapshot: str | None = None) -> tuple[Any, dict[str, Any]]:
    """G_ema of ``run`` (its newest ``ema/ema-*.pt`` snapshot, or the one named) + its counters."""
    import torch

    from gimp_draggan.draggan.networks import Generator
    from gimp_draggan_tools.train.trainer import TrainConfig

    if snapshot:
        path = run / "ema" / snapshot
    else:
        snaps = sorted((run / "ema").glob("ema-*.pt"))
        if not snaps:
            raise FileNotFoundError(f"{run}/ema has no ema-*.pt snapshot; has the run saved one?")
        path = snaps[-1]
    state = torch.load(path, map_location="cpu", weights_only=True)
    cfg = TrainConfig(**state["config"])
    G = Generator(cfg.generator_config())
    G.load_state_dict(state["G_ema"])
    info = {
        "snapshot": path.name,
        "steps": int(state["step"]),
        "images_seen": int(state["nimg"]),
        "wall_time_s": round(float(state["wall"]), 1),
        "train_config": state["config"],
    }
    return G.eval().requires_grad_(False), info


def sample_grid(
    G: Any,
    path: Path,
    rows: int = 6,
    cols: int = 10,
    psi: float = 1.0,
    seed: int = 2024,
    scale: int = 2,
) -> None:
    """Random samples (constant noise), ``scale``x nearest-neighbour enlarged."""
    import torch
    from PIL import Image

    from gimp_draggan_tools.train.world import grid

    z = torch.randn([rows * cols, G.z_dim], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        img = G(z, truncation_psi=psi, noise_mode="const").clamp(-1, 1)
    pic = Image.fromarray(grid(img, cols))
    pic.resize((pic.width * scale, pic.height * scale), Image.Resampling.NEAREST).save(path)


def interpolation_strip(
    G: Any,
    path: Path,
    rows: int = 5,
    steps: int = 10,
    psi: float = 0.7,
    seed: int = 7,
    scale: int = 2,
) -> None:
    """Each row: linear interpolation in w between two random latents (the drag space)."""
    import torch
    from PIL import Image

    from gimp_draggan_tools.train.world import grid

    z = torch.randn([2 * rows, G.z_dim], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ws = G.mapping(z, truncation_psi=psi)
        t = torch.linspace(0, 1, steps).reshape(1, steps, 1, 1)
        mix = ws[0::2, None].lerp(ws[1::2, None], t).reshape(rows * steps, *ws.shape[1:])
        img = G.synthesis(mix, noise_mode="const").clamp(-1, 1)
    pic = Image.fromarray(grid(img, steps))
    pic.resize((pic.width * scale, pic.height * scale), Image.Resampling.NEAREST).save(path)


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m gimp_draggan_tools.train.export",
        description="Export a run's EMA generator as the embedded model.",
    )
    p.add_argument("--run", default=str(REPO / "runs" / "embedded"), help="training output folder")
    p.add_argument("--snapshot", default=None, help="ema-KKKKKK.pt name (default: newest)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="weights file (.safetensors)")
    p.add_argument("--img-dir", default=str(DEFAULT_IMG), help="where the pictures go")
    p.add_argument("--quality-n", type=int, default=2000, help="samples for quality (0 = skip)")
    p.add_argument("--hardware", default=None, help="text for the provenance (default: this CPU)")
    a = p.parse_args(argv)

    import torch

    from gimp_draggan.draggan.checkpoint import save_generator
    from gimp_draggan.faces.keypoints import ASSET, load_detector
    from gimp_draggan_tools.train.quality import measure_generator

    try:
        G, info = load_run_generator(Path(a.run), a.snapshot)
    except (FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    hardware = a.hardware or (
        f"{platform.machine()} CPU, {os.cpu_count()} cores (shared), torch {torch.__version__}"
    )
    prov: dict[str, Any] = {
        **info,
        "hardware": hardware,
        "commit": _commit(),
        "data": "gimp_draggan_tools.train.world (procedural cartoon heads)",
    }
    if a.quality_n > 0 and ASSET.is_file():
        q = measure_generator(G, load_detector(ASSET), n=a.quality_n)
        prov["quality"] = asdict(q)
    img_dir = Path(a.img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    sample_grid(G, img_dir / "embedded_grid.png")
    interpolation_strip(G, img_dir / "embedded_interp.png")
    save_generator(G, a.out, provenance=prov)
    print(json.dumps(prov))
    return 0


if __name__ == "__main__":
    sys.exit(main())
