"""Photo-true edits measured on real photos: is the output sharp, and did the content move?

Runs `gimp_draggan.edit.pipeline.run_edit` on public-domain photos that scikit-image ships
(astronaut: NASA; chelsea: a cat; coffee) and on a group photo composed from the astronaut's
face at three sizes, each with both blends ("photo", the default, and "generator"), and prints
one JSON line with, per case and blend:

- ``sharpness``: high-pass energy (image minus its Gaussian blur, sigma 1) over the changed
  pixels, output / input (1 = as sharp as the photo);
- ``residual``: per pair, a patch around the handle in the input (as wide as twice the drag,
  at least 9 px: the content the user grabbed) is searched for in the output by normalised
  cross-correlation; |found - target| / |handle - target| (0 = the photo's content
  arrived at the target, 1 = it did not move); ``residual_mean``, ``residual_worst``;
- ``outside_changed``: pixels changed outside the selection (must be 0);
- ``grey_chroma``: the largest |R - G|, |G - B| of the output for the photo made grey first
  (must be 0: grey stays grey);
- ``seconds`` per edit and ``composite_share`` of it; ``converged``, ``distances`` (layer px).

Run: ``python tests/bench/eval_photo.py [--steps 200] [--cases astronaut,chelsea,group]``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import replace

import numpy as np
from PIL import Image, ImageDraw
from skimage import data
from skimage.feature import match_template
from skimage.filters import gaussian

from gimp_draggan.edit.pipeline import run_edit
from gimp_draggan.edit.sessions import SessionCache
from gimp_draggan.models.store import ModelStore
from gimp_draggan_plugin.protocol import JobRequest, Params

Pair = tuple[tuple[float, float], tuple[float, float]]
MODELS = ModelStore()  # The embedded model, loaded once for every case.


def ellipse(size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    m = Image.new("L", size, 0)
    ImageDraw.Draw(m).ellipse(box, fill=255)
    return np.asarray(m, np.uint8)


def group_photo() -> tuple[np.ndarray, np.ndarray, list[Pair]]:
    """Three copies of the astronaut's head at 1.0x, 0.7x and 1.4x on a grey wall."""
    face = Image.fromarray(data.astronaut()).crop((140, 40, 310, 250))
    canvas = Image.new("RGB", (900, 420), (128, 124, 120))
    mask = Image.new("L", canvas.size, 0)
    draw = ImageDraw.Draw(mask)
    pairs: list[Pair] = []
    x = 20
    for scale in (1.0, 0.7, 1.4):
        w, h = round(170 * scale), round(210 * scale)
        canvas.paste(face.resize((w, h), Image.Resampling.LANCZOS), (x, 400 - h))
        y0 = 400 - h
        draw.ellipse((x + 20 * scale, y0 + 30 * scale, x + 150 * scale, y0 + 200 * scale), fill=255)
        # The left mouth corner (at (205, 147) in the astronaut), dragged out and up.
        hx, hy = x + (205 - 140) * scale, y0 + (147 - 40) * scale
        pairs.append(((hx, hy), (hx - 5 * scale, hy - 7 * scale)))
        x += w + 40
    return np.asarray(canvas), np.asarray(mask), pairs


def cases(names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, list[Pair]]]:
    out = {}
    if "astronaut" in names:
        out["astronaut"] = (
            data.astronaut(),
            ellipse((512, 512), (160, 70, 290, 240)),
            [((205.0, 147.0), (200.0, 140.0)), ((245.0, 147.0), (250.0, 140.0))],
        )
    if "chelsea" in names:  # The cat's nose pushed left, its left eye up.
        out["chelsea"] = (
            data.chelsea(),
            ellipse((451, 300), (100, 40, 390, 299)),
            [((262.0, 240.0), (254.0, 240.0)), ((172.0, 113.0), (172.0, 106.0))],
        )
    if "group" in names:
        out["group"] = group_photo()
    return out


def highpass_energy(img: np.ndarray, where: np.ndarray) -> float:
    f = img.astype(np.float64) / 255.0
    hp = f - gaussian(f, sigma=1.0, channel_axis=-1, preserve_range=True)
    return float(np.mean(hp[where] ** 2))


def residual(before: np.ndarray, after: np.ndarray, pair: Pair, half: int) -> float:
    """Where the patch around the handle went, relative to where it should have gone."""
    (hx, hy), (tx, ty) = pair
    grey_b, grey_a = before.mean(axis=2), after.mean(axis=2)
    x, y = round(hx), round(hy)
    patch = grey_b[y - half : y + half + 1, x - half : x + half + 1]
    reach = half + 2 * round(np.hypot(tx - hx, ty - hy)) + 4
    y0, x0 = max(0, y - reach), max(0, x - reach)
    area = grey_a[y0 : y + reach + 1, x0 : x + reach + 1]
    ncc = match_template(area, patch)
    iy, ix = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
    # Sub-pixel peak (parabola through the neighbours).
    fx, fy = float(ix), float(iy)
    if 0 < ix < ncc.shape[1] - 1:
        a, b, c = ncc[iy, ix - 1], ncc[iy, ix], ncc[iy, ix + 1]
        fx += 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c < 0 else 0.0
    if 0 < iy < ncc.shape[0] - 1:
        a, b, c = ncc[iy - 1, ix], ncc[iy, ix], ncc[iy + 1, ix]
        fy += 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c < 0 else 0.0
    found = (x0 + fx + half, y0 + fy + half)
    return float(np.hypot(found[0] - tx, found[1] - ty) / np.hypot(tx - hx, ty - hy))


def edit(
    rgb: np.ndarray,
    mask: np.ndarray,
    pairs: list[Pair],
    blend: str,
    params: Params,
    sessions: SessionCache,
) -> tuple[np.ndarray, dict]:
    h, w = rgb.shape[:2]
    rgba = np.dstack([rgb, np.full((h, w), 255, np.uint8)])
    request = JobRequest.photo(
        rgba.tobytes(),
        w,
        h,
        pairs,
        depth="u8",
        model="embedded",
        mask=mask.tobytes(),
        params=replace(params, blend=blend),
    )
    r = run_edit(
        request,
        device="cpu",
        sessions=sessions,
        models=MODELS,
        on_progress=lambda p: None,
        should_stop=lambda: False,
    )
    out = rgba.copy()
    out[r.y : r.y + r.height, r.x : r.x + r.width] = np.frombuffer(r.patch, np.uint8).reshape(
        r.height, r.width, 4
    )
    return out[:, :, :3], {
        "seconds": r.timings["total"],
        "composite_share": r.timings.get("composite", 0.0) / r.timings["total"],
        "converged": r.converged,
        "distances": [round(d, 2) for d in r.distances],
        "worse": r.worse,
    }


def measure(
    name: str,
    rgb: np.ndarray,
    mask: np.ndarray,
    pairs: list[Pair],
    blend: str,
    params: Params,
    save: str | None,
) -> dict:
    sessions = SessionCache()
    out, info = edit(rgb, mask, pairs, blend, params, sessions)
    if save:
        Image.fromarray(out).save(f"{save}/{name}-{blend}.png")
    changed = np.any(out != rgb, axis=2)
    sharp = (
        highpass_energy(out, changed) / max(highpass_energy(rgb, changed), 1e-12)
        if changed.any()
        else None
    )
    res = [residual(rgb, out, p, max(4, math.ceil(math.dist(*p)))) for p in pairs]
    grey = np.repeat(rgb.mean(axis=2, keepdims=True).round().astype(np.uint8), 3, axis=2)
    grey_out, _ = edit(grey, mask, pairs, blend, params, SessionCache())
    chroma = int(
        max(
            np.abs(grey_out[:, :, 0].astype(int) - grey_out[:, :, 1]).max(),
            np.abs(grey_out[:, :, 1].astype(int) - grey_out[:, :, 2]).max(),
        )
    )
    return {
        "sharpness": None if sharp is None else round(sharp, 3),
        "residual": [round(r, 3) for r in res],
        "residual_mean": round(statistics.mean(res), 3),
        "residual_worst": round(max(res), 3),
        "outside_changed": int((changed & (mask == 0)).sum()),
        "changed": int(changed.sum()),
        "grey_chroma": chroma,
        "seconds": round(info["seconds"], 2),
        "composite_share": round(info["composite_share"], 3),
        "converged": info["converged"],
        "distances": info["distances"],
        "worse": info["worse"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=None, help="drag step size (default: the model's)")
    ap.add_argument("--cases", default="astronaut,chelsea,group")
    ap.add_argument("--blends", default="photo,generator")
    ap.add_argument("--save", metavar="DIR", help="write each output PNG here")
    args = ap.parse_args(argv)
    params = Params(steps=args.steps) if args.lr is None else Params(steps=args.steps, lr=args.lr)
    report: dict[str, dict] = {}
    for name, (rgb, mask, pairs) in cases(args.cases.split(",")).items():
        for blend in args.blends.split(","):
            report[f"{name}/{blend}"] = measure(name, rgb, mask, pairs, blend, params, args.save)
            print(name, blend, report[f"{name}/{blend}"], file=sys.stderr, flush=True)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
