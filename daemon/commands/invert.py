"""`gimp-draggan invert`: PTI-invert an image and write the tuned generator's reconstruction.

An image of another size is brought to the model's resolution first: for a face model
(models.json ``"alignment": "ffhq"``) the largest face is cut out as FFHQ frames it, otherwise (or
when no face is found) the image is centre-cropped to a square and resized (Lanczos); ``framing`` in
the --json line says which. The perceptual distance is LPIPS when its backbone is in the model
cache, else the download-free pyramid-L1 fallback; the output says which (``loss`` in the --json
line, whose ``lpips`` key holds the distance reached under that loss).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gimp_draggan import threads
from gimp_draggan.commands.drag import threads_argument

if TYPE_CHECKING:
    import numpy as np

PROGRESS_EVERY = 10  # Print every N inversion steps.


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "invert",
        help="invert a photo into a model (PTI) and write the reconstruction",
        description=(
            "PTI inversion: W projection, then pivotal tuning of a copy of the generator. "
            "IN.png of another size than the model's is brought to the model resolution: for a "
            "face model the largest face is cut out as FFHQ frames it, otherwise (or with no "
            "face found) it is centre-cropped to a square and resized (Lanczos)."
        ),
    )
    parser.add_argument("image", metavar="IN.png", help="image to invert (RGB; alpha is ignored)")
    parser.add_argument(
        "--model",
        default="embedded",
        metavar="NAME|FILE",
        help="model name from `gimp-draggan models list`, or a .pkl/.safetensors file "
        "(default: embedded)",
    )
    parser.add_argument(
        "--preset", choices=("fast", "quality"), default="fast", help="fast (default) or quality"
    )
    parser.add_argument(
        "--backbone",
        choices=("vgg16", "alexnet"),
        default="vgg16",
        help="LPIPS backbone, used when cached (default vgg16, as PTI)",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:N, mps (default: auto)")
    parser.add_argument(
        "--threads",
        type=threads_argument,
        metavar="N",
        help="torch CPU threads (default: the cores free now; also $GIMP_DRAGGAN_THREADS)",
    )
    parser.add_argument("--json", action="store_true", help="last line: JSON summary")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="RECON.png",
        help="reconstruction, at the model resolution",
    )
    parser.set_defaults(func=run)


def load_image(path: str | Path) -> np.ndarray:
    """Any Pillow-readable image -> float32 ``[H, W, 3]`` in [0, 1] (8/16-bit, grey or colour;
    alpha ignored), refused past the daemon's size limits (`imagefile.read_image`)."""
    import numpy as np

    from gimp_draggan.headless.imagefile import read_image

    image = read_image(path)
    scale = np.float32(1.0 / (65535.0 if image.depth == "u16" else 255.0))
    return image.rgba[:, :, :3].astype(np.float32) * scale


def fit_square(img: np.ndarray, size: int) -> tuple[np.ndarray, bool]:
    """Centre-crop ``[H, W, 3]`` to a square and Lanczos-resize to ``size``; True if changed."""
    import numpy as np
    from PIL import Image

    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img, False
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = img[top : top + side, left : left + side]
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(square[:, :, c]), mode="F").resize(
                (size, size), Image.Resampling.LANCZOS
            )
        )
        for c in range(3)
    ]
    return np.stack(channels, axis=2).clip(0.0, 1.0), True


_FRAMED = {"none": "", "square": ", centre-cropped and resized", "ffhq": ", face aligned as FFHQ"}


def frame_face(img: np.ndarray, model: str, size: int) -> tuple[np.ndarray, str | None]:
    """For a face model (models.json ``"alignment"``) and an image not already at ``size``: the
    largest face cut out as FFHQ frames it, ``[size, size, 3]``, and "ffhq"; else the image
    unchanged and None (the caller centre-crops)."""
    import numpy as np

    from gimp_draggan.edit.align import FaceAligner
    from gimp_draggan.edit.geometry import Rect
    from gimp_draggan.edit.sampling import model_view
    from gimp_draggan.models.store import ModelStore

    h, w = img.shape[:2]
    aligner = ModelStore(any_file=True).aligner(model)
    if (h, w) == (size, size) or not isinstance(aligner, FaceAligner):
        return img, None
    layer = np.dstack([img, np.ones((h, w), np.float32)]).astype(np.float32)
    found = aligner.locate_subject(layer, Rect(0, 0, w, h), size)
    if found is None:
        return img, None
    return model_view(layer, "f32", found.box), "ffhq"


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    from gimp_draggan.headless.argcheck import check_output

    if not Path(args.image).expanduser().is_file():
        return _fail(f"IN.png {args.image}: no such file")
    try:
        check_output(args.output, [args.image])
        return _run(args)
    except ValueError as e:  # unreadable image, unknown model, bad device, ...
        return _fail(str(e))


def _run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from gimp_draggan.atomic import save_image
    from gimp_draggan.device import pick_device
    from gimp_draggan.draggan import pti
    from gimp_draggan.draggan.checkpoint import load_generator
    from gimp_draggan.draggan.lpips import load_perceptual
    from gimp_draggan.draggan.networks import to_uint8
    from gimp_draggan.models.registry import resolve

    start = time.perf_counter()
    img = load_image(args.image)
    device = pick_device(args.device)
    if device == "cpu":
        threads.apply(args.threads)
    G = load_generator(resolve(args.model)).to(device).eval().requires_grad_(False)
    res = G.img_resolution
    img, framing = frame_face(img, args.model, res)
    resized = framing is not None
    if framing is None:
        img, resized = fit_square(img, res)
        framing = "square" if resized else "none"
    target = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None] * 2.0 - 1.0
    choice = load_perceptual(args.backbone)
    params = pti.preset(args.preset)
    print(
        f"invert: {args.image} -> {args.model} ({res}x{res}{_FRAMED[framing]}), "
        f"preset {args.preset}, "
        f"device {device}, loss {choice.loss.name}: {choice.reason}",
        flush=True,
    )

    def on_step(_phase: str, step: int, total: int) -> None:
        if step % PROGRESS_EVERY == 0 or step == total:
            print(f"invert step {step}/{total}", flush=True)

    result = pti.invert(G, target.to(device), choice.loss, params, on_step=on_step)
    with torch.no_grad():
        recon = result.generator.synthesis.run(result.ws, noise_mode="const").img
    assert recon is not None
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(Image.fromarray(to_uint8(recon.cpu())[0].numpy()), out)
    seconds = time.perf_counter() - start
    what = "LPIPS" if choice.loss.is_lpips else "distance (not LPIPS)"
    print(
        f"done in {seconds:.1f} s, {result.steps} steps ({result.projection_steps} projection + "
        f"{result.tuning_steps} tuning): PSNR {result.psnr:.2f} dB, {what} "
        f"{result.distance:.4f} [{result.loss_name}]; wrote {out}",
        flush=True,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "seconds": round(seconds, 3),
                    "psnr": round(result.psnr, 3),
                    "lpips": round(result.distance, 5),
                    "steps": result.steps,
                    "loss": result.loss_name,
                    "loss_is_lpips": choice.loss.is_lpips,
                    "projection_steps": result.projection_steps,
                    "tuning_steps": result.tuning_steps,
                    "projection_psnr": round(result.projection_psnr, 3),
                    "invert_seconds": round(result.seconds, 3),
                    "preset": args.preset,
                    "model": str(args.model),
                    "resolution": res,
                    "resized": resized,
                    "framing": framing,
                    "device": device,
                    "output": str(out),
                }
            )
        )
    return 0
