"""Does framing the head as the embedded model saw it help inversion? Square vs oracle vs keypoints.

    python tests/bench/bench_align.py [--count 6] [--preset quality,fast] [--angles 0,15,30]
        [--threads N] [--canvas 256] [--json]

Scenes: a 64 px head — a sample of the embedded model G(w) (z from a seed, ψ 0.7: in its
distribution, so inversion can succeed) or a world image (its training data's renderer) — pasted
into a textured canvas, scaled 1.6–2.4x and turned by ±angle (alternately G and world, angles in
turn). The paste is a turned `CropBox` (the *oracle* box): the canvas pixels inside it are the
head image resampled (bicubic), the rest a random texture.

Each scene's head is inverted with `pti.invert` (as the pipeline does: crop with `layer_to_model`,
flattened, clipped) in three crops:
- square: `SquareFraming` around the head's bounding rectangle (what a user's selection gives);
- oracle: the paste's own box (the head exactly as it was generated);
- aligned: `KeypointAligner` (detector + Umeyama fit to the template, repeated until it settles).

Scored in layer space over the head region — a disc around the head estimated from its
keypoints (world: ground truth; G: the detector's): centre one half-height above the chin towards
the eyes, radius 1.1 half-heights, the half-height being the eye-to-chin distance / 1.17 —
counting only pixels that all three crops hold: the reconstruction is put back with
`layer_sampler` and compared with the canvas pixels. PSNR over those pixels, and the perceptual
distance of the head's bounding square with only those pixels replaced (LPIPS-VGG16 when its
backbone is cached, else the pyramid-L1 fallback; named in ``metric``). Diagnostics of the aligner
without inversion: the angle error against the oracle after each of the first 5 detect -> fit
rounds, and how many scenes fell back to the square.

With --json the last line is JSON: psnr_square, psnr_oracle, psnr_aligned, lpips_square,
lpips_oracle, lpips_aligned (means over scenes for the first preset; "lpips" is the distance named
in ``metric``), count, angles, metric, by_preset (the same per preset, and per angle),
angle_err_deg_by_round, angle_err_deg (of the crops the aligner chose), fallbacks, seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gimp_draggan.draggan import pti
from gimp_draggan.draggan.lpips import load_perceptual
from gimp_draggan.draggan.networks import Generator, seed_to_z
from gimp_draggan.edit.align import SquareFraming
from gimp_draggan.edit.align_embedded import KeypointAligner
from gimp_draggan.edit.geometry import CropBox, Rect
from gimp_draggan.edit.pixels import to_float
from gimp_draggan.edit.sampling import layer_sampler, layer_to_model
from gimp_draggan.faces.keypoints import detect, load_detector
from gimp_draggan_tools.train.world import render

SEED_BASE = 8_000_000
WAYS = ("square", "oracle", "aligned")
HEAD_EYE_TO_CHIN = 1.17  # Eye-to-chin distance in head half-heights (world: 1.05-1.28).
HEAD_MARGIN = 1.1  # Head disc radius in half-heights.
ROUNDS_SHOWN = 5  # Aligner rounds whose angle error is reported.


@dataclass(frozen=True)
class Scene:
    kind: str  # "G" | "world"
    angle_deg: float  # The paste's turn (`CropBox.angle` sign: + turns the head clockwise).
    layer: np.ndarray  # [H, W, 4] uint8.
    oracle: CropBox  # The paste: the head image exactly.
    centre: tuple[float, float]  # Head disc in layer edge coordinates.
    radius: float

    @property
    def needed(self) -> Rect:
        """The head disc's bounding rectangle: what a user's selection of the head gives."""
        h, w = self.layer.shape[:2]
        cx, cy = self.centre
        r = self.radius
        return Rect(
            max(0, math.floor(cx - r)),
            max(0, math.floor(cy - r)),
            min(w, math.ceil(cx + r)),
            min(h, math.ceil(cy + r)),
        )


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random two-colour background with sinusoidal texture, [size, size, 3] in [0, 1]."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    a, b = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    f1, f2 = rng.uniform(2, 6, 2), rng.uniform(10, 30, 2)
    t = 0.5 + 0.35 * np.sin(2 * np.pi * (f1[0] * x + f1[1] * y) + rng.uniform(0, 6.3))
    t += 0.15 * np.sin(2 * np.pi * f2[0] * x + rng.uniform(0, 6.3)) * np.sin(2 * np.pi * f2[1] * y)
    t = np.clip(t, 0.0, 1.0)[..., None]
    return (a * (1 - t) + b * t).astype(np.float32)


def paste(canvas: np.ndarray, image: np.ndarray, box: CropBox) -> np.ndarray:
    """``image`` ([R, R, 3], R = box.resolution) drawn into ``canvas`` so that ``box`` shows it
    exactly (bicubic, edges anti-aliased); the scene's own warp, not the daemon's crop code."""
    h, w = canvas.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    u, v = box.local(xs, ys)
    half = box.side / 2.0
    mx, my = (u + half) * box.scale, (v + half) * box.scale  # Model edge coordinates.
    r = box.resolution
    grid = torch.from_numpy(np.stack([mx / r * 2 - 1, my / r * 2 - 1], axis=-1)).float()[None]
    src = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    drawn = F.grid_sample(src, grid, mode="bicubic", padding_mode="border", align_corners=False)
    drawn_np = drawn[0].permute(1, 2, 0).numpy().clip(0, 1)
    cover = np.clip(half - np.maximum(np.abs(u), np.abs(v)) + 0.5, 0.0, 1.0)[..., None]
    return (canvas * (1 - cover) + drawn_np * cover).astype(np.float32)


def head_image(kind: str, seed: int, G: Generator, net: Any) -> tuple[np.ndarray, np.ndarray]:
    """(image [64, 64, 3] in [0, 1], 8 keypoints [8, 2] in pixel-edge coordinates)."""
    if kind == "world":
        b = render([seed], resolution=G.img_resolution)
        img, kps = b.images, b.keypoints[0]
    else:
        with torch.no_grad():
            ws = G.mapping(seed_to_z(seed, G.z_dim), truncation_psi=0.7)
            img = G.synthesis.run(ws, noise_mode="const").img.clamp(-1, 1)
        kps = detect(net, img)[0]
    return ((img[0].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1), kps.double().numpy()


def make_scene(i: int, angles: list[float], size: int, G: Generator, net: Any) -> Scene:
    rng = np.random.default_rng(SEED_BASE + i)
    kind = "G" if i % 2 == 0 else "world"
    angle_deg = angles[i % len(angles)] * (1 if rng.random() < 0.5 else -1)
    image, kps = head_image(kind, SEED_BASE + i, G, net)
    res = G.img_resolution
    side = round(res * rng.uniform(1.6, 2.4))
    a = math.radians(angle_deg)
    extent = side / 2 * (abs(math.cos(a)) + abs(math.sin(a))) + 2
    cx, cy = (rng.uniform(extent, size - extent) for _ in range(2))
    oracle = CropBox(round(cx - side / 2), round(cy - side / 2), side, size, size, res, a)
    canvas = paste(texture(rng, size), image, oracle)
    layer = np.concatenate([canvas, np.ones_like(canvas[..., :1])], axis=-1)
    layer_u8 = np.rint(layer * 255).astype(np.uint8)
    # The head ellipse's centre and half-height from the keypoints (world: the eyes sit 0.05-0.28
    # half-heights above the centre, the chin one below), in model edge coordinates.
    chin, eyes = kps[7], kps[:2].mean(axis=0)
    half = float(np.linalg.norm(eyes - chin)) / HEAD_EYE_TO_CHIN
    centre_m = chin + (eyes - chin) / np.linalg.norm(eyes - chin) * half
    ((lx, ly),) = oracle.to_layer([(centre_m[0] - 0.5, centre_m[1] - 0.5)])
    return Scene(
        kind, angle_deg, layer_u8, oracle, (lx + 0.5, ly + 0.5), HEAD_MARGIN * half / oracle.scale
    )


def region(scene: Scene, boxes: list[CropBox]) -> tuple[Rect, np.ndarray]:
    """The head disc's rectangle and the mask of its pixels that every box holds."""
    rect = scene.needed
    ys, xs = np.mgrid[rect.y0 : rect.y1, rect.x0 : rect.x1].astype(np.float64) + 0.5
    cx, cy = scene.centre
    mask = (xs - cx) ** 2 + (ys - cy) ** 2 <= scene.radius**2
    for box in boxes:
        u, v = box.local(xs, ys)
        mask &= np.maximum(np.abs(u), np.abs(v)) <= box.side / 2.0 - 0.5
    return rect, mask


def invert(
    G: Generator,
    layer: np.ndarray,
    box: CropBox,
    loss: Any,
    preset: str,
) -> tuple[np.ndarray, pti.InversionResult]:
    """The pipeline's inversion of ``box``: its reconstruction [R, R, 3] in [0, 1]."""
    target = layer_to_model(layer, box, lambda a: to_float(a, "u8")[..., :3])
    t = torch.from_numpy(np.clip(target, 0, 1)).permute(2, 0, 1)[None] * 2 - 1
    inv = pti.invert(G, t, loss, pti.preset(preset))
    with torch.no_grad():
        recon = inv.generator.synthesis.run(inv.ws, noise_mode="const").img
    return ((recon[0].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1), inv


def score(
    scene: Scene, rect: Rect, mask: np.ndarray, box: CropBox, recon: np.ndarray, loss: Any
) -> tuple[float, float]:
    """(PSNR dB over the mask, perceptual distance of the rectangle with the mask replaced)."""
    truth = to_float(scene.layer[rect.y0 : rect.y1, rect.x0 : rect.x1, :3], "u8")
    back = np.clip(layer_sampler(recon, box)(rect), 0, 1)
    mse = float(((back - truth) ** 2)[mask].mean())
    mixed = np.where(mask[..., None], back, truth)
    with torch.no_grad():
        to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None] * 2 - 1  # noqa: E731
        dist = float(loss(to_t(mixed), to_t(truth)))
    return 10 * math.log10(1.0 / max(mse, 1e-12)), dist


def turn_error(box: CropBox, oracle: CropBox) -> float:
    """|box angle - oracle angle| in degrees."""
    return math.degrees(abs(math.remainder(box.angle - oracle.angle, 2 * math.pi)))


def angle_errors(aligner: KeypointAligner, scene: Scene, rounds: int) -> list[float]:
    """The turn error of each of the first ``rounds`` detect -> fit rounds (a round after the
    aligner settled repeats the last)."""
    fits = aligner.fits(scene.layer, scene.needed, scene.oracle.resolution)[:rounds]
    d = [turn_error(f.box, scene.oracle) for f in fits]
    return d + [d[-1]] * (rounds - len(d))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=6, help="scenes (default 6)")
    ap.add_argument(
        "--preset",
        default="quality",
        help="inversion preset(s), comma-separated (default quality, the demo's)",
    )
    ap.add_argument("--angles", default="0,15,30", help="turns in degrees, comma-separated")
    ap.add_argument("--canvas", type=int, default=256, help="canvas side in pixels")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    presets = [p.strip() for p in args.preset.split(",") if p.strip()]
    angles = [float(a) for a in args.angles.split(",")]
    if args.count < 1 or not presets:
        print("error: --count must be >= 1 and --preset name at least one preset", file=sys.stderr)
        return 2
    from gimp_draggan.draggan.checkpoint import load_generator
    from gimp_draggan.models.registry import resolve

    start = time.perf_counter()
    G = load_generator(resolve("embedded")).eval().requires_grad_(False)
    net = load_detector()
    choice = load_perceptual("vgg16")
    loss = choice.loss
    print(
        f"embedded model ({G.img_resolution} px), metric {loss.name}: {choice.reason}", flush=True
    )
    scenes = [make_scene(i, angles, args.canvas, G, net) for i in range(args.count)]
    aligner = KeypointAligner()
    rows: dict[str, list[dict[str, Any]]] = {p: [] for p in presets}
    round_errs: list[list[float]] = []
    final_errs: list[float] = []
    fallbacks = 0
    for i, sc in enumerate(scenes):
        res = G.img_resolution
        boxes = {
            "square": SquareFraming().frame(sc.layer, sc.needed, res),
            "oracle": sc.oracle,
            "aligned": aligner.frame(sc.layer, sc.needed, res),
        }
        fell_back = boxes["aligned"] == boxes["square"]
        fallbacks += fell_back
        round_errs.append(angle_errors(aligner, sc, ROUNDS_SHOWN))
        if not fell_back:
            final_errs.append(turn_error(boxes["aligned"], sc.oracle))
        rect, mask = region(sc, list(boxes.values()))
        for preset in presets:
            row: dict[str, Any] = {"kind": sc.kind, "angle": abs(sc.angle_deg)}
            for way, box in boxes.items():
                recon, inv = invert(G, sc.layer, box, loss, preset)
                row[f"psnr_{way}"], row[f"lpips_{way}"] = score(sc, rect, mask, box, recon, loss)
                row[f"model_psnr_{way}"] = inv.psnr
            rows[preset].append(row)
            print(
                f"scene {i} {sc.kind:5s} {sc.angle_deg:+5.0f}° {preset:7s} "
                + "  ".join(f"{w} {row[f'psnr_{w}']:5.2f} dB {row[f'lpips_{w}']:.4f}" for w in WAYS)
                + (" (fallback)" if fell_back else f"  aligned turn error {final_errs[-1]:.1f}°"),
                flush=True,
            )

    def means(rs: list[dict[str, Any]]) -> dict[str, float]:
        return {
            f"{m}_{w}": round(statistics.fmean(r[f"{m}_{w}"] for r in rs), 4)
            for m in ("psnr", "lpips")
            for w in WAYS
        }

    by_preset: dict[str, Any] = {}
    for preset in presets:
        per_angle = {}
        print(f"\npreset {preset} ({loss.name} as 'dist'): mean per |angle|")
        print("angle   n  PSNR square  oracle  aligned   dist square  oracle  aligned")
        for a in sorted({abs(x) for x in angles}):
            rs = [r for r in rows[preset] if r["angle"] == a]
            if not rs:
                continue
            m = means(rs)
            per_angle[f"{a:g}"] = {**m, "n": len(rs)}
            print(
                f"{a:5g} {len(rs):3d}  {m['psnr_square']:11.2f} {m['psnr_oracle']:7.2f} "
                f"{m['psnr_aligned']:8.2f}   {m['lpips_square']:11.4f} {m['lpips_oracle']:7.4f} "
                f"{m['lpips_aligned']:8.4f}"
            )
        m = means(rows[preset])
        print(
            f"  all {len(rows[preset]):3d}  {m['psnr_square']:11.2f} {m['psnr_oracle']:7.2f} "
            f"{m['psnr_aligned']:8.2f}   {m['lpips_square']:11.4f} {m['lpips_oracle']:7.4f} "
            f"{m['lpips_aligned']:8.4f}"
        )
        by_preset[preset] = {**m, "by_angle": per_angle}
    errs = [round(statistics.fmean(e[k] for e in round_errs), 3) for k in range(ROUNDS_SHOWN)]
    final = round(statistics.fmean(final_errs), 3) if final_errs else None
    print(
        f"aligner turn error vs oracle after rounds 1..{ROUNDS_SHOWN}: {errs} degrees; "
        f"of the crop it chose: {final} degrees; fallbacks {fallbacks}/{len(scenes)}"
    )
    info = {
        **{k: v for k, v in by_preset[presets[0]].items() if k != "by_angle"},
        "count": len(scenes),
        "angles": angles,
        "preset": presets[0],
        "metric": loss.name,
        "metric_is_lpips": loss.is_lpips,
        "by_preset": by_preset,
        "angle_err_deg_by_round": errs,
        "angle_err_deg": final,
        "fallbacks": fallbacks,
        "seconds": round(time.perf_counter() - start, 1),
        "threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
