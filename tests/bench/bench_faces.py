"""How long finding the face that holds the handles takes, and what the layer pyramid saves.

    python tests/bench/bench_faces.py [--threads N] [--repeat 3] [--json]

Layers: scikit-image's astronaut (512 px, the face ~25 % of it) and a 6000 x 4000 layer holding
the astronaut shrunk to 180 px on a noise background (a face in a group photo). For each, the
median time of `faces.find_faces` around the nose, reading windows straight from the layer
(`crop.model_view`) and through a `pyramid.LayerPyramid` (what `align.FaceAligner` uses; the
pyramid is built inside the timed call, as for a fresh request), and how far apart the two
readings put the eyes (layer pixels).

With --json the last line is JSON: per layer ``direct_s``, ``pyramid_s``, ``ratio``,
``eye_shift_px``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def _layers() -> dict[str, tuple[np.ndarray, tuple[int, int, int, int]]]:
    import skimage.data
    from PIL import Image

    img = skimage.data.astronaut()
    photo = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    rng = np.random.default_rng(0)
    big = np.empty((4000, 6000, 4), np.uint8)
    big[..., :3] = rng.integers(0, 256, (4000, 6000, 3), dtype=np.uint8)
    big[..., 3] = 255
    big[1000:1180, 3000:3180, :3] = np.asarray(Image.fromarray(img).resize((180, 180)))
    return {
        "astronaut_512": (photo, (238, 123, 253, 132)),
        "group_6000x4000": (big, (3080, 1060, 3096, 1070)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from gimp_draggan.edit.geometry import Rect
    from gimp_draggan.edit.pyramid import LayerPyramid
    from gimp_draggan.edit.sampling import model_view
    from gimp_draggan.faces import find_faces

    torch.set_num_threads(args.threads)
    report: dict[str, dict[str, float]] = {}
    for name, (layer, around) in _layers().items():
        h, w = layer.shape[:2]
        rect = Rect(*around)
        find_faces(lambda b, lay=layer: model_view(lay, "u8", b), w, h, rect)  # load models
        times: dict[str, list[float]] = {"direct": [], "pyramid": []}
        eyes = {}
        for _ in range(args.repeat):
            for how in times:
                t0 = time.perf_counter()
                read = (
                    LayerPyramid(layer, "u8").read
                    if how == "pyramid"
                    else (lambda b, lay=layer: model_view(lay, "u8", b))
                )
                faces = find_faces(read, w, h, rect)
                times[how].append(time.perf_counter() - t0)
                if not faces:
                    raise SystemExit(f"{name}: no face found reading {how}")
                eyes[how] = np.array([faces[0].eye_left, faces[0].eye_right])
        direct, pyramid = (statistics.median(times[k]) for k in ("direct", "pyramid"))
        shift = float(np.abs(eyes["direct"] - eyes["pyramid"]).max())
        report[name] = {
            "direct_s": round(direct, 4),
            "pyramid_s": round(pyramid, 4),
            "ratio": round(pyramid / direct, 3),
            "eye_shift_px": round(shift, 2),
        }
        print(
            f"{name}: direct {direct:.3f} s, pyramid {pyramid:.3f} s "
            f"(x{pyramid / direct:.2f}), eyes moved {shift:.2f} px"
        )
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
