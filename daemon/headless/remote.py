"""`gimp-draggan drag ... --daemon ADDR`: the same drag, run by the daemon instead of in-process.

The seed form sends the seed and points; the photo form sends the image's RGBA pixels (u8, or u16
for a 16-bit file) and the mask, and writes the image with the returned patch pasted at its offset,
in the input's mode and depth (`imagefile`). Either way the daemon
runs the same code as the in-process command, so the output image is the same.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gimp_draggan.headless.photo import check_inside, paste_patch, write_result
from gimp_draggan.terminal import StepPrinter
from gimp_draggan_plugin import protocol as P


def add_daemon_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--daemon",
        metavar="ADDR",
        nargs="?",
        const="",
        help=f"run through the daemon at ADDR (no ADDR: ${P.ADDRESS_ENV} or {P.DEFAULT_ADDRESS})",
    )
    parser.add_argument("--keys", metavar="DIR", help="CURVE key dir for a non-loopback daemon")


def model_name(model: str) -> str:
    """The name the daemon knows: a registry name as is, a file by its stem (`serve --model
    FILE` lists it so); the daemon never takes paths."""
    path = Path(model).expanduser()
    if path.is_file():
        return P.check_name(path.name.split(".")[0].lower(), "model file stem")
    return P.check_name(model)


def run_remote(args: argparse.Namespace, image_path: str | None = None) -> int:
    """Run the drag of `args` (seed form, or photo form with `image_path`) on the daemon; the
    arguments were checked by `drag.check_args` (the daemon's own rules)."""
    # Here, not at the top: the `drag` command imports this module, and `--help` must not load
    # numpy, Pillow or ZeroMQ.
    import numpy as np
    from PIL import Image

    from gimp_draggan.headless.imagefile import read_image, read_mask
    from gimp_draggan_plugin.client import Client, curve_for

    address = args.daemon or P.default_address()
    params = P.Params(steps=args.steps, lr=args.lr, blend=args.blend)
    printer = StepPrinter(sys.stdout)

    def on_event(ev: P.ProgressEvent | P.QueuedEvent) -> None:
        if isinstance(ev, P.QueuedEvent):
            print(f"queued: {P.queue_words(ev.position)}", flush=True)
        else:
            printer(ev)

    try:
        model = model_name(args.model) if args.model else None
        image = None
        if image_path is None:
            if args.seed is None:
                raise ValueError("give --seed N: the start image is generated from that seed")
            mask, mw, mh = _seed_mask(args.mask)
        else:
            image = read_image(image_path)
            mw, mh = image.width, image.height
            mask = read_mask(args.mask, mw, mh) if args.mask else None
            check_inside(args.pairs, mw, mh)
            print(
                f"drag: {image_path} ({mw}x{mh}, {image.written_as}), {len(args.pairs)} "
                f"pair(s), daemon {address}",
                flush=True,
            )
        with Client(address, curve=curve_for(address, args.keys)) as client:
            hello = client.hello("gimp-draggan-cli")
            start = time.perf_counter()
            if image is None:
                seeded = P.JobRequest.seeded(
                    args.seed,
                    args.pairs,
                    mask=mask,
                    width=mw,
                    height=mh,
                    model=model,
                    params=params,
                )
                r = client.drag(seeded, on_event=on_event)
                rgb = np.frombuffer(r.patch, np.uint8).reshape(r.height, r.width, 4)[:, :, :3]
                out = Image.fromarray(np.ascontiguousarray(rgb))
            else:
                photo = P.JobRequest.photo(
                    image.rgba.tobytes(),
                    mw,
                    mh,
                    args.pairs,
                    depth=image.depth,
                    mask=mask,
                    model=model,
                    params=params,
                )
                r = client.drag(photo, on_event=on_event)
                out = image.encode(paste_patch(image.rgba, r.patch, r.x, r.y, r.width, r.height))
            seconds = time.perf_counter() - start
    except (P.ProtocolError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    device = hello.get("device")
    write_result(
        args,
        out,
        r.steps,
        r.points,
        r.distances,
        printer.sec_per_step(),
        f" on {device} at {address}",
        {
            "device": device,
            "daemon": address,
            "seconds": round(seconds, 3),
            "session": r.session,
            "timings": r.timings,
        },
        converged=r.converged,
        worse=r.worse,
    )
    return 0


def _seed_mask(path: str | None) -> tuple[bytes | None, int, int]:
    """The seed form's model-sized mask file -> (u8 bytes, width, height); white = may move.
    (The daemon checks it against the model's size.)"""
    if not path:
        return None, 0, 0
    from gimp_draggan.headless.imagefile import mask_bytes, read_image  # numpy: see run_remote.

    image = read_image(path)
    return mask_bytes(image), image.width, image.height
