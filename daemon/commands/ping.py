"""`gimp-draggan ping`: is the daemon there? Prints its version and device; exit 0 if so."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gimp_draggan_plugin import protocol as P


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("ping", help="check that the daemon answers (version, device)")
    p.add_argument(
        "--daemon",
        metavar="ADDR",
        help=f"daemon address (default: ${P.ADDRESS_ENV} or {P.DEFAULT_ADDRESS})",
    )
    p.add_argument("--keys", metavar="DIR", help="CURVE key dir (for a non-loopback daemon)")
    p.add_argument(
        "--timeout",
        type=float,
        default=P.REQUEST_TIMEOUT_S,
        metavar="S",
        help=f"seconds to wait per try (default {P.REQUEST_TIMEOUT_S:g})",
    )
    p.add_argument("--json", action="store_true", help="print the daemon's hello as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gimp_draggan_plugin.client import Client, DaemonError, curve_for

    address = args.daemon or P.default_address()
    try:
        curve = curve_for(address, args.keys)
        with Client(address, curve=curve, timeout_s=args.timeout) as client:
            hello = client.hello("gimp-draggan-ping")
            transport = client.transport_name
    except (DaemonError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({k: v for k, v in hello.items() if k not in ("v", "op", "id")}))
        return 0
    cached = [m["name"] for m in hello.get("models", []) if m.get("cached")]
    print(
        f"gimp-draggan daemon {hello.get('server')} (protocol {hello.get('protocol')}) at "
        f"{address} via {transport}: device {hello.get('device')}, default model "
        f"{hello.get('default_model') or '(none)'}, cached models: "
        f"{', '.join(cached) or 'none'}"
    )
    for model in hello.get("models", []):
        if model.get("damaged"):
            print(f"warning: {model['damaged']}")
    return 0
