"""`gimp-draggan` command line: one argparse subcommand per module in `gimp_draggan.commands`.

Command modules import torch and friends inside their `run` functions, so `--help`, `ping`
and the like start fast.
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
