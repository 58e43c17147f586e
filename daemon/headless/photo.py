"""`gimp-draggan drag IN.png …` in-process: the whole photo path on a full-size image file.

Reads IN.png as u8 or u16 RGBA (`imagefile`; --mask as 8-bit grey of the same size, white = may
move), runs `pipeline.run_edit` (crop -> PTI inversion -> drag -> composite), pastes the patch into
the image and writes OUT.png in the input's mode and depth (grey stays grey, 16 bits stay 16).
Progress lines go to stdout; with --json the last line is a JSON summary. The same request sent
with --daemon gives the same image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from gimp_draggan import threads
from gimp_draggan.atomic import save_image
from gimp_draggan.terminal import StepPrinter
from gimp_draggan_plugin import protocol as P


def paste_patch(layer: Any, patch: bytes, x: int, y: int, width: int, height: int) -> Any:
    """A copy of the RGBA layer ``[H, W, 4]`` (u8 or u16) with the patch (same depth) pasted at
    (x, y)."""
    import numpy as np  # Here: `--help` imports this module (see `run_photo`).

    out = layer.copy()
    out[y : y + height, x : x + width] = np.frombuffer(patch, layer.dtype).reshape(height, width, 4)
    return out


def write_result(
    args: argparse.Namespace,
    image: Any,
    steps: int,
    points: list[tuple[float, float]],
    distances: list[float],
    sec_per_step: float | None,
    where: str,
    summary: dict[str, Any],
    converged: bool = True,
    worse: Sequence[int] = (),
) -> None:
    """Save ``image`` to ``args.output``, print the closing line and, with --json, the summary
    (the keys every drag form shares, then ``summary``'s). A drag that ended short says so
    (`closing_line`); the image is written either way. ``image``: anything with
    ``save(fp, format=...)`` (`imagefile.ImageFile.encode`)."""
    dest = Path(args.output)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_image(image, dest)
    print(closing_line(steps, where, points, distances, converged, worse) + f"; wrote {dest}")
    if args.json:
        spp = None if sec_per_step is None else round(sec_per_step, 6)
        print(
            json.dumps(
                {
                    "steps": steps,
                    "sec_per_step": spp,
                    "points": [[x, y] for x, y in points],
                    "distances": [round(d, 4) for d in distances],
                    "converged": converged,
                    "worse": list(worse),
                    **summary,
                    "output": str(dest),
                }
            )
        )


def closing_line(
    steps: int,
    where: str,
    points: Sequence[tuple[float, float]],
    distances: Sequence[float],
    converged: bool,
    worse: Sequence[int],
) -> str:
    """ "done …" only when every handle got there; else how far each one is from its target
    (layer pixels), and which ones ended farther than they began."""
    handles = " ".join(f"({x:.1f},{y:.1f})" for x, y in points)
    if converged:
        return f"done after {steps} steps{where}: handles {handles}"
    line = (
        f"stopped short after {steps} steps{where}: handles {handles}, "
        + ", ".join(f"pair {i} {d:.1f} px from its target" for i, d in enumerate(distances))
        + " (more --steps, a larger selection or a shorter drag may reach it)"
    )
    if worse:
        line += "; farther than at the start: " + ", ".join(f"pair {i}" for i in worse)
    return line


def run_photo(args: argparse.Namespace) -> int:
    """Edit ``args.image`` with ``args.pairs`` (layer pixels) and write ``args.output`` in the
    image's own mode and depth (`imagefile`); arguments were checked by `drag.check_args`."""
    # Here, not at the top: `drag --daemon` (and so `--help`) imports this module for its
    # output helpers, and must not load numpy, torch or the edit stack.
    from gimp_draggan.device import pick_device
    from gimp_draggan.edit.pipeline import EditCancelled, run_edit
    from gimp_draggan.edit.sessions import SessionCache
    from gimp_draggan.headless.imagefile import read_image, read_mask
    from gimp_draggan.models.store import ModelStore

    try:
        image = read_image(args.image)
        w, h = image.width, image.height
        mask = read_mask(args.mask, w, h) if args.mask else None
        # The daemon's rules, once (the model may be a file here, which the wire never takes).
        request = P.checked(
            P.JobRequest.photo(
                image.rgba.tobytes(),
                w,
                h,
                list(args.pairs),
                depth=image.depth,
                mask=mask,
                params=P.Params(steps=args.steps, lr=args.lr, blend=args.blend),
            )
        )
        request = replace(request, model=args.model)
        device = pick_device(args.device)
        if device == "cpu":
            threads.apply(args.threads)
        print(
            f"drag: {args.image} ({w}x{h}, {image.written_as}), {len(args.pairs)} pair(s), "
            f"model {args.model}, device {device}",
            flush=True,
        )
        printer = StepPrinter()
        sessions = SessionCache()
        start = time.perf_counter()
        r = run_edit(
            request,
            device=device,
            sessions=sessions,
            models=ModelStore(any_file=True),
            on_progress=printer,
            should_stop=lambda: False,
        )
        seconds = time.perf_counter() - start
        framing = sessions.get(r.session).info.get("framing")
    except (ValueError, OSError, EditCancelled, P.ProtocolError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_result(
        args,
        image.encode(paste_patch(image.rgba, r.patch, r.x, r.y, r.width, r.height)),
        r.steps,
        r.points,
        r.distances,
        printer.sec_per_step(),
        "",
        {
            "device": device,
            "seconds": round(seconds, 3),
            "session": r.session,
            "patch": [r.x, r.y, r.width, r.height],
            "framing": framing,
            "timings": r.timings,
        },
        converged=r.converged,
        worse=r.worse,
    )
    return 0


def check_inside(
    pairs: Sequence[tuple[tuple[float, float], tuple[float, float]]], width: int, height: int
) -> None:
    """Every handle and target inside the image: the daemon's rule (`protocol.check_pairs`)."""
    P.check_pairs([[hx, hy, tx, ty] for (hx, hy), (tx, ty) in pairs], (width, height), need=True)
