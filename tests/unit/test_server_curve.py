"""CURVE: a daemon with keys answers only clients whose public key it allows."""

from __future__ import annotations

import time

import pytest
import zmq
import zmq.auth
from server_fakes import FakeExecutor

from gimp_draggan.service.keys import load_server_keys, make_keys
from gimp_draggan.service.server import Server, ServerConfig
from gimp_draggan_plugin import protocol as P
from gimp_draggan_plugin import transport
from gimp_draggan_plugin.client import Client, DaemonError, curve_for, load_curve_keys
from gimp_draggan_plugin.protocol import JobRequest, Params
from gimp_draggan_plugin.transport import CurveKeys

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def keyed(tmp_path):
    key_dir = tmp_path / "keys"
    files = make_keys(key_dir)
    assert {f.name for f in files} == {
        "server.key",
        "server.key_secret",
        "client.key",
        "client.key_secret",
    }
    assert (key_dir / "server.key_secret").stat().st_mode & 0o077 == 0
    server = Server(ServerConfig(bind="tcp://0.0.0.0:*", keys=key_dir), FakeExecutor())
    address = server.start().replace("0.0.0.0", "127.0.0.1")
    yield address, key_dir, tmp_path
    server.stop()


def test_allowed_client_key_works(keyed):
    address, key_dir, _ = keyed
    with Client(address, curve=load_curve_keys(str(key_dir))) as client:
        assert client.hello()["device"] == "fake"
        r = client.drag(
            JobRequest.photo(
                pixels=bytes(16),
                width=2,
                height=2,
                pairs=[((0, 0), (1, 1))],
                params=Params(steps=2),
            )
        )
        assert r.patch == bytes([255] * 16)


def test_unknown_client_key_gets_nothing(keyed):
    address, key_dir, tmp_path = keyed
    _, secret = zmq.auth.create_certificates(str(tmp_path), "stranger")
    stranger_pub, stranger_secret = zmq.auth.load_certificate(secret)
    server_pub = load_server_keys(key_dir).public
    curve = CurveKeys(stranger_pub, stranger_secret or b"", server_pub)
    with (
        Client(address, curve=curve, timeout_s=0.7, retries=1) as client,
        pytest.raises(DaemonError) as err,
    ):
        client.hello()
    assert err.value.code == "timeout"


def test_a_refused_handshake_never_blocks_a_send(keyed, monkeypatch):
    """Once the daemon refuses the key, libzmq drops the DEALER's pipe and a send would block
    for ever; it must give up (OSError, which the client turns into a retry or a timeout)."""
    address, key_dir, tmp_path = keyed
    monkeypatch.setattr(transport, "SEND_TIMEOUT_MS", 300)
    _, secret = zmq.auth.create_certificates(str(tmp_path), "stranger")
    pub, sec = zmq.auth.load_certificate(secret)
    sock = transport.ZmqTransport(
        address, CurveKeys(pub, sec or b"", load_server_keys(key_dir).public)
    )
    try:
        with pytest.raises(OSError, match="no connection"):
            for _ in range(20):
                sock.send([b"", b"hello"])
                time.sleep(0.3)
    finally:
        sock.close()


def test_plain_client_gets_nothing(keyed):
    address, _, _ = keyed
    with Client(address, timeout_s=0.7, retries=0) as client, pytest.raises(DaemonError) as err:
        client.hello()
    assert err.value.code == "timeout"


def test_keys_refuse_to_overwrite_and_clients_find_them(keyed, monkeypatch):
    _, key_dir, _ = keyed
    with pytest.raises(FileExistsError):
        make_keys(key_dir)
    monkeypatch.setenv("GIMP_DRAGGAN_KEYS", str(key_dir))
    assert curve_for(P.DEFAULT_ADDRESS) is None
    keys = curve_for("tcp://192.168.7.7:5589")
    assert keys is not None and keys.server_public == load_server_keys(key_dir).public
