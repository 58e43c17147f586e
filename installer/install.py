#!/usr/bin/env python3
"""Install gimp-draggan for one user: the GIMP plug-in into every GIMP 3 found, plus the daemon.

    python3 installer/install.py [--plugin-only] [--gimp-dir DIR] [--dry-run] [--uninstall] ...

The plug-in half (this file, `gimp_dirs`, `plugin_files`) puts the plug-in into GIMP's plug-ins
folders; the daemon half (`daemon_part`) makes the daemon's venv, the plug-in's config and the
optional login service. Standard library only; safe to re-run; `--uninstall` removes all of it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import daemon_part
import gimp_dirs
import plugin_files
from actions import Actions, InstallError, current_platform

ROOT = Path(__file__).resolve().parent.parent
PLATFORMS = ("linux", "macos", "windows")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="install.sh",
        description="Install the gimp-draggan GIMP plug-in and its daemon for this user.",
    )
    parser.add_argument(
        "--gimp-dir",
        metavar="DIR",
        type=Path,
        action="append",
        default=None,
        help="install the plug-in into this GIMP plug-ins folder only "
        "(repeatable); default: every GIMP 3 plug-ins folder found",
    )
    parser.add_argument(
        "--plugin-only",
        action="store_true",
        help="install the plug-in only, no daemon venv (the daemon runs "
        "elsewhere, or `gimp-draggan` is already installed)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be done and change nothing"
    )
    parser.add_argument(
        "--uninstall",
        action="store_true",
        help="remove the plug-in, its config, the service and the daemon's venv",
    )
    parser.add_argument(
        "--platform", choices=PLATFORMS, default=None, help=argparse.SUPPRESS
    )  # Tests: lay out folders as on another OS.
    daemon_part.add_arguments(parser)
    return parser


def plugin_targets(
    args: argparse.Namespace, env: Mapping[str, str], platform: str
) -> list[gimp_dirs.GimpDir]:
    """The plug-ins folders to act on: --gimp-dir, else every GIMP 3 found."""
    if args.gimp_dir:
        return [gimp_dirs.GimpDir("given", "", Path(d).expanduser()) for d in args.gimp_dir]
    found = gimp_dirs.find(env, platform)
    if not found and not args.uninstall:
        looked = "\n  ".join(str(p) for p in gimp_dirs.looked_in(env, platform))
        raise InstallError(
            "no GIMP 3 settings folder found; looked in:\n  " + looked + "\nStart GIMP 3 once "
            "(it creates that folder) and re-run, or pass --gimp-dir PATH/TO/plug-ins"
        )
    return found


def run(args: argparse.Namespace, env: Mapping[str, str], actions: Actions) -> int:
    platform = args.platform or current_platform()
    targets = plugin_targets(args, env, platform)
    if args.uninstall:
        own = [t.plugins / plugin_files.NAME for t in targets]
        daemon_part.uninstall(own, actions, platform, env)
        for target in targets:
            if not plugin_files.uninstall(actions, target.plugins):
                actions.say(f"no plug-in in {target.plugins}")
        actions.say("gimp-draggan is uninstalled" + (" (dry run)" if args.dry_run else ""))
        return 0
    installed = []
    for target in targets:
        actions.say(f"GIMP plug-ins folder ({target.label()})")
        installed.append(plugin_files.install(actions, ROOT / "gimp_plugin", target.plugins))
    steps = daemon_part.install(args, installed, actions, platform, env)
    actions.say("")
    actions.say(
        f"Done: {len(actions.done)} change(s)"
        + (" would be made (dry run)" if args.dry_run else "")
        + "."
    )
    for step in steps:
        actions.say(f"Next: {step}")
    return 0


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    actions = Actions(dry_run=args.dry_run)
    try:
        return run(args, os.environ if env is None else env, actions)
    except (InstallError, ValueError) as exc:
        print(f"install: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
