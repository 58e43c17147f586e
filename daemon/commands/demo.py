"""`gimp-draggan demo`: drag points on the bundled sample photo through a real daemon, offline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="see it work: drag points on a bundled photo through a real daemon",
        description="Starts a daemon on a free loopback port, sends the bundled sample photo "
        "with two handle -> target pairs and a selection through the plug-in's "
        "client, and writes before/after pictures, the drag's progress (GIF and "
        "contact sheet) and a report. Offline; the embedded model on the CPU takes "
        "well under a minute.",
    )
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("draggan-demo"),
        help="output folder (default: draggan-demo)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=200,
        help="max drag steps (default 200; it stops once the handles arrive)",
    )
    p.add_argument(
        "--preset",
        choices=("fast", "quality"),
        default="fast",
        help="inversion preset (default fast: the photo-true edit takes the "
        "generator's motion, not its pixels)",
    )
    p.add_argument(
        "--preview-every",
        type=int,
        default=5,
        metavar="N",
        help="a live preview every N drag steps (default 5; 0 = none)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="device for the demo's own daemon: cpu (default), cuda, mps or auto",
    )
    p.add_argument(
        "--model",
        default="embedded",
        help="registry name or generator file (default: embedded, no download)",
    )
    p.add_argument(
        "--daemon",
        metavar="ADDR",
        default=None,
        help="use this running daemon instead of starting one",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from gimp_draggan.device import pick_device
    from gimp_draggan.headless import demo
    from gimp_draggan_plugin.client import DaemonError

    try:
        options = demo.DemoOptions(
            out=args.out,
            steps=args.steps,
            preset=args.preset,
            preview_every=args.preview_every,
            device=pick_device(args.device) if args.daemon is None else args.device,
            model=args.model,
            daemon=args.daemon,
        )
        report = demo.run(options)
    except (ValueError, DaemonError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(asdict(report)))
        return 0
    out = args.out
    state = "done" if report.converged else "stopped short"
    print(
        f"{state} in {report.timings['wall']:.1f} s: {report.steps} drag steps on "
        f"{report.device}; distances to target "
        + ", ".join(
            f"{p['start_distance']:.0f} -> {p['final_distance']:.1f} px" for p in report.pairs
        )
    )
    print(f"wrote {out}/: " + ", ".join(report.files))
    print(f"look at {out / 'demo.png'} (before | after) and {out / 'report.md'}")
    return 0
