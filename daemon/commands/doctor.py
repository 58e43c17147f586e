"""`gimp-draggan doctor`: check GIMP, the plug-in, the daemon, models, torch and disk; say fixes."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="check the installation and say how to fix each problem",
        description="Checks GIMP 3, the plug-in in each GIMP plug-ins folder, the daemon, the "
        "models, torch/GPU and disk space, with a fix for every problem. Exit code 1 "
        "when something is broken.",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--bundle",
        nargs="?",
        const="",
        default=None,
        metavar="ZIP",
        help="also write a zip of the report and the logs for a bug report "
        "(default name: gimp-draggan-doctor-DATE.zip)",
    )
    p.add_argument(
        "--daemon",
        metavar="ADDR",
        default=None,
        help="daemon address to check (default: the plug-in's, else the default)",
    )
    p.add_argument(
        "--gimp-dir",
        metavar="DIR",
        type=Path,
        action="append",
        default=[],
        help="also inspect this GIMP plug-ins folder (repeatable)",
    )
    p.add_argument(
        "--gimp-console",
        metavar="CMD",
        default=None,
        help="command that runs GIMP 3 headless (e.g. 'flatpak run --command="
        "gimp-console-3.0 org.gimp.GIMP'); default: gimp-console-3.* on PATH",
    )
    p.add_argument(
        "--no-gimp-query",
        action="store_true",
        help="do not start GIMP headless to ask whether the procedure is registered",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="limit for each program doctor starts (default 60)",
    )
    p.add_argument("--cache-dir", default=None, help="model cache folder to check")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gimp_draggan.doctor import report as doctor
    from gimp_draggan.doctor.base import Context

    if args.timeout <= 0:
        print("doctor: --timeout must be positive", file=sys.stderr)
        return 2
    ctx = Context(
        daemon=args.daemon,
        gimp_dirs=tuple(args.gimp_dir),
        gimp_console=tuple(shlex.split(args.gimp_console)) if args.gimp_console else None,
        ask_gimp=not args.no_gimp_query,
        timeout_s=args.timeout,
    )
    checks = doctor.run_checks(ctx, args.cache_dir)
    if args.json:
        print(json.dumps(doctor.report_json(checks), indent=2))
    else:
        print(doctor.render_text(checks), end="")
    if args.bundle is not None:
        name = args.bundle or f"gimp-draggan-doctor-{time.strftime('%Y%m%d-%H%M%S')}.zip"
        path = doctor.write_bundle(Path(name), checks, ctx)
        print(f"bundle written: {path.resolve()} (secret keys left out)", file=sys.stderr)
    return 1 if any(c.status == "fail" for c in checks) else 0
