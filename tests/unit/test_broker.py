"""The broker with two CPU daemons on loopback: load balancing, sticky sessions, cancel,
vanished clients and daemons, and a real tiny-model job through the whole chain."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from server_fakes import FakeExecutor
from service_helpers import Raw, save_tiny_model, single_torch_thread, wait_for

from gimp_draggan.broker import Broker, BrokerConfig
from gimp_draggan.executor import PipelineExecutor, seed_drag
from gimp_draggan.server import Server, ServerConfig
from gimp_draggan_plugin import protocol as P
from gimp_draggan_plugin.client import Client, DaemonError

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    yield from single_torch_thread()


PHOTO = {"width": 2, "height": 2, "pairs": [[0, 0, 1, 1]]}


@pytest.fixture
def farm():
    broker = Broker(BrokerConfig(front="tcp://127.0.0.1:*", back="tcp://127.0.0.1:*"))
    front, back = broker.start()
    servers: list[Server] = []

    def add(executor) -> Server:
        server = Server(ServerConfig(connect=back, heartbeat_s=0.2), executor)
        server.start()
        servers.append(server)
        return server

    yield broker, front, add
    for s in servers:
        s.stop()
    broker.stop()


def two_workers(broker, add, step_s=0.02):
    a, b = FakeExecutor(step_s=step_s, name="A"), FakeExecutor(step_s=step_s, name="B")
    servers = add(a), add(b)
    assert wait_for(lambda: len(broker.workers) == 2, 5)
    return a, b, servers


def test_no_daemon_is_a_clear_error(farm):
    _, front, _ = farm
    with Client(front) as client, pytest.raises(DaemonError) as err:
        client.hello()
    assert err.value.code == "no_worker" and "serve --broker" in str(err.value)


def test_jobs_spread_over_both_daemons_and_sessions_stick(farm):
    broker, front, add = farm
    a, b, _ = two_workers(broker, add)
    results: dict[int, P.JobResult] = {}

    def job(i: int) -> None:
        with Client(front) as client:
            results[i] = client.drag(pixels=bytes([i] * 16), width=2, height=2,
                                     pairs=[((0, 0), (1, 1))], params={"steps": 10})

    threads = [threading.Thread(target=job, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 6
    assert a.runs > 0 and b.runs > 0 and a.runs + b.runs == 6
    assert all(r.patch == bytes([255 - i] * 16) for i, r in results.items())

    # A session made on A goes back to A, whatever the load says.
    session = next(r.session for r in results.values() if r.session.startswith("A-"))
    runs_a, runs_b = a.runs, b.runs
    with Client(front) as client:
        for _ in range(3):
            client.drag(pixels=bytes(16), width=2, height=2, pairs=[((0, 0), (1, 1))],
                        params={"steps": 1}, session=session)
        assert client.hello()["device"] in ("A", "B")
    assert (a.runs, b.runs) == (runs_a + 3, runs_b)


def test_cancel_through_the_broker(farm):
    broker, front, add = farm
    a, b, _ = two_workers(broker, add, step_s=0.01)
    raw = Raw(front)
    try:
        raw.request("drag", "long", {**PHOTO, "params": {"steps": 2000}}, {"pixels": bytes(16)})
        raw.until("long", ("progress",))
        raw.request("cancel", "c", {"job": "long"})
        assert raw.until("long")[0].header["code"] == "cancelled"
        raw.request("cancel", "c2", {"job": "nothing"})
        assert raw.until("c2")[0].header["found"] is False
    finally:
        raw.close()
    assert wait_for(lambda: not (a.running.is_set() or b.running.is_set()), 1.0)


def test_a_vanished_client_cancels_its_job_on_the_daemon(farm):
    broker, front, add = farm
    a, b, _ = two_workers(broker, add, step_s=0.01)
    raw = Raw(front)
    raw.request("drag", "orphan", {**PHOTO, "params": {"steps": 2000}}, {"pixels": bytes(16)})
    raw.until("orphan", ("progress",))
    raw.close()  # The socket (and its TCP connection) goes away mid-drag.
    assert wait_for(lambda: not (a.running.is_set() or b.running.is_set()), 1.0)
    assert broker.routes == {}


def test_a_lost_daemon_fails_its_requests_with_worker_lost(farm):
    broker, front, add = farm
    executor = FakeExecutor(step_s=0.01, name="A")
    server = add(executor)
    assert wait_for(lambda: len(broker.workers) == 1, 5)
    broker.config = BrokerConfig(front=front, back="x", heartbeat_s=0.1, silence_s=0.5)
    raw = Raw(front)
    try:
        raw.request("drag", "doomed", {**PHOTO, "params": {"steps": 2000}},
                    {"pixels": bytes(16)})
        raw.until("doomed", ("progress",))
        server.stop()
        msg, _ = raw.until("doomed", timeout_s=10)
        assert msg.op == "error" and msg.header["code"] == "worker_lost"
    finally:
        raw.close()
    assert broker.workers == {}


def test_real_tiny_model_job_through_broker_equals_in_process(farm, tmp_path):
    broker, front, add = farm
    path = save_tiny_model(tmp_path)
    for _ in range(2):
        add(PipelineExecutor("cpu", files={"tiny": path}))
    assert wait_for(lambda: len(broker.workers) == 2, 5)
    pairs = [((10.0, 12.0), (18.0, 12.0))]
    with Client(front) as client:
        r = client.drag(seed=11, pairs=pairs, model="tiny", params={"steps": 3})
    local = PipelineExecutor("cpu", files={"tiny": path})
    image, result = seed_drag(local._generator(str(path)), 11, pairs, {"steps": 3}, None, "cpu",
                              lambda e: None, lambda: False)
    got = np.frombuffer(r.patch, np.uint8).reshape(32, 32, 4)[:, :, :3]
    assert np.array_equal(got, image) and r.points == result.points


def test_broker_with_curve_keys_end_to_end(tmp_path):
    from gimp_draggan.keys import make_keys
    from gimp_draggan_plugin.client import load_curve_keys

    key_dir = tmp_path / "keys"
    make_keys(key_dir)
    broker = Broker(BrokerConfig(front="tcp://0.0.0.0:*", back="tcp://0.0.0.0:*", keys=key_dir))
    front, back = (a.replace("0.0.0.0", "127.0.0.1") for a in broker.start())
    server = Server(ServerConfig(connect=back, keys=key_dir, heartbeat_s=0.2), FakeExecutor())
    server.start()
    try:
        assert wait_for(lambda: len(broker.workers) == 1, 5)
        with Client(front, curve=load_curve_keys(str(key_dir))) as client:
            assert client.hello()["device"] == "fake"
        with Client(front, timeout_s=0.5, retries=0) as plain, pytest.raises(DaemonError):
            plain.hello()
    finally:
        server.stop()
        broker.stop()
