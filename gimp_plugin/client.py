"""Client of the gimp-draggan daemon, for the GIMP plug-in and the command line.

Standard library + `transport` only (no numpy, no torch). One request at a time per client;
a job streams `queued` / `progress` events to a callback and ends in a `result` or a
`DaemonError`. Lazy Pirate: no first answer within the timeout -> close the socket, reopen,
resend (same id); still nothing -> a clear error saying how to start the daemon.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from . import protocol as P
from .transport import CurveKeys, Transport, TransportUnavailable, connect

Event = P.ProgressEvent | P.QueuedEvent
EventFn = Callable[[Event], None]
StopFn = Callable[[], bool]
CANCEL_WAIT_S = 15.0  # After a cancel, how long to wait for the job's final reply.
KEYS_ENV = "GIMP_DRAGGAN_KEYS"
UPLOAD_BYTES_PER_S = 25e6  # Slowest link we allow for before calling a request unanswered.


class DaemonError(P.ProtocolError):
    """An error reply (or a failure to reach the daemon): `code` for code, `hint` (the daemon's
    own when it sent one) says what to do, str() is both for people."""

    def __init__(self, code: P.ErrorCode | str, message: str, hint: str | None = None) -> None:
        super().__init__(code, message, hint)

    def __str__(self) -> str:
        return self.sentence

    @classmethod
    def of(cls, exc: P.ProtocolError) -> DaemonError:
        return cls(exc.code, exc.message, exc.hint)


class DaemonNotRunning(DaemonError):
    def __init__(self, address: str) -> None:
        super().__init__(
            P.ErrorCode.NOT_RUNNING,
            f"daemon not running at {address}",
            f"Start it with `{P.start_command(address)}`.",
        )
        self.address = address


def tcp_refused(address: str, timeout_s: float = 0.5) -> bool:
    """True if nothing listens at a tcp:// address (a fast answer for 'not running')."""
    peer = P.parse_address(address).tcp_peer
    if peer is None:
        return False
    try:
        with socket.create_connection(peer, timeout=timeout_s):
            return False
    except (ConnectionRefusedError, socket.gaierror):
        return True
    except (OSError, ValueError):
        return False


def config_dir() -> str:
    """<user config dir>/gimp-draggan: keys and the loopback secret live there."""
    home = os.path.expanduser("~")
    if sys.platform == "darwin":
        base = os.path.join(home, "Library", "Application Support")
    elif os.name == "nt":
        base = os.environ.get("APPDATA") or os.path.join(home, "AppData", "Roaming")
    else:
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return os.path.join(base, "gimp-draggan")


PROBE_S = 0.8  # A ZeroMQ peer sends its greeting at once (libzmq's I/O thread, not Python).


def not_zeromq(address: str, timeout_s: float = PROBE_S) -> str | None:
    """Why what listens at a tcp:// address is not a ZeroMQ socket (e.g. a web server on the
    daemon's port), or None: it greeted like ZeroMQ, nothing listens, or it cannot be told."""
    peer = P.parse_address(address).tcp_peer
    if peer is None:
        return None
    data = b""
    try:
        with socket.create_connection(peer, timeout=timeout_s) as s:
            deadline = time.monotonic() + timeout_s
            while len(data) < 10:
                s.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = s.recv(10 - len(data))
                if not chunk:
                    break
                data += chunk
    except TimeoutError:
        if not data:
            return (
                f"something listens at {address} but sent no ZeroMQ greeting within "
                f"{timeout_s:g} s: another program (not a gimp-draggan daemon) holds the "
                "port, or the daemon there is stopped or hung"
            )
    except ConnectionResetError:
        pass
    except (OSError, ValueError):
        return None
    if data[:1] == b"\xff" and (len(data) < 10 or data[9:10] == b"\x7f"):
        return None
    what = f"it answered {data[:32]!r}" if data else "it closed the connection at once"
    return f"something else listens at {address}, not a gimp-draggan daemon ({what})"


def default_key_dir() -> str:
    """$GIMP_DRAGGAN_KEYS, else <user config dir>/gimp-draggan/keys (what `gimp-draggan keys`
    writes)."""
    return os.environ.get(KEYS_ENV) or os.path.join(config_dir(), "keys")


def default_secret_file() -> str:
    """$GIMP_DRAGGAN_SECRET, else <user config dir>/gimp-draggan/daemon.secret: the owner's
    loopback secret, which `serve` creates (mode 0600) and every local client sends."""
    return os.environ.get(P.SECRET_ENV) or os.path.join(config_dir(), P.SECRET_NAME)


def read_secret(path: str | None = None) -> str | None:
    """The secret in `path` (default: `default_secret_file()`); None when there is none this
    user can read (the daemon then answers `not_your_daemon`, which says what to do)."""
    try:
        with open(path or default_secret_file(), encoding="ascii") as f:
            secret = f.read().strip()
    except (OSError, ValueError):
        return None
    return secret or None


def curve_for(address: str, key_dir: str | None = None) -> CurveKeys | None:
    """Keys for `address`: from `key_dir` if given; for a non-loopback address from the default
    key dir (a remote daemon always speaks CURVE); None on loopback without a key dir."""
    if key_dir is None and P.is_loopback(address):
        return None
    return load_curve_keys(key_dir or default_key_dir())


def load_curve_keys(key_dir: str) -> CurveKeys:
    """Read `client.key_secret` and `server.key` written by `gimp-draggan keys`."""
    client = _read_cert(os.path.join(key_dir, "client.key_secret"))
    server = _read_cert(os.path.join(key_dir, "server.key"))
    if "secret-key" not in client:
        raise ValueError(f"{key_dir}/client.key_secret has no secret key; run `gimp-draggan keys`")
    return CurveKeys(client["public-key"], client["secret-key"], server["public-key"])


def _read_cert(path: str) -> dict[str, bytes]:
    """The key lines of a ZeroMQ certificate file (ZPL text: `public-key = "..."`)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read key file {path}: {exc}; run `gimp-draggan keys`") from None
    keys: dict[str, bytes] = {}
    for line in lines:
        name, sep, value = line.strip().partition("=")
        if sep and name.strip() in ("public-key", "secret-key"):
            keys[name.strip()] = value.strip().strip('"').encode("ascii")
    if "public-key" not in keys:
        raise ValueError(f"{path} is not a gimp-draggan key file; run `gimp-draggan keys`")
    return keys


class Client:
    """Talks to one daemon address; reconnects lazily."""

    def __init__(
        self,
        address: str | None = None,
        *,
        curve: CurveKeys | None = None,
        timeout_s: float = P.REQUEST_TIMEOUT_S,
        retries: int = 1,
        heartbeat_s: float = P.HEARTBEAT_INTERVAL_S,
        silence_s: float = P.HEARTBEAT_TIMEOUT_S,
        prefer: str | None = None,
        secret: str | None = None,
    ) -> None:
        """`secret`: the daemon owner's loopback secret; None reads this user's secret file
        at each request (without CURVE: with CURVE the keys authenticate). Read late because
        the plug-in may start the daemon, which makes the file, after this client exists."""
        self.address = P.check_address(address or P.default_address())
        self.curve = curve
        self.secret = secret
        self.timeout_s = timeout_s
        self.retries = retries
        self.heartbeat_s = heartbeat_s
        self.silence_s = silence_s
        self.prefer = prefer
        self._transport: Transport | None = None
        self._ids = itertools.count(1)
        self._tag = f"{os.getpid()}-{secrets.token_hex(3)}"

    # ---- life cycle ---------------------------------------------------------------------------
    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def transport_name(self) -> str:
        return self._open().name

    def _open(self) -> Transport:
        if self._transport is None:
            if tcp_refused(self.address):
                raise DaemonNotRunning(self.address)
            other = not_zeromq(self.address)
            if other is not None:
                raise DaemonError(P.ErrorCode.PORT_TAKEN, other)
            try:
                self._transport = connect(self.address, self.curve, prefer=self.prefer)
            except TransportUnavailable as exc:
                raise DaemonError(P.ErrorCode.TRANSPORT_MISSING, str(exc)) from None
            except ConnectionRefusedError:
                raise DaemonNotRunning(self.address) from None
            except OSError as exc:
                raise DaemonError(
                    P.ErrorCode.TIMEOUT, f"cannot reach {self.address}: {exc}"
                ) from None
        return self._transport

    def _new_id(self, op: str) -> str:
        return f"{op}-{self._tag}-{next(self._ids)}"

    def _encode(
        self,
        op: str,
        fields: dict[str, Any] | None = None,
        blobs: dict[str, bytes] | None = None,
        msg_id: str | None = None,
    ) -> list[bytes]:
        """A request's frames, with the secret in its header when there is one."""
        token = self.secret if self.secret is not None or self.curve is not None else read_secret()
        if token is not None:
            fields = {**(fields or {}), P.TOKEN_FIELD: token}
        return P.encode(op, msg_id or self._new_id(op), fields, blobs)

    # ---- operations ---------------------------------------------------------------------------
    def hello(self, client: str = "gimp-draggan") -> dict[str, Any]:
        """Versions, device, models (available/cached) and limits of the daemon."""
        return self._request("hello", {"client": client}).header

    def status(self) -> dict[str, Any]:
        return self._request("status", {}).header

    def models(
        self,
        action: str = "list",
        name: str | None = None,
        on_event: EventFn | None = None,
        should_stop: StopFn | None = None,
    ) -> dict[str, Any]:
        """List models, or download one by registry name (progress phase `download`; a
        ``should_stop`` that says yes cancels it, and the daemon keeps the part to resume)."""
        fields: dict[str, Any] = {"action": action}
        if name is not None:
            try:
                fields["name"] = P.check_name(name)
            except P.ProtocolError as exc:
                raise DaemonError.of(exc) from None
        return self._request(
            "models", fields, on_event=on_event, should_stop=should_stop, job=action != "list"
        ).header

    def drag(
        self,
        request: P.JobRequest,
        *,
        on_event: EventFn | None = None,
        should_stop: StopFn | None = None,
    ) -> P.JobResult:
        """Drag handles to targets on a layer (`JobRequest.photo`) or on the model's image of a
        seed (`JobRequest.seeded`)."""
        return self._job(replace(request, op="drag"), on_event, should_stop)

    def invert(
        self,
        request: P.JobRequest,
        *,
        on_event: EventFn | None = None,
        should_stop: StopFn | None = None,
    ) -> P.JobResult:
        """Invert the crop a drag with these points/mask would use; returns its session id."""
        return self._job(replace(request, op="invert"), on_event, should_stop)

    # ---- machinery ----------------------------------------------------------------------------
    def _job(
        self, request: P.JobRequest, on_event: EventFn | None, should_stop: StopFn | None
    ) -> P.JobResult:
        try:  # The daemon's own check, before megabytes travel.
            P.checked(request)
        except P.ProtocolError as exc:
            raise DaemonError.of(exc) from None
        fields, blobs = P.job_fields(request)
        reply = self._request(
            request.op, fields, blobs, on_event=on_event, should_stop=should_stop, job=True
        )
        try:
            return P.parse_result(reply)
        except P.ProtocolError as exc:
            raise DaemonError.of(exc) from None

    def _request(
        self,
        op: str,
        fields: dict[str, Any],
        blobs: dict[str, bytes] | None = None,
        *,
        on_event: EventFn | None = None,
        should_stop: StopFn | None = None,
        job: bool = False,
    ) -> P.Message:
        msg_id = self._new_id(op)
        frames = self._encode(op, fields, blobs, msg_id)
        # A big layer takes a while to travel before the daemon can answer `queued`.
        first_answer_s = self.timeout_s + sum(map(len, frames)) / UPLOAD_BYTES_PER_S
        for attempt in range(self.retries + 1):
            try:
                self._open().send(frames)
                reply = self._await(msg_id, on_event, should_stop, job, first_answer_s)
            except KeyboardInterrupt:
                if job:
                    self._abandon(msg_id)
                raise
            except OSError:  # The stdlib transport lost its connection: a fresh one next try.
                reply = None
            if reply is not None:
                if reply.op == "error":
                    hint = reply.header.get("hint")
                    raise DaemonError(
                        P.ErrorCode.of(reply.header.get("code")),
                        str(reply.header.get("message", "error")),
                        hint if isinstance(hint, str) else None,
                    )
                return reply
            self.close()  # Lazy Pirate: drop the socket (and whatever it queued), reopen.
            if attempt == self.retries and tcp_refused(self.address):
                raise DaemonNotRunning(self.address)
        raise DaemonError(
            P.ErrorCode.TIMEOUT,
            f"no answer from the daemon at {self.address} within "
            f"{first_answer_s:.3g} s ({self.retries + 1} tries)",
        )

    def _await(
        self,
        msg_id: str,
        on_event: EventFn | None,
        should_stop: StopFn | None,
        job: bool,
        first_answer_s: float,
    ) -> P.Message | None:
        """Wait for the final reply to `msg_id`; None = no first answer in time (retry)."""
        transport = self._open()
        start = last_heard = last_beat = time.monotonic()
        acknowledged = cancel_sent = False
        cancel_deadline = 0.0
        while True:
            now = time.monotonic()
            if not acknowledged and now - start > first_answer_s:
                return None
            if acknowledged and now - last_heard > self.silence_s:
                self.close()
                raise DaemonError(
                    P.ErrorCode.TIMEOUT,
                    f"the daemon at {self.address} stopped answering "
                    f"({self.silence_s:g} s without a message)",
                )
            if cancel_sent and now > cancel_deadline:
                self.close()
                raise DaemonError(
                    P.ErrorCode.CANCELLED, "cancelled (the daemon did not confirm in time)"
                )
            if job and not cancel_sent and should_stop is not None and should_stop():
                transport.send(self._encode("cancel", {"job": msg_id}))
                cancel_sent, cancel_deadline = True, now + CANCEL_WAIT_S
            if job and acknowledged and now - last_beat >= self.heartbeat_s:
                transport.send(self._encode("heartbeat"))
                last_beat = now
            frames = transport.recv(min(0.1, self.heartbeat_s))
            if frames is None:
                continue
            last_heard = time.monotonic()
            try:
                msg = P.decode(frames)
            except P.ProtocolError:
                continue  # Not ours to fix; the daemon logs its own side.
            if msg.id != msg_id:
                continue  # Heartbeats, cancel acks, late replies of an earlier try.
            acknowledged = True
            if msg.op in P.FINAL_OPS:
                return msg
            if on_event is not None and msg.op == "progress":
                on_event(P.parse_progress(msg))
            elif on_event is not None and msg.op == "queued":
                on_event(P.QueuedEvent(int(msg.header.get("position", 0))))

    def _abandon(self, msg_id: str) -> None:
        """Best effort on Ctrl-C: tell the daemon to cancel, do not wait."""
        if self._transport is not None:
            # If the connection is gone already, the daemon cancels a vanished client's jobs.
            with contextlib.suppress(OSError):
                self._transport.send(self._encode("cancel", {"job": msg_id}))
