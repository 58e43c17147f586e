"""Where the daemon is and how to start it, as the plug-in sees it (pure; GIMP-free).

Order for the address: the procedure's `daemon-address` argument when set, then
$GIMP_DRAGGAN_DAEMON, then the installer's config file beside the plug-in (`gimp-draggan.json`),
then the default tcp://127.0.0.1:5589. The argument's default is empty on purpose: GIMP caches
argument defaults at registration, so an address baked in then would ignore a later environment.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import protocol

CONFIG_NAME = "gimp-draggan.json"
TRANSPORT_ENV = "GIMP_DRAGGAN_TRANSPORT"  # "pyzmq" | "zmtp" forces one (diagnostics, tests).
DEPTH_FORMATS = {"u8": "R'G'B'A u8", "u16": "R'G'B'A u16", "f32": "R'G'B'A float"}


@dataclass(frozen=True)
class Settings:
    address: str
    serve_command: tuple[str, ...]  # Empty = the plug-in cannot start a daemon itself.
    curve: tuple[str, str, str] | None  # (client public, client secret, server public), Z85.
    transport: str | None = None  # None = pyzmq when it imports, else the built-in ZMTP.
    secret: str | None = None  # The owner's loopback secret from the installer's
    #                                      config (a Flatpak GIMP cannot read ~/.config); None =
    #                                      the Client reads the user's secret file itself.


def read_config(plugin_dir: Path) -> dict[str, object]:
    """The installer's config beside the plug-in; {} when absent; a clear error when broken."""
    path = plugin_dir / CONFIG_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc}; re-run the gimp-draggan installer") from None
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ValueError(
            f"{path} is not valid JSON ({exc}); re-run the gimp-draggan installer to rewrite it"
        ) from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object; re-run the gimp-draggan installer")
    return raw


def load(plugin_dir: Path, argument: str, env: Mapping[str, str]) -> Settings:
    config = read_config(plugin_dir)
    address = (
        argument.strip()
        or env.get(protocol.ADDRESS_ENV, "").strip()
        or str(config.get("address") or "")
        or protocol.DEFAULT_ADDRESS
    )
    try:
        protocol.check_address(address)
    except ValueError as exc:
        raise ValueError(f"{exc} (set it in the DragGAN Drag dialog)") from None
    command = config.get("serve_command") or []
    if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
        raise ValueError(f"serve_command in {plugin_dir / CONFIG_NAME} must be a list of strings")
    curve_raw = config.get("curve")
    curve = None
    if isinstance(curve_raw, dict):
        keys = tuple(str(curve_raw.get(k, "")) for k in ("public", "secret", "server_public"))
        if not all(len(k) == 40 for k in keys):
            raise ValueError(
                f"the CURVE keys in {plugin_dir / CONFIG_NAME} are incomplete; "
                "re-run the installer with --client-key and --server-key"
            )
        curve = (keys[0], keys[1], keys[2])
    transport = env.get(TRANSPORT_ENV, "").strip() or None
    if transport not in (None, "pyzmq", "zmtp"):
        raise ValueError(f"{TRANSPORT_ENV}={transport!r}: use pyzmq, zmtp or leave it unset")
    secret = config.get("secret")
    if secret is not None and not (isinstance(secret, str) and secret.strip()):
        raise ValueError(
            f"secret in {plugin_dir / CONFIG_NAME} must be a non-empty string; "
            "re-run the gimp-draggan installer"
        )
    return Settings(address, tuple(command), curve, transport, secret)


def serve_argv(settings: Settings, which=shutil.which) -> list[str] | None:
    """The command that starts a daemon listening at the settings' address, or None if unknown."""
    argv = list(settings.serve_command)
    if not argv:
        exe = which("gimp-draggan")
        if exe is None:
            return None
        argv = [exe, "serve"]
    if settings.address != protocol.DEFAULT_ADDRESS:
        argv += ["--bind", settings.address]
    return argv


def depth_for(precision_name: str) -> str:
    """GIMP precision nick (e.g. GIMP_PRECISION_U16_NON_LINEAR) -> the wire depth.

    8- and 16-bit integer images travel as they are; half, 32-bit integer and double go as f32,
    and the new layer (same image precision) stores the result back in the image's precision."""
    name = precision_name.upper()
    if "U8" in name:
        return "u8"
    if "U16" in name:
        return "u16"
    return "f32"
