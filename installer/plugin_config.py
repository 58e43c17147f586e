"""The plug-in's config file: which daemon to talk to, with which keys, and how to start it.

Written into each installed plug-in folder, because that is the one place every GIMP (native,
Flatpak, Snap, macOS, Windows) lets its plug-ins read. JSON, standard library only on both sides.
Keys are the Z85 strings of `gimp-draggan keys`' certificate files (zmq.auth format), needed only
when the daemon is on another machine (CURVE); loopback needs none.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from actions import Actions

CONFIG_NAME = "gimp-draggan.json"
CONFIG_VERSION = 1
SECRET_ENV = "GIMP_DRAGGAN_SECRET"
_KEY_RE = re.compile(r'^\s*(public|secret)-key\s*=\s*"(.{40})"\s*$', re.MULTILINE)


@dataclass(frozen=True)
class PluginConfig:
    address: str  # Daemon endpoint, e.g. tcp://127.0.0.1:5589.
    serve_command: tuple[str, ...] = ()  # How the plug-in may start a local daemon; () = it can't.
    curve_public: str = ""  # Client key pair + the server's public key (Z85),
    curve_secret: str = ""  # all three or none.
    curve_server_public: str = ""
    secret: str = ""  # The owner's loopback secret (no CURVE), so a sandboxed
    #                                       GIMP (Flatpak) that cannot see ~/.config has it too.

    def __post_init__(self) -> None:
        if not self.address.startswith(("tcp://", "ipc://")):
            raise ValueError(f"daemon address {self.address!r}: use tcp://HOST:PORT")
        keys = (self.curve_public, self.curve_secret, self.curve_server_public)
        if any(keys) and not all(len(k) == 40 for k in keys):
            raise ValueError(
                "CURVE keys: give the client key pair and the server's public key "
                "(40 Z85 characters each), or none"
            )

    def to_json(self) -> str:
        body: dict[str, object] = {
            "version": CONFIG_VERSION,
            "address": self.address,
            "serve_command": list(self.serve_command),
        }
        if self.curve_public:
            body["curve"] = {
                "public": self.curve_public,
                "secret": self.curve_secret,
                "server_public": self.curve_server_public,
            }
        if self.secret:
            body["secret"] = self.secret
        return json.dumps(body, indent=2, sort_keys=True) + "\n"


def read_certificate(path: Path, want_secret: bool) -> tuple[str, str]:
    """(public, secret) Z85 keys from a zmq.auth certificate file; secret is '' for a public one."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(
            f"cannot read key file {path}: {exc}; make keys with "
            "`gimp-draggan keys` on the daemon's machine"
        ) from None
    found = dict(_KEY_RE.findall(text))
    if "public" not in found:
        raise ValueError(f"{path} holds no public-key line; is it a file from `gimp-draggan keys`?")
    if want_secret and "secret" not in found:
        raise ValueError(f"{path} holds no secret-key: pass the client's *.key_secret file")
    return found["public"], found.get("secret", "")


def secret_file(env: Mapping[str, str], platform: str, home: Path) -> Path:
    """Where `gimp-draggan serve` keeps the owner's loopback secret (the same rule as the
    plug-in's `client.default_secret_file`, restated: the installer imports nothing of ours)."""
    if env.get(SECRET_ENV):
        return Path(env[SECRET_ENV])
    if platform == "macos":
        base = home / "Library" / "Application Support"
    elif platform == "windows":
        base = Path(env.get("APPDATA") or home / "AppData" / "Roaming")
    else:
        base = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    return base / "gimp-draggan" / "daemon.secret"


def ensure_secret(actions: Actions, path: Path) -> str:
    """The secret in `path`, made now (mode 0600) when there is none yet; '' in a dry run that
    would make it."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = ""
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"cannot read the daemon secret {path}: {exc}; delete it and run the installer again"
        ) from None
    if text:
        return text
    text = secrets.token_urlsafe(32)
    actions.write_file(path, text + "\n", mode=0o600)
    return "" if actions.dry_run else text


def make_config(
    address: str,
    serve_command: Sequence[str] = (),
    client_key: Path | None = None,
    server_key: Path | None = None,
    loopback_secret: str = "",
) -> PluginConfig:
    """The config for `address`; key files are needed together or not at all. Without keys it
    carries `loopback_secret`; with them, CURVE authenticates and the secret stays out."""
    if (client_key is None) != (server_key is None):
        raise ValueError(
            "--client-key and --server-key go together (both files come from `gimp-draggan keys`)"
        )
    public = secret = server_public = ""
    if client_key is not None and server_key is not None:
        public, secret = read_certificate(client_key, want_secret=True)
        server_public, _ = read_certificate(server_key, want_secret=False)
    return PluginConfig(
        address,
        tuple(serve_command),
        public,
        secret,
        server_public,
        "" if public else loopback_secret,
    )


def write_config(actions: Actions, plugin_dir: Path, config: PluginConfig) -> Path:
    """Write the config beside the plug-in (owner-only: it may hold a secret key)."""
    path = plugin_dir / CONFIG_NAME
    actions.write_file(path, config.to_json(), mode=0o600)
    return path
