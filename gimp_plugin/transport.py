"""Message transport for the client: a ZeroMQ DEALER, from pyzmq when it imports, else the
standard-library ZMTP client in `zmtp.py` (GIMP's bundled Pythons may lack pyzmq).

Both give the same small interface, so `client.py` never knows which one it got.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from . import protocol


@dataclass(frozen=True)
class CurveKeys:
    """Z85-encoded CURVE keys (40 characters each) for a client of a non-loopback daemon."""

    public: bytes
    secret: bytes
    server_public: bytes

    def __post_init__(self) -> None:
        for name in ("public", "secret", "server_public"):
            if len(getattr(self, name)) != 40:
                raise ValueError(f"CURVE {name} key must be 40 Z85 characters")


class Transport(Protocol):
    name: str

    def send(self, frames: list[bytes]) -> None: ...

    def recv(self, timeout_s: float) -> list[bytes] | None: ...

    def close(self) -> None: ...


class TransportUnavailable(RuntimeError):
    """Neither pyzmq nor the fallback can serve this address/security combination."""


SEND_TIMEOUT_MS = 5000  # A DEALER's send blocks while no connection is up (e.g. CURVE refused).


class ZmqTransport:
    """pyzmq DEALER socket; one per connection, closed with LINGER 0 (lazy-pirate style)."""

    name = "pyzmq"

    def __init__(self, address: str, curve: CurveKeys | None) -> None:
        import zmq

        self._zmq = zmq
        sock: zmq.Socket = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
        sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)
        if curve is not None:
            sock.curve_publickey = curve.public
            sock.curve_secretkey = curve.secret
            sock.curve_serverkey = curve.server_public
        sock.connect(address)
        self._sock = sock
        # A DEALER reconnects silently; the monitor tells when the daemon's end went away (a
        # killed daemon), so the client can say so at once instead of after the heartbeat.
        self._monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)

    def send(self, frames: list[bytes]) -> None:
        """Queue one message; OSError (the client retries on a fresh socket) when no connection
        took it within SEND_TIMEOUT_MS."""
        try:
            self._sock.send_multipart(frames, copy=len(frames) < 2 or max(map(len, frames)) < 65536)
        except self._zmq.Again:
            raise OSError("no connection to the daemon took the message") from None

    def recv(self, timeout_s: float) -> list[bytes] | None:
        """The next message, None on timeout; ConnectionError once the connection dropped."""
        from zmq.utils.monitor import recv_monitor_message

        ready = dict(self._poller.poll(max(0, int(timeout_s * 1000))))
        if self._sock in ready:
            return list(self._sock.recv_multipart())
        if self._monitor in ready:
            event = recv_monitor_message(self._monitor)["event"]
            if event == self._zmq.EVENT_DISCONNECTED:
                raise ConnectionError("the daemon closed the connection")
        return None

    def close(self) -> None:
        self._sock.disable_monitor()
        self._monitor.close(linger=0)
        self._sock.close(linger=0)


def have_pyzmq() -> bool:
    try:
        import zmq  # noqa: F401
    except ImportError:
        return False
    return True


def connect(address: str, curve: CurveKeys | None = None, prefer: str | None = None) -> Transport:
    """Open a DEALER to `address`: pyzmq if importable, else the stdlib ZMTP client.

    `prefer` = "pyzmq" | "zmtp" forces one (tests, and the plug-in's diagnostics)."""
    protocol.check_address(address)
    use_zmq = have_pyzmq() if prefer is None else prefer == "pyzmq"
    if use_zmq:
        return ZmqTransport(address, curve)
    if curve is not None:
        raise TransportUnavailable(
            "CURVE encryption needs pyzmq, which this Python cannot import; install pyzmq for "
            "GIMP's Python, or use the daemon on this machine's loopback address"
        )
    try:
        from . import zmtp
    except ImportError as exc:
        raise TransportUnavailable(
            f"no ZeroMQ transport: pyzmq is missing and the built-in client failed to load "
            f"({exc}); re-run the gimp-draggan installer"
        ) from None
    return zmtp.connect(address)
