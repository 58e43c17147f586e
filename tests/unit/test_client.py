"""The client library: not running, Lazy Pirate retries, silence, local checks, heartbeats, and
both transports (pyzmq and the stdlib ZMTP client) against the real daemon."""

from __future__ import annotations

import threading
import time

import pytest
import zmq
from server_fakes import FakeExecutor

from gimp_draggan.service.server import Server, ServerConfig
from gimp_draggan_plugin import protocol as P
from gimp_draggan_plugin.client import Client, DaemonError, DaemonNotRunning
from gimp_draggan_plugin.protocol import JobRequest, Params

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeDaemon(threading.Thread):
    """A ROUTER that follows a script: `behave(msg, identity) -> list of replies`."""

    def __init__(self, behave) -> None:
        super().__init__(daemon=True)
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{port}"
        self.behave = behave
        self.seen: list[tuple[bytes, P.Message]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            ident, *frames = self.sock.recv_multipart()
            msg = P.decode(frames)
            self.seen.append((ident, msg))
            for reply in self.behave(msg, len(self.seen)):
                self.sock.send_multipart([ident, *reply])
        self.sock.close(linger=0)


@pytest.fixture
def fake():
    daemons = []

    def make(behave):
        daemons.append(FakeDaemon(behave))
        daemons[-1].start()
        return daemons[-1]

    yield make
    for d in daemons:
        d.stop.set()
        d.join(2)


@pytest.fixture
def daemon():
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*"), FakeExecutor(step_s=0.01))
    server.start()
    yield server
    server.stop()


def test_not_running_is_a_clear_error_naming_the_start_command():
    address = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with Client(address) as client, pytest.raises(DaemonNotRunning) as err:
        client.hello()
    assert time.monotonic() - started < P.REQUEST_TIMEOUT_S  # Refused at once, no timeout.
    assert err.value.code == "not_running"
    assert str(err.value) == (
        f"daemon not running at {address}. Start it with `gimp-draggan serve --bind {address}`."
    )


def test_lazy_pirate_resends_on_a_fresh_socket(fake):
    def behave(msg, n):
        return [] if n == 1 else [P.encode("hello", msg.id, {"device": "x"})]

    d = fake(behave)
    with Client(d.address, timeout_s=0.5, retries=2) as client:
        assert client.hello()["device"] == "x"
    (id1, m1), (id2, m2) = d.seen
    assert m1.id == m2.id and id1 != id2


def test_no_answer_after_all_retries_is_a_timeout(fake):
    d = fake(lambda msg, n: [])
    with Client(d.address, timeout_s=0.3, retries=1) as client, pytest.raises(DaemonError) as e:
        client.status()
    assert e.value.code == "timeout" and len(d.seen) == 2


def test_silence_after_a_job_was_queued_is_an_error(fake):
    d = fake(lambda msg, n: [P.encode("queued", msg.id, {"position": 1})] if n == 1 else [])
    with (
        Client(d.address, silence_s=0.6, heartbeat_s=0.1) as client,
        pytest.raises(DaemonError) as err,
    ):
        client.drag(JobRequest.seeded(seed=1, pairs=[((1, 1), (5, 5))]))
    assert err.value.code == "timeout" and "stopped answering" in str(err.value)
    assert any(m.op == "heartbeat" for _, m in d.seen)


def test_bad_requests_are_refused_before_sending(fake):
    d = fake(lambda msg, n: [])
    with Client(d.address) as client:
        with pytest.raises(DaemonError) as err:
            client.drag(
                JobRequest.photo(
                    pixels=bytes(16),
                    width=2,
                    height=2,
                    pairs=[((0, 0), (1, 1))] * (P.MAX_POINTS + 1),
                )
            )
        assert err.value.code == "bad_request"
        with pytest.raises(DaemonError):
            client.drag(
                JobRequest.photo(pixels=bytes(10), width=2, height=2, pairs=[((0, 0), (1, 1))])
            )
        with pytest.raises(DaemonError):
            client.models("download", "../x")
    assert d.seen == []


def test_error_replies_become_daemon_errors_with_a_hint(fake):
    d = fake(lambda msg, n: [P.error_frames(msg.id, "model_not_cached", "model 'm' is missing")])
    with Client(d.address) as client, pytest.raises(DaemonError) as err:
        client.drag(JobRequest.seeded(seed=1, pairs=[((1, 1), (5, 5))], model="m"))
    assert err.value.code == "model_not_cached" and err.value.message == "model 'm' is missing"
    assert "gimp-draggan models download" in str(err.value)


@pytest.mark.parametrize("prefer", ["pyzmq", "zmtp"])
def test_both_transports_drive_the_real_daemon(daemon, prefer):
    events = []
    with Client(daemon.address, prefer=prefer) as client:
        assert client.transport_name == prefer
        assert client.hello()["device"] == "fake"
        r = client.drag(
            JobRequest.photo(
                pixels=bytes(range(16)),
                width=2,
                height=2,
                pairs=[((0, 0), (1, 1))],
                params=Params(steps=3),
            ),
            on_event=events.append,
        )
        assert r.patch == bytes(255 - b for b in range(16))
        assert [type(e).__name__ for e in events] == ["QueuedEvent"] + ["ProgressEvent"] * 3
        started = time.monotonic()
        with pytest.raises(DaemonError) as err:
            client.drag(
                JobRequest.photo(
                    pixels=bytes(16),
                    width=2,
                    height=2,
                    pairs=[((0, 0), (1, 1))],
                    params=Params(steps=2000),
                ),
                should_stop=lambda: time.monotonic() - started > 0.2,
            )
        assert err.value.code == "cancelled"
        assert client.status()["running"] is None
