"""A standard-library ZeroMQ DEALER client (ZMTP 3.x, NULL mechanism).

GIMP's own Python on Windows (MSYS2), macOS and the Flatpak has no pyzmq, so the plug-in can fall
back to this: it speaks the wire protocol of RFC 23/ZMTP (3.0, with 3.1's PING/PONG answered) to the
daemon's real ROUTER socket over TCP. One connection, synchronous, no reconnect: a lost connection
raises `ZmtpConnectionError` and the caller decides whether to open a new one. CURVE is not spoken;
encrypted LAN use needs pyzmq.
"""

from __future__ import annotations

import socket
import struct
import time

from . import protocol

SIGNATURE = b"\xff" + b"\x00" * 8 + b"\x7f"
VERSION = bytes((3, 0))
MECHANISM = b"NULL".ljust(20, b"\x00")
GREETING = SIGNATURE + VERSION + MECHANISM + b"\x00" + b"\x00" * 31  # as-server = 0, filler
GREETING_SIZE = 64

FLAG_MORE = 0x01
FLAG_LONG = 0x02
FLAG_COMMAND = 0x04

MAX_FRAME = 1 << 34  # 16 GiB: anything larger is a corrupt stream, not a message.
BIG_FRAME = 1 << 20  # Frames from this size are sent and received without extra copies.
PEER_TYPES = (b"ROUTER", b"DEALER")  # what a DEALER may talk to (RFC 28).


class ZmtpError(Exception):
    """The peer broke the protocol or refused the handshake."""


class ZmtpConnectionError(ZmtpError, ConnectionError):
    """No connection to the peer (refused, unreachable, closed, or the handshake timed out)."""


def parse_address(address: str) -> tuple[str, int]:
    """`tcp://host:port` -> (host, port), by the protocol's one parser; other transports need
    pyzmq."""
    peer = protocol.parse_address(address).tcp_peer  # ValueError naming tcp://HOST:PORT.
    if peer is None:
        raise ValueError(
            f"address {address!r} is not tcp://HOST:PORT to connect to; the built-in ZeroMQ "
            "client speaks TCP only (install pyzmq for other transports)"
        )
    return peer


def encode_frame(body: bytes, more: bool, command: bool = False) -> bytes:
    """One ZMTP frame: flags, 1- or 8-byte size, body."""
    flags = (FLAG_MORE if more else 0) | (FLAG_COMMAND if command else 0)
    if len(body) > 255:
        return struct.pack(">BQ", flags | FLAG_LONG, len(body)) + body
    return struct.pack(">BB", flags, len(body)) + body


def encode_command(name: bytes, data: bytes) -> bytes:
    if not 0 < len(name) < 256:
        raise ValueError("a ZMTP command name is 1-255 bytes")
    return encode_frame(bytes((len(name),)) + name + data, more=False, command=True)


def encode_properties(props: dict[bytes, bytes]) -> bytes:
    out = bytearray()
    for name, value in props.items():
        out += bytes((len(name),)) + name + struct.pack(">I", len(value)) + value
    return bytes(out)


def decode_properties(data: bytes) -> dict[bytes, bytes]:
    props: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        n = data[pos]
        name = data[pos + 1 : pos + 1 + n]
        pos += 1 + n
        if pos + 4 > len(data):
            raise ZmtpError("truncated property in the peer's READY command")
        (size,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if pos + size > len(data):
            raise ZmtpError("truncated property value in the peer's READY command")
        props[name] = data[pos : pos + size]
        pos += size
    return props


class ZmtpDealer:
    """A DEALER socket over one TCP connection: `connect`, `send`, `recv`, `close`."""

    name = "zmtp"

    def __init__(self, identity: bytes = b"", connect_timeout_s: float = 5.0) -> None:
        if len(identity) > 255:
            raise ValueError("a ZeroMQ identity is at most 255 bytes")
        self.identity = identity
        self.connect_timeout_s = connect_timeout_s
        self.peer_properties: dict[bytes, bytes] = {}
        self._sock: socket.socket | None = None
        self._address = ""
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._big: tuple[int, bytearray, int] | None = None  # flags, body, bytes filled so far

    # -- connection -------------------------------------------------------------------------
    def connect(self, address: str) -> None:
        """Open the TCP connection and finish the ZMTP handshake (raises if the peer is absent)."""
        if self._sock is not None:
            raise ZmtpError("this socket is already connected; close it first")
        host, port = parse_address(address)
        self._address = address
        deadline = time.monotonic() + self.connect_timeout_s
        try:
            sock = socket.create_connection((host, port), timeout=self.connect_timeout_s)
        except OSError as exc:
            reason = exc.strerror or exc
            raise ZmtpConnectionError(f"cannot connect to {address}: {reason}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._buf.clear()
        self._parts = []
        self._big = None
        try:
            self._handshake(deadline)
        except BaseException:
            self.close()
            raise

    def _handshake(self, deadline: float) -> None:
        self._sendall(GREETING)
        try:
            greeting = self._read_exact(GREETING_SIZE, deadline, "the ZMTP greeting")
        except ZmtpConnectionError as exc:
            if "timed out" in str(exc):
                raise
            raise ZmtpConnectionError(
                f"{self._address} closed the connection during the ZeroMQ handshake: it is not "
                "a ZeroMQ socket, or it requires CURVE encryption, which the built-in client "
                "does not speak (install pyzmq for CURVE)"
            ) from exc
        if greeting[0] != 0xFF or greeting[9] != 0x7F:
            raise ZmtpError(f"{self._address} is not a ZeroMQ socket (bad greeting signature)")
        if greeting[10] < 3:
            raise ZmtpError(f"{self._address} speaks ZMTP {greeting[10]}.x; version 3 is needed")
        mechanism = greeting[12:32].rstrip(b"\x00")
        if mechanism != b"NULL":
            raise ZmtpError(
                f"{self._address} wants the {mechanism.decode(errors='replace')} "
                "security mechanism; the built-in client speaks NULL only "
                "(install pyzmq for CURVE)"
            )
        self._sendall(
            encode_command(
                b"READY", encode_properties({b"Socket-Type": b"DEALER", b"Identity": self.identity})
            )
        )
        while True:
            frame = self._read_frame(deadline, "the peer's READY command")
            if frame is None:
                continue
            flags, body = frame
            if not flags & FLAG_COMMAND:
                raise ZmtpError("the peer sent a message before finishing the handshake")
            name, data = self._split_command(body)
            if name == b"ERROR":
                reason = data[1 : 1 + data[0]].decode(errors="replace") if data else ""
                raise ZmtpError(f"{self._address} refused the connection: {reason}")
            if name == b"READY":
                self.peer_properties = decode_properties(data)
                peer_type = self.peer_properties.get(b"Socket-Type", b"")
                if peer_type not in PEER_TYPES:
                    raise ZmtpError(
                        f"{self._address} is a {peer_type.decode(errors='replace')} "
                        "socket; a DEALER needs a ROUTER or DEALER peer"
                    )
                return

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    # -- messages ---------------------------------------------------------------------------
    def send(self, frames: list[bytes]) -> None:
        """Send one multipart message (at least one frame)."""
        if not frames:
            raise ValueError("a message needs at least one frame")
        pending: list[bytes] = []
        for i, frame in enumerate(frames):
            more = i < len(frames) - 1
            if len(frame) < BIG_FRAME:
                pending.append(encode_frame(bytes(frame), more))
                continue
            # A big frame (pixels) goes out as it is, after its header: no copy of the payload.
            header = struct.pack(">BQ", (FLAG_MORE if more else 0) | FLAG_LONG, len(frame))
            self._sendall(b"".join([*pending, header]))
            self._sendall(frame)
            pending = []
        if pending:
            self._sendall(b"".join(pending))

    def recv(self, timeout_s: float | None) -> list[bytes] | None:
        """The next whole message, or None when `timeout_s` passes first (None = wait forever)."""
        deadline = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)
        while True:
            frame = self._read_frame(deadline, None)
            if frame is None:
                return None
            flags, body = frame
            if flags & FLAG_COMMAND:
                self._on_command(body)
                continue
            self._parts.append(body)
            if not flags & FLAG_MORE:
                message, self._parts = self._parts, []
                return message

    def _on_command(self, body: bytes) -> None:
        name, data = self._split_command(body)
        if name == b"PING":  # ZMTP 3.1 heartbeat: 2-byte TTL, then a context to echo back.
            self._sendall(encode_command(b"PONG", data[2:18]))
        elif name == b"ERROR":
            reason = data[1 : 1 + data[0]].decode(errors="replace") if data else ""
            self.close()
            raise ZmtpConnectionError(f"{self._address} closed the connection: {reason}")
        # PONG and unknown commands need no answer.

    @staticmethod
    def _split_command(body: bytes) -> tuple[bytes, bytes]:
        if not body or body[0] + 1 > len(body):
            raise ZmtpError("malformed ZMTP command frame")
        n = body[0]
        return body[1 : 1 + n], body[1 + n :]

    # -- bytes on the wire --------------------------------------------------------------------
    def _require_socket(self) -> socket.socket:
        if self._sock is None:
            raise ZmtpConnectionError("not connected (connect first, or the connection was lost)")
        return self._sock

    def _sendall(self, data: bytes) -> None:
        sock = self._require_socket()
        try:
            sock.settimeout(None)
            sock.sendall(data)
        except OSError as exc:
            self.close()
            raise ZmtpConnectionError(f"lost the connection to {self._address}: {exc}") from exc

    def _read_big(
        self, big: tuple[int, bytearray, int], deadline: float | None, what: str | None
    ) -> tuple[int, bytes] | None:
        """Go on filling the big frame in progress; None on timeout (what is read stays)."""
        flags, body, filled = big
        view = memoryview(body)
        while filled < len(body):
            n = self._recv_into(view[filled:], deadline, what)
            if n is None:
                self._big = (flags, body, filled)
                return None
            filled += n
        self._big = None
        return flags, bytes(body)

    def _recv_into(self, view: memoryview, deadline: float | None, what: str | None) -> int | None:
        sock = self._require_socket()
        if deadline is None:
            sock.settimeout(None)
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                self._timed_out(what)
                return None
            sock.settimeout(left)
        try:
            n = sock.recv_into(view)
        except TimeoutError:
            self._timed_out(what)
            return None
        except OSError as exc:
            self.close()
            raise ZmtpConnectionError(f"lost the connection to {self._address}: {exc}") from exc
        if n == 0:
            self.close()
            raise ZmtpConnectionError(f"{self._address} closed the connection")
        return n

    def _fill(self, deadline: float | None, what: str | None) -> bool:
        """Read more bytes; False when the deadline passed and `what` is None, else raise."""
        sock = self._require_socket()
        if deadline is None:
            sock.settimeout(None)
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                return self._timed_out(what)
            sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            return self._timed_out(what)
        except OSError as exc:
            self.close()
            raise ZmtpConnectionError(f"lost the connection to {self._address}: {exc}") from exc
        if not chunk:
            self.close()
            raise ZmtpConnectionError(f"{self._address} closed the connection")
        self._buf += chunk
        return True

    def _timed_out(self, what: str | None) -> bool:
        if what is None:
            return False
        self.close()
        raise ZmtpConnectionError(f"timed out waiting for {what} from {self._address}")

    def _read_exact(self, n: int, deadline: float | None, what: str) -> bytes:
        while len(self._buf) < n:
            self._fill(deadline, what)
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _read_frame(self, deadline: float | None, what: str | None) -> tuple[int, bytes] | None:
        """One whole frame, reading as needed; None on timeout (partial data stays buffered)."""
        while True:
            if self._big is not None:
                return self._read_big(self._big, deadline, what)
            if len(self._buf) >= 2:
                flags = self._buf[0]
                if flags & ~(FLAG_MORE | FLAG_LONG | FLAG_COMMAND):
                    self.close()
                    raise ZmtpError(f"bad ZMTP frame flags 0x{flags:02x} from {self._address}")
                head = 9 if flags & FLAG_LONG else 2
                if len(self._buf) >= head:
                    if flags & FLAG_LONG:
                        (size,) = struct.unpack_from(">Q", self._buf, 1)
                    else:
                        size = self._buf[1]
                    if size > MAX_FRAME:
                        self.close()
                        raise ZmtpError(
                            f"frame of {size} bytes from {self._address}: corrupt stream"
                        )
                    if len(self._buf) >= head + size:
                        body = bytes(self._buf[head : head + size])
                        del self._buf[: head + size]
                        return flags, body
                    if size >= BIG_FRAME:  # read the rest straight into its own buffer
                        big = bytearray(size)
                        have = len(self._buf) - head
                        big[:have] = self._buf[head:]
                        self._buf.clear()
                        self._big = (flags, big, have)
                        continue
            if not self._fill(deadline, what):
                return None


def connect(address: str, identity: bytes = b"", timeout_s: float = 5.0) -> ZmtpDealer:
    """A connected DEALER (the transport interface); ZmtpConnectionError if no one listens."""
    dealer = ZmtpDealer(identity, timeout_s)
    dealer.connect(address)
    return dealer
