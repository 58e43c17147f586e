"""CURVE keys for a daemon reachable from other machines (`gimp-draggan keys`).

Layout of the key dir (default: the user's config dir + gimp-draggan/keys):
server.key / server.key_secret (the daemon's pair), client.key / client.key_secret (copy the
client pair and server.key to each client machine), allowed_clients/*.key (the public keys the
daemon accepts; add a file per extra client).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq.auth

from gimp_draggan import atomic
from gimp_draggan_plugin import client

ALLOWED = "allowed_clients"


def default_key_dir() -> Path:
    """$GIMP_DRAGGAN_KEYS, else <user config dir>/gimp-draggan/keys (shared with the clients)."""
    return Path(client.default_key_dir())


@dataclass(frozen=True)
class ServerKeys:
    public: bytes
    secret: bytes
    allowed_dir: Path


def make_keys(key_dir: Path, force: bool = False) -> list[Path]:
    """Create the server pair, one client pair and allowed_clients/client.key; return the files."""
    server_secret = key_dir / "server.key_secret"
    if server_secret.exists() and not force:
        raise FileExistsError(
            f"{server_secret} exists; keep it (clients already trust it) or pass --force"
        )
    key_dir.mkdir(parents=True, exist_ok=True)
    allowed = key_dir / ALLOWED
    allowed.mkdir(exist_ok=True)
    files: list[Path] = []
    # zmq writes the certificates in place; made in a scratch folder, each file then replaces
    # its old copy whole (a full disk leaves the old pair, never half a key).
    with tempfile.TemporaryDirectory(dir=key_dir, prefix=".new-keys-") as scratch:
        for name in ("server", "client"):
            public, secret = zmq.auth.create_certificates(scratch, name)
            for made, mode in ((Path(public), 0o644), (Path(secret), 0o600)):
                files.append(atomic.write_bytes(key_dir / made.name, made.read_bytes(), mode))
    files.append(
        atomic.write_bytes(allowed / "client.key", (key_dir / "client.key").read_bytes(), 0o644)
    )
    return files


def load_server_keys(key_dir: Path) -> ServerKeys:
    """The daemon's pair and the allowed client keys; ValueError says what is missing."""
    secret_file = key_dir / "server.key_secret"
    allowed = key_dir / ALLOWED
    if not secret_file.is_file():
        raise ValueError(f"no server key in {key_dir}: run `gimp-draggan keys --dir {key_dir}`")
    if not allowed.is_dir() or not any(allowed.glob("*.key")):
        raise ValueError(
            f"no allowed client keys in {allowed}: copy each client's .key file there "
            "(`gimp-draggan keys` puts one in)"
        )
    public, secret = zmq.auth.load_certificate(str(secret_file))
    if secret is None:
        raise ValueError(f"{secret_file} holds no secret key; re-run `gimp-draggan keys --force`")
    return ServerKeys(public, secret, allowed)


def serve_curve(ctx: Any, sock: Any, key_dir: Path, auth: Any = None) -> Any:
    """Make ``sock`` a CURVE server with the key pair in ``key_dir`` that accepts only the allowed
    client keys there. Starts the authenticator for ``ctx`` unless ``auth`` (one already started)
    is given; returns it, for the caller to stop."""
    keys = load_server_keys(key_dir)
    if auth is None:
        from zmq.auth.thread import ThreadAuthenticator  # Brings asyncio (~30 ms): CURVE only.

        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve(domain="*", location=str(keys.allowed_dir))
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret
    sock.curve_server = True
    return auth


def default_secret_file() -> Path:
    """$GIMP_DRAGGAN_SECRET, else <user config dir>/gimp-draggan/daemon.secret."""
    return Path(client.default_secret_file())


def ensure_secret(path: Path | None = None) -> tuple[str, Path]:
    """The owner's loopback secret and its file, created on first use (mode 0600 from its first
    byte). Two daemons starting at once agree: the file is linked into place only if absent."""
    path = path or default_secret_file()
    if not path.is_file():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        atomic.write_text(draft, secrets.token_urlsafe(32) + "\n", mode=0o600)
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    if os.name != "nt" and path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)  # Someone widened it; only the owner may read it.
    secret = client.read_secret(str(path))
    if secret is None:
        raise ValueError(
            f"cannot read the daemon secret {path}; delete it and start "
            "`gimp-draggan serve` again to make a new one"
        )
    return secret, path
