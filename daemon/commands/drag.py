"""`gimp-draggan drag`: drag points of an image the model generates from a seed.

The official GUI's mode (`networks.seed_ws`): z = RandomState(seed).randn(1, z_dim), w = mapping(z)
with psi 0.7, optimised as w+. Points are pixels of the model resolution, x = column, y = row.

The pieces other forms of this command reuse: `parse_pair` / `pair_argument` (the -p syntax),
`load_mask`, `ProgressPrinter`, `summary` (the --json line), `add_drag_options` (the options
every form shares) and `drag_and_report` (run a session, print, save, summarise).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gimp_draggan import threads
from gimp_draggan.headless import argcheck
from gimp_draggan.headless.remote import add_daemon_option, run_remote
from gimp_draggan.terminal import median_step_seconds
from gimp_draggan_plugin import protocol as P

if TYPE_CHECKING:
    import numpy as np

    from gimp_draggan.draggan.drag import DragResult, DragSession, StepReport

LOCAL_MODEL = "embedded"  # --model's default without --daemon: the model shipped in the package.


def parse_pair(text: str) -> P.Pair:
    """``"X,Y:TX,TY"`` -> ((x, y), (tx, ty)); ValueError naming what is wrong."""
    parts = text.split(":")
    if len(parts) != 2:
        raise ValueError(f"{text!r}: expected HANDLE:TARGET as X,Y:TX,TY, e.g. 120,200:160,200")
    points = []
    for name, part in zip(("handle", "target"), parts, strict=True):
        xy = part.split(",")
        if len(xy) != 2:
            raise ValueError(f"{text!r}: the {name} {part!r} must be X,Y (two numbers)")
        try:
            x, y = float(xy[0]), float(xy[1])
        except ValueError:
            raise ValueError(f"{text!r}: the {name} {part!r} must be two numbers X,Y") from None
        points.append((x, y))
    return points[0], points[1]


def pair_argument(text: str) -> P.Pair:
    """argparse ``type=`` for -p: the same parse, reported as a usage error."""
    try:
        return parse_pair(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def load_mask(path: str | Path, width: int, height: int) -> np.ndarray:
    """A greyscale image -> float32 ``[H, W]`` in [0, 1]; white (1) = may move."""
    import numpy as np

    from gimp_draggan.headless.imagefile import read_mask

    grey = np.frombuffer(read_mask(path, width, height), np.uint8).reshape(height, width)
    return grey.astype(np.float32) / 255.0


def sec_per_step(reports: list[StepReport]) -> float | None:
    """Median seconds per optimiser step, the first two (warm-up) excluded when there are more."""
    return median_step_seconds([r.step_seconds for r in reports if r.optimised])


def _fmt_points(points: list[P.Point]) -> str:
    return " ".join(f"({x:g},{y:g})" for x, y in points)


class ProgressPrinter:
    """Prints one line per step (and the previews' step numbers) to ``stream``."""

    def __init__(self, max_steps: int, stream: Any = None) -> None:
        self.max_steps = max_steps
        self.stream = stream or sys.stdout

    def __call__(self, r: StepReport) -> None:
        dist = " ".join(f"{d:.1f}" for d in r.distances)
        state = f"loss {r.loss:.4f}" if r.loss is not None else "done"
        print(
            f"step {r.step:4d}/{self.max_steps}  {state}  handles {_fmt_points(r.points)}  "
            f"dist {dist}  {r.step_seconds:.3f} s",
            file=self.stream,
            flush=True,
        )


def summary(result: DragResult, device: str, **extra: Any) -> dict[str, Any]:
    """The --json line: steps, sec_per_step, points, distances, device, then ``extra``."""
    spp = sec_per_step(result.reports)
    return {
        "steps": result.steps,
        "sec_per_step": None if spp is None else round(spp, 6),
        "points": [[x, y] for x, y in result.points],
        "distances": [round(d, 4) for d in result.distances],
        "device": device,
        "converged": result.converged,
        "cancelled": result.cancelled,
        **extra,
    }


def add_drag_options(parser: argparse.ArgumentParser) -> None:
    """Options every form of `drag` shares."""
    parser.add_argument(
        "--model",
        metavar="FILE_OR_NAME",
        help="model name from `gimp-draggan models list`, or a .pkl/.safetensors file (default: "
        f"{LOCAL_MODEL}; with --daemon the daemon's default model)",
    )
    parser.add_argument(
        "-p",
        "--pair",
        dest="pairs",
        action="append",
        type=pair_argument,
        required=True,
        metavar="X,Y:TX,TY",
        help="handle X,Y dragged to target TX,TY (pixels); repeatable",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=200,
        metavar="N",
        help=f"maximum optimiser steps, {_range('steps')} (default 200; stops earlier when "
        "every handle is there)",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"Adam learning rate, {_range('lr')} (default: the model's; the "
        "paper's 2e-3, 5e-3 for the embedded model)",
    )
    parser.add_argument(
        "--blend",
        choices=("photo", "generator"),
        default="photo",
        help="photo form: what fills the edit — photo (default): the photo's own pixels moved "
        "along the drag's motion; generator: the model's image (blurrier; for comparison)",
    )
    parser.add_argument(
        "--mask",
        metavar="M.png",
        help="greyscale image, white = may move, black = keep; photo form: the image's size, "
        "seed form: the model's",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:N, mps (default: auto)")
    parser.add_argument(
        "--threads",
        type=threads_argument,
        metavar="N",
        help="torch CPU threads (default: the cores free now; also $GIMP_DRAGGAN_THREADS)",
    )
    parser.add_argument("--json", action="store_true", help="last line: JSON summary")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.png", help="result image")


def threads_argument(text: str) -> int:
    """argparse ``type=`` for --threads: a whole number >= 1, as a usage error otherwise."""
    try:
        value = threads.parse_threads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    assert value is not None
    return value


def _range(name: str) -> str:
    spec = next(p for p in P.PARAMS if p.name == name)
    return f"{spec.lo:g} to {spec.hi:g}"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "drag",
        help="drag points of a photo or of a generated image (DragGAN)",
        description=(
            "Drag handle points to targets. Photo form (IN.png): crop, PTI inversion, drag and "
            "composite on the full-size image; points and --mask are in the image's pixels. "
            "Seed form (--seed): the image a model generates "
            "(z = RandomState(seed).randn(1, z_dim), psi 0.7, optimised as w+); points are "
            "pixels of the model resolution. x = column, y = row."
        ),
    )
    parser.add_argument(
        "image", nargs="?", metavar="IN.png", help="photo to edit (omit for the --seed form)"
    )
    parser.add_argument("--seed", type=int, help="generate the start image from this seed")
    add_drag_options(parser)
    add_daemon_option(parser)
    parser.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def drag_and_report(
    session: DragSession, args: argparse.Namespace, device: str, **extra: Any
) -> int:
    """Run ``session`` to the stop rule or --steps, print progress, save -o, print the summary."""
    from PIL import Image

    from gimp_draggan.atomic import save_image
    from gimp_draggan.draggan.networks import to_uint8

    start = time.perf_counter()
    result = session.run(max_steps=args.steps, on_step=ProgressPrinter(args.steps))
    seconds = time.perf_counter() - start
    pixels = to_uint8(result.image)[0].numpy()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels), out)
    info = summary(result, device, seconds=round(seconds, 3), output=str(out), **extra)
    print(
        f"{'done' if result.converged else 'stopped'} after {result.steps} steps: handles "
        f"{_fmt_points(result.points)}, wrote {out}"
    )
    if args.json:
        print(json.dumps(info))
    return 0


def check_args(args: argparse.Namespace) -> str | None:
    """Every argument, before any work: the one-line error, or None. (The points' bounds need the
    image's or the model's size and are checked once that is known.)"""
    if args.seed is None and args.image is None:
        return "give --seed N (edit a generated image) or IN.png (a photo to edit)"
    if args.image is not None and args.seed is not None:
        return "give either IN.png (a photo) or --seed N (a generated image), not both"
    try:
        argcheck.check_daemon(args.daemon)
        argcheck.check_params(steps=args.steps, lr=args.lr, blend=args.blend)
        argcheck.check_seed(args.seed)
        argcheck.check_pairs(args.pairs)
        for name, path in (("IN.png", args.image), ("--mask", args.mask)):
            if path is not None and not Path(path).expanduser().is_file():
                return f"{name} {path}: no such file"
        argcheck.check_output(args.output, [args.image, args.mask])
    except ValueError as exc:
        return str(exc)
    return None


def run(args: argparse.Namespace) -> int:
    problem = check_args(args)
    if problem:
        return _fail(problem)
    if args.daemon is not None:
        return run_remote(args, image_path=args.image)
    if args.model is None:
        args.model = LOCAL_MODEL
    if args.image is not None:
        from gimp_draggan.headless.photo import run_photo

        return run_photo(args)
    try:
        return _run_seed(args)
    except ValueError as e:  # bad points, mask, model file, device, ...
        return _fail(str(e))


def _run_seed(args: argparse.Namespace) -> int:
    import torch

    from gimp_draggan.device import pick_device
    from gimp_draggan.draggan.drag import DragParams, DragSession
    from gimp_draggan.draggan.networks import seed_ws
    from gimp_draggan.models.store import ModelStore

    device = pick_device(args.device)
    if device == "cpu":
        threads.apply(args.threads)
    models = ModelStore(any_file=True)
    G = models.load(str(args.model), device).G
    res = G.img_resolution
    mask = None
    if args.mask:
        mask = torch.from_numpy(load_mask(args.mask, res, res))
    handles = [h for h, _ in args.pairs]
    targets = [t for _, t in args.pairs]
    lr = models.drag_lr(str(args.model)) if args.lr is None else args.lr
    params = DragParams(lr=lr, max_steps=args.steps)
    session = DragSession(G, seed_ws(G, args.seed, device), handles, targets, mask, params)
    print(
        f"drag: {args.model} ({res}x{res}, features {session.feature_res} px), seed {args.seed}, "
        f"{len(handles)} pair(s), device {device}",
        flush=True,
    )
    return drag_and_report(
        session,
        args,
        device,
        targets=[list(t) for t in targets],
        model=str(args.model),
        seed=args.seed,
        resolution=res,
        feature_res=session.feature_res,
    )
