"""The standard-library ZMTP client against real pyzmq sockets on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
import zmq

from gimp_draggan_plugin import zmtp


@pytest.fixture
def router():
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield sock, f"tcp://127.0.0.1:{port}"
    sock.close()
    ctx.term()


def recv_router(sock, timeout_ms=5000):
    assert sock.poll(timeout_ms), "the ROUTER got nothing"
    return sock.recv_multipart()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_multipart_roundtrip_both_ways(router):
    sock, address = router
    dealer = zmtp.ZmtpDealer()
    dealer.connect(address)
    try:
        dealer.send([b'{"op": "hello"}', b"", b"x" * 3])
        ident, *frames = recv_router(sock)
        assert frames == [b'{"op": "hello"}', b"", b"xxx"]
        sock.send_multipart([ident, b"reply", b"second"])
        assert dealer.recv(5.0) == [b"reply", b"second"]
        assert dealer.peer_properties[b"Socket-Type"] == b"ROUTER"
    finally:
        dealer.close()


def test_identity_reaches_router(router):
    sock, address = router
    dealer = zmtp.connect(address, identity=b"plugin-42")
    assert dealer.name == "zmtp" and dealer.connected
    try:
        dealer.send([b"hi"])
        assert recv_router(sock) == [b"plugin-42", b"hi"]
    finally:
        dealer.close()


@pytest.mark.parametrize("size", [255, 256, 70_000, 5_000_000])
def test_large_frames(router, size):
    sock, address = router
    payload = os.urandom(size)
    dealer = zmtp.ZmtpDealer()
    dealer.connect(address)
    try:
        dealer.send([b"head", payload])
        ident, head, body = recv_router(sock)
        assert (head, body) == (b"head", payload)
        sock.send_multipart([ident, payload[::-1], b"tail"])
        assert dealer.recv(10.0) == [payload[::-1], b"tail"]
    finally:
        dealer.close()


def test_many_messages_in_order(router):
    sock, address = router
    dealer = zmtp.ZmtpDealer()
    dealer.connect(address)
    try:
        dealer.send([b"start"])
        ident, _ = recv_router(sock)
        for i in range(200):
            sock.send_multipart([ident, str(i).encode(), b"y" * (i * 7)])
        got = [dealer.recv(5.0) for _ in range(200)]
        assert [int(m[0]) for m in got] == list(range(200))
        assert all(len(m[1]) == i * 7 for i, m in enumerate(got))
    finally:
        dealer.close()


def test_recv_timeout_returns_none_and_keeps_partial_message(router):
    sock, address = router
    dealer = zmtp.ZmtpDealer()
    dealer.connect(address)
    try:
        t0 = time.monotonic()
        assert dealer.recv(0.2) is None
        assert time.monotonic() - t0 >= 0.19
        dealer.send([b"ping"])
        ident, _ = recv_router(sock)
        sock.send_multipart([ident, b"late"])
        assert dealer.recv(5.0) == [b"late"]
    finally:
        dealer.close()


def test_partial_frames_across_timeouts():
    """A message that arrives in pieces, with pauses longer than the timeout, is still whole."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    peer_ready = zmtp.encode_command(b"READY", zmtp.encode_properties({b"Socket-Type": b"ROUTER"}))
    message = zmtp.encode_frame(b"a" * 300, more=True) + zmtp.encode_frame(b"end", more=False)

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.recv(64)
            conn.sendall(zmtp.GREETING + peer_ready)
            for i in range(0, len(message), 100):
                time.sleep(0.15)
                conn.sendall(message[i : i + 100])
            time.sleep(0.5)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    dealer = zmtp.ZmtpDealer()
    dealer.connect(f"tcp://127.0.0.1:{port}")
    try:
        timeouts = 0
        while True:
            got = dealer.recv(0.05)
            if got is not None:
                break
            timeouts += 1
        assert got == [b"a" * 300, b"end"]
        assert timeouts >= 3
    finally:
        dealer.close()
        thread.join()
        server.close()


def test_big_frame_across_timeouts():
    """A frame over BIG_FRAME arriving slowly is read into its own buffer across timeouts."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    peer_ready = zmtp.encode_command(b"READY", zmtp.encode_properties({b"Socket-Type": b"ROUTER"}))
    payload = os.urandom(zmtp.BIG_FRAME + 12345)
    message = zmtp.encode_frame(b"hdr", more=True) + zmtp.encode_frame(payload, more=False)
    chunk = len(message) // 4 + 1

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.recv(64)
            conn.sendall(zmtp.GREETING + peer_ready)
            for i in range(0, len(message), chunk):
                time.sleep(0.15)
                conn.sendall(message[i : i + chunk])
            time.sleep(0.5)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    dealer = zmtp.connect(f"tcp://127.0.0.1:{port}")
    try:
        timeouts = 0
        while (got := dealer.recv(0.05)) is None:
            timeouts += 1
        assert got == [b"hdr", payload]
        assert timeouts >= 3
    finally:
        dealer.close()
        thread.join()
        server.close()


def test_server_down_gives_clear_error():
    address = f"tcp://127.0.0.1:{free_port()}"
    dealer = zmtp.ZmtpDealer()
    with pytest.raises(zmtp.ZmtpConnectionError, match=r"cannot connect to tcp://127\.0\.0\.1"):
        dealer.connect(address)
    assert not dealer.connected
    with pytest.raises(ConnectionError):
        dealer.send([b"x"])


def test_server_closing_mid_wait_raises():
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    dealer = zmtp.ZmtpDealer()
    dealer.connect(f"tcp://127.0.0.1:{port}")
    dealer.send([b"x"])
    recv_router(sock)
    sock.close()
    ctx.term()
    with pytest.raises(zmtp.ZmtpConnectionError, match="closed the connection"):
        dealer.recv(5.0)
    assert not dealer.connected


def test_not_a_zeromq_peer():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n" + b" " * 64)
            time.sleep(0.3)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    dealer = zmtp.ZmtpDealer()
    try:
        with pytest.raises(zmtp.ZmtpError, match="not a ZeroMQ socket"):
            dealer.connect(f"tcp://127.0.0.1:{port}")
        assert not dealer.connected
    finally:
        thread.join()
        server.close()


def test_silent_peer_handshake_times_out():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    dealer = zmtp.ZmtpDealer(connect_timeout_s=0.3)
    try:
        with pytest.raises(zmtp.ZmtpConnectionError, match="timed out waiting for the ZMTP"):
            dealer.connect(f"tcp://127.0.0.1:{port}")
    finally:
        server.close()


def test_curve_server_is_refused_with_a_hint():
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    public, secret = zmq.curve_keypair()
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    dealer = zmtp.ZmtpDealer()
    try:
        with pytest.raises(zmtp.ZmtpError, match=r"CURVE.*install pyzmq"):
            dealer.connect(f"tcp://127.0.0.1:{port}")
    finally:
        sock.close()
        ctx.term()


def test_heartbeat_ping_is_answered():
    """A ROUTER with ZMTP heartbeats keeps the connection: our PONGs count as traffic."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.setsockopt(zmq.HEARTBEAT_IVL, 100)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 300)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    dealer = zmtp.ZmtpDealer()
    dealer.connect(f"tcp://127.0.0.1:{port}")
    try:
        dealer.send([b"x"])
        ident, _ = recv_router(sock)
        assert dealer.recv(1.0) is None  # PINGs arrive and are answered meanwhile
        sock.send_multipart([ident, b"still here"])
        assert dealer.recv(5.0) == [b"still here"]
    finally:
        dealer.close()
        sock.close()
        ctx.term()


@pytest.mark.parametrize(
    "address",
    ["ipc:///tmp/x", "tcp://127.0.0.1", "tcp://:5", "tcp://*:5555", "tcp://h:0", "tcp://h:99999"],
)
def test_bad_addresses(address):
    with pytest.raises(ValueError, match="tcp://"):
        zmtp.parse_address(address)


def test_ipv6_address_parses():
    assert zmtp.parse_address("tcp://[::1]:5555") == ("::1", 5555)
    assert zmtp.parse_address("tcp://localhost:1") == ("localhost", 1)


def test_empty_message_refused():
    with pytest.raises(ValueError, match="at least one frame"):
        zmtp.ZmtpDealer().send([])
