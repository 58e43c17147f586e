"""`gimp-draggan` command line: one argparse subcommand per module in `gimp_draggan.commands`.

Command modules import their work (torch, the edit stack, the daemon, ZeroMQ) inside the
functions that run it, not at the top: this module imports every command module to build its
parser, so `--help`, `ping`, `drag --daemon` and `models list` start without them (no torch, no
numpy; `python3 -X importtime -m gimp_draggan ping --help` shows it).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gimp_draggan.atomic import WriteError
from gimp_draggan.headless.argcheck import join_negative_values

# Each module defines `register(subparsers)`, which adds its parser(s) with `func` set.
COMMAND_MODULES = (
    "models",
    "doctor",
    "demo",
    "serve",
    "ping",
    "keys",
    "drag",
    "invert",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gimp-draggan",
        description="DragGAN point-drag editing: daemon, command line and tools.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"gimp_draggan.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(join_negative_values(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.func(args) or 0)
    except WriteError as exc:  # A full disk after the work: the old file is intact; say so.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
