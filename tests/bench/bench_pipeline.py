"""The photo pipeline's own cost on a big layer: crop in, composite out (no model).

For a W x H RGBA 8-bit layer and a square selection of a given side, times the crop digest
(session lookup), the crop to the model resolution, the generator blend's composite of a
model-sized result back into the layer (change map included), and the photo-true warp
(`warp_composite`: a smooth motion bump of 3 model px over the middle half of the box, with a
patch of no confidence that takes the generator's pixels), and records the peak numpy memory of
each (Python's tracemalloc sees numpy's buffers). Yardstick in the same run: one copy of the
whole layer.

    python tests/bench/bench_pipeline.py [--width 8000] [--height 6000] [--res 512]
        [--angles 0 20] [--json]

Each selection is measured with the crop square turned by each of ``--angles`` (degrees; a face
model's FFHQ crop is turned by the head's tilt, `CropBox.angle`).

`--json` prints, last, one line with a record per selection side and angle: `side`, `angle`,
`digest_ms`, `crop_ms`, `composite_ms`, `warp_ms`, `crop_peak_mb`, `composite_peak_mb`,
`warp_peak_mb`, `patch_mb`, plus `layer_mb` and `memcpy_ms`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from gimp_draggan.edit.composite import change_weight, composite
from gimp_draggan.edit.geometry import Rect, choose_box
from gimp_draggan.edit.pixels import to_float
from gimp_draggan.edit.sampling import layer_to_model
from gimp_draggan.edit.sessions import crop_digest
from gimp_draggan.edit.warp import LayerField, warp_composite


def bump_field(box: Any) -> LayerField:
    """A smooth motion of up to 3 model px over the middle of ``box``, no confidence in a
    small patch at its centre (content 'revealed' there)."""
    r = box.resolution
    g = np.arange(r, dtype=np.float32) - (r - 1) / 2
    bump = 3.0 * np.exp(-(g[None, :] ** 2 + g[:, None] ** 2) / (2 * (r / 6) ** 2))
    flow = np.dstack([bump, 0.5 * bump]).astype(np.float32)
    conf = np.ones((r, r), np.float32)
    conf[r // 2 - r // 32 : r // 2 + r // 32, r // 2 - r // 32 : r // 2 + r // 32] = 0.0
    return LayerField(flow=flow, confidence=conf, box=box)


def _measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, milliseconds, peak MB of numpy/Python allocations) of one call."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        out = fn()
        ms = (time.perf_counter() - t0) * 1000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, ms, peak / 2**20


def bench(
    width: int, height: int, res: int, sides: list[int], angles: list[float]
) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    layer = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    layer[..., 3] = 255
    t0 = time.perf_counter()
    np.copy(layer)
    memcpy_ms = (time.perf_counter() - t0) * 1000
    records = []
    for side, degrees in ((s, d) for s in sides for d in angles):
        x0, y0 = (width - side) // 2, (height - side) // 2
        needed = Rect(x0, y0, x0 + side, y0 + side)
        selection = np.zeros((height, width), np.uint8)
        selection[y0 : y0 + side, x0 : x0 + side] = 255
        box = replace(choose_box(needed, width, height, res), angle=math.radians(degrees))
        _, digest_ms, _ = _measure(lambda box=box: crop_digest(layer, "u8", box))
        target, crop_ms, crop_peak = _measure(
            lambda box=box: layer_to_model(layer[:, :, :3], box, lambda a: to_float(a, "u8"))
        )
        result = np.clip(target + 0.1, 0, 1).astype(np.float32)

        def blend(box=box, selection=selection, target=target, result=result) -> Any:
            change = change_weight(result, target, 0.04, max(1, res // 32))
            return composite(layer, "u8", box, result, selection, change=change)

        patch, composite_ms, composite_peak = _measure(blend)
        field = bump_field(box)
        _, warp_ms, warp_peak = _measure(
            lambda field=field, selection=selection, result=result: warp_composite(
                layer, "u8", field, result, selection
            )
        )
        records.append(
            {
                "side": side,
                "angle": degrees,
                "box": box.side,
                "digest_ms": round(digest_ms, 1),
                "crop_ms": round(crop_ms, 1),
                "composite_ms": round(composite_ms, 1),
                "warp_ms": round(warp_ms, 1),
                "crop_peak_mb": round(crop_peak, 1),
                "composite_peak_mb": round(composite_peak, 1),
                "warp_peak_mb": round(warp_peak, 1),
                "patch_mb": round(patch.pixels.nbytes / 2**20, 1),
            }
        )
    return {
        "width": width,
        "height": height,
        "res": res,
        "layer_mb": round(layer.nbytes / 2**20, 1),
        "memcpy_ms": round(memcpy_ms, 1),
        "records": records,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=int, default=8000)
    p.add_argument("--height", type=int, default=6000)
    p.add_argument("--res", type=int, default=512, help="model resolution")
    p.add_argument(
        "--sides", type=int, nargs="+", default=[600, 4000], help="selection sides to measure"
    )
    p.add_argument(
        "--angles",
        type=float,
        nargs="+",
        default=[0.0],
        help="turns of the crop square to measure, degrees",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    out = bench(args.width, args.height, args.res, args.sides, args.angles)
    print(
        f"layer {out['width']}x{out['height']} RGBA u8 ({out['layer_mb']} MB), "
        f"model {args.res} px, one layer copy {out['memcpy_ms']} ms"
    )
    print(
        "selection  angle  box    digest ms  crop ms  composite ms  warp ms  crop peak MB  "
        "composite peak MB  warp peak MB  patch MB"
    )
    for r in out["records"]:
        print(
            f"{r['side']:9d}  {r['angle']:5g}  {r['box']:5d}  {r['digest_ms']:9.1f}  "
            f"{r['crop_ms']:7.1f}  {r['composite_ms']:12.1f}  {r['warp_ms']:7.1f}  "
            f"{r['crop_peak_mb']:12.1f}  {r['composite_peak_mb']:17.1f}  "
            f"{r['warp_peak_mb']:12.1f}  {r['patch_mb']:8.1f}"
        )
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
