"""`gimp-draggan broker`: one address for several daemons (GPUs or machines)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from gimp_draggan_plugin import protocol as P

DEFAULT_BACK = f"tcp://127.0.0.1:{P.DEFAULT_PORT + 1}"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "broker", help="load-balance clients over several daemons (sessions stay sticky)",
        description="Clients connect to --front as to a daemon; daemons run "
        "`gimp-draggan serve --broker BACK`. A non-loopback address needs --keys.",
    )
    p.add_argument("--front", metavar="ADDR", help=f"address for clients (default: "
                   f"${P.ADDRESS_ENV} or {P.DEFAULT_ADDRESS})")
    p.add_argument("--back", metavar="ADDR", default=DEFAULT_BACK,
                   help=f"address for daemons (default {DEFAULT_BACK})")
    p.add_argument("--keys", metavar="DIR", help="CURVE key dir from `gimp-draggan keys`")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gimp_draggan.broker import Broker, BrokerConfig
    from gimp_draggan.commands.serve import key_dir_for
    from gimp_draggan.keys import ensure_secret
    from gimp_draggan.logs import setup_logging
    from gimp_draggan.server import ServerError

    setup_logging("broker", args.verbose)
    front = args.front or P.default_address()
    keys = (Path(args.keys).expanduser() if args.keys
            else key_dir_for(front, None, True) or key_dir_for(args.back, None, True))
    try:
        secret = None if keys is not None else ensure_secret()[0]
        broker = Broker(BrokerConfig(front=front, back=args.back, keys=keys, secret=secret))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def stop(_sig: int, _frame: Any) -> None:
        broker.stop(timeout_s=0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        broker.serve_forever()
    except (ServerError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
