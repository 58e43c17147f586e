"""`gimp-draggan keys`: make the CURVE key pairs a daemon on a network address needs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "keys",
        help="make CURVE keys (server + client pair) for a daemon on the network",
        description="Writes server.key(_secret), client.key(_secret) and allowed_clients/ into "
        "DIR. Copy client.key, client.key_secret and server.key to each client machine's key "
        "dir; put other clients' public .key files into allowed_clients/.",
    )
    p.add_argument(
        "--dir",
        metavar="DIR",
        help="key dir (default: $GIMP_DRAGGAN_KEYS or the user's config dir + gimp-draggan/keys)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace existing keys (clients must then get the new ones)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gimp_draggan.service.keys import default_key_dir, make_keys

    key_dir = Path(args.dir).expanduser() if args.dir else default_key_dir()
    try:
        files = make_keys(key_dir, force=args.force)
    except (FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for f in files:
        print(f)
    print(
        f"\nServer: gimp-draggan serve --bind tcp://0.0.0.0:5589 --keys {key_dir}\n"
        f"Clients: copy client.key, client.key_secret and server.key into their key dir "
        f"(or pass --keys DIR to ping/drag).",
        file=sys.stderr,
    )
    return 0
