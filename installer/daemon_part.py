"""The installer's daemon half: venv + torch, the plug-in's config, the optional login service.

`install.py` (the plug-in half: GIMP folders, plug-in files) calls `add_arguments` on its parser,
then `install(...)` or `uninstall(...)` with the plug-in folders it handled. Every change goes
through `Actions`, so `--dry-run` prints the same steps without doing them.
"""

from __future__ import annotations

import argparse
import os
import platform as host
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import daemon_env
import plugin_config
import plugin_files
import plugin_models
import service
from actions import Actions

ROOT = Path(__file__).resolve().parent.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The daemon half's flags (the plug-in half owns --dry-run, --uninstall, --plugin-only)."""
    g = parser.add_argument_group("daemon")
    g.add_argument(
        "--cpu", action="store_true", help="install the CPU build of torch even if a GPU is found"
    )
    g.add_argument(
        "--torch",
        metavar="SPEC",
        default=None,
        help="pip requirement for torch, overriding the build detection (e.g. torch==2.13.0)",
    )
    g.add_argument(
        "--service",
        action="store_true",
        help="start the daemon at login (systemd --user, launchd agent or a Windows "
        "logon task); needed for a Flatpak GIMP, which cannot start programs",
    )
    g.add_argument(
        "--daemon",
        metavar="ADDR",
        default=None,
        help="daemon address the plug-in connects to (default: the local daemon)",
    )
    g.add_argument(
        "--bind",
        metavar="ADDR",
        default=None,
        help="address the --service daemon listens on (non-loopback needs keys)",
    )
    g.add_argument(
        "--client-key",
        metavar="FILE",
        type=Path,
        default=None,
        help="client *.key_secret file from `gimp-draggan keys` (LAN daemon)",
    )
    g.add_argument(
        "--server-key",
        metavar="FILE",
        type=Path,
        default=None,
        help="server *.key file from `gimp-draggan keys` (LAN daemon)",
    )
    g.add_argument(
        "--system-site-packages",
        action="store_true",
        help="let the daemon's venv see this Python's packages (reuses an installed "
        "torch; for developers and tests)",
    )
    g.add_argument(
        "--python",
        metavar="EXE",
        default=sys.executable,
        help="Python (3.10+) that creates the daemon's venv (default: this one)",
    )


def _serve_command(args: argparse.Namespace, denv: daemon_env.DaemonEnv) -> list[str]:
    if getattr(args, "plugin_only", False):
        found = shutil.which("gimp-draggan")
        return [found, "serve"] if found else []
    return denv.serve_command()


def install(
    args: argparse.Namespace,
    plugin_dirs: Sequence[Path],
    actions: Actions,
    platform: str,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Install the daemon half; returns the next steps to print."""
    env = os.environ if env is None else env
    data = daemon_env.data_dir(env, platform)
    denv = daemon_env.DaemonEnv(data / "venv", platform)
    record = daemon_env.InstallRecord(plugin_dirs=tuple(str(d) for d in plugin_dirs))
    proto = plugin_files.plugin_module("protocol")  # Gives the default address.
    address = args.daemon or proto.DEFAULT_ADDRESS
    proto.check_address(address)
    if not getattr(args, "plugin_only", False):
        choice = daemon_env.choose_torch(
            platform,
            host.machine(),
            args.torch,
            args.cpu,
            daemon_env.find_nvidia_driver(platform),
        )
        actions.say(choice.line())
        daemon_env.install_daemon(
            actions, denv, choice, ROOT, args.python, args.system_site_packages
        )
        daemon_env.check_daemon(actions, denv)
        record.venv, record.torch = str(denv.venv), choice.line()
    serve = _serve_command(args, denv)
    if args.bind:
        proto.check_address(args.bind)
        serve += ["--bind", args.bind]
    record.serve_command = tuple(serve)
    secret = ""
    if args.client_key is None and proto.is_loopback(address):
        home = daemon_env.home_dir(env, platform)
        secret = plugin_config.ensure_secret(
            actions, plugin_config.secret_file(env, platform, home)
        )
    config = plugin_config.make_config(address, serve, args.client_key, args.server_key, secret)
    record.plugin_configs = tuple(
        str(plugin_config.write_config(actions, d, config)) for d in plugin_dirs
    )
    plugin_models.write_tables(actions, plugin_dirs, serve)
    if args.service:
        if not serve:
            raise ValueError(
                "--service needs the daemon: drop --plugin-only, or put `gimp-draggan` on PATH"
            )
        plan = service.plan_service(platform, serve, daemon_env.home_dir(env, platform), data, env)
        service.install_service(actions, plan)
        record.service_files = (str(plan.file.path),)
    actions.write_file(data / daemon_env.RECORD_NAME, record.to_json())
    return next_steps(args, serve, address, plugin_dirs)


def next_steps(
    args: argparse.Namespace, serve: Sequence[str], address: str, plugin_dirs: Sequence[Path] = ()
) -> list[str]:
    shown = " ".join(f'"{a}"' if " " in a else a for a in serve)
    steps = []
    sandboxed = [d for d in plugin_dirs if "org.gimp.GIMP" in d.parts or "snap" in d.parts]
    if sandboxed and not args.service and serve:
        steps.append(
            "Flatpak/Snap GIMP cannot start programs outside its sandbox: re-run with "
            "--service, or keep the daemon running yourself"
        )
    if args.service:
        steps.append("The daemon starts at login and is running now.")
    elif serve:
        steps.append(f"Start the daemon (or let the plug-in start it): {shown}")
    else:
        steps.append(f"Start a daemon that listens on {address} (gimp-draggan serve).")
    steps.append(
        "Restart GIMP, draw a path (each stroke: handle -> target), then "
        "Filters -> Distorts -> DragGAN Drag..."
    )
    if serve and not getattr(args, "plugin_only", False):
        python = serve[0]
        steps.append(f"See it work without GIMP: {python} -m gimp_draggan demo")
        steps.append(f"Something wrong? {python} -m gimp_draggan doctor")
    return steps


def uninstall(
    plugin_dirs: Sequence[Path],
    actions: Actions,
    platform: str,
    env: Mapping[str, str] | None = None,
) -> None:
    """Remove the service, the plug-in configs and the daemon's venv (models stay cached)."""
    env = os.environ if env is None else env
    data = daemon_env.data_dir(env, platform)
    record = daemon_env.InstallRecord.load(data / daemon_env.RECORD_NAME)
    denv = daemon_env.DaemonEnv(data / "venv", platform)
    plan = service.plan_service(
        platform, denv.serve_command(), daemon_env.home_dir(env, platform), data, env
    )
    service.uninstall_service(actions, plan)
    dirs = {Path(d) for d in plugin_dirs}
    if record is not None:
        dirs |= {Path(d) for d in record.plugin_dirs}
    for d in sorted(dirs):
        actions.remove(d / plugin_config.CONFIG_NAME)
    daemon_env.uninstall_daemon(actions, data)
