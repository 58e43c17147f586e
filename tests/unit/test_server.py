"""The daemon's socket loop on real sockets, with a model-free executor: ops, errors, queue,
cancel, vanished clients, out-of-memory recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from server_fakes import FakeExecutor
from service_helpers import Raw, wait_for

from gimp_draggan.service.server import Server, ServerConfig, ServerError
from gimp_draggan_plugin import protocol as P

pytestmark = pytest.mark.timeout(60)

PHOTO = {"width": 2, "height": 2, "depth": "u8", "pairs": [[0, 0, 1, 1]]}
PIXELS = {"pixels": bytes(range(16))}


@pytest.fixture
def service(request):
    kwargs = getattr(request, "param", {})
    executor = FakeExecutor(step_s=kwargs.pop("step_s", 0.005))
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*", **kwargs), executor)
    address = server.start()
    raws: list[Raw] = []

    def raw() -> Raw:
        raws.append(Raw(address))
        return raws[-1]

    yield server, executor, raw
    for r in raws:
        r.close()
    server.stop()


def drag(raw, msg_id, steps=3, **extra):
    fields = {**PHOTO, "params": {"steps": steps}, **extra}
    raw.request("drag", msg_id, fields, PIXELS)


def test_hello_reports_versions_device_models_and_limits(service):
    _, _, raw = service
    r = raw()
    r.request("hello", "h1", {"client": "test"})
    msg, _ = r.until("h1")
    h = msg.header
    assert msg.op == "hello" and h["protocol"] == P.PROTOCOL_VERSION and h["device"] == "fake"
    assert h["models"] == [{"name": "tiny", "cached": True}] and h["default_model"] == "tiny"
    assert h["limits"]["max_points"] == P.MAX_POINTS
    assert h["limits"]["params"]["steps"]["default"] == 200


def test_drag_streams_queued_progress_then_one_result(service):
    _, executor, raw = service
    r = raw()
    drag(r, "d1", steps=4)
    msg, before = r.until("d1")
    assert msg.op == "result"
    assert [m.op for m in before] == ["queued"] + ["progress"] * 4
    assert before[0].header["position"] == 1
    assert [m.header["step"] for m in before[1:]] == [1, 2, 3, 4]
    assert msg.blobs["patch"] == bytes(255 - b for b in range(16))
    assert msg.header["steps"] == 4 and executor.runs == 1
    assert r.recv(0.2) is None  # Nothing after the final reply.


@pytest.mark.parametrize(
    "frames, code",
    [
        ([b"not json"], "bad_message"),
        ([b'{"v": 1, "op": "fly", "id": "x1"}'], "unknown_op"),
        ([b'{"v": 3, "op": "hello", "id": "x1"}'], "bad_version"),
        (P.encode("drag", "x1", PHOTO, {"pixels": bytes(15)}), "bad_request"),
        (P.encode("drag", "x1", {**PHOTO, "model": "nope"}, PIXELS), "unknown_model"),
        (P.encode("drag", "x1", {**PHOTO, "width": 90000, "height": 90000}, PIXELS), "too_large"),
        (P.encode("models", "x1", {"action": "download", "name": "nope"}), "unknown_model"),
        (P.encode("models", "x1", {"action": "burn"}), "bad_request"),
    ],
)
def test_bad_requests_get_an_error_and_the_daemon_keeps_serving(service, frames, code):
    _, _, raw = service
    r = raw()
    r.send(frames)
    msg = r.recv()
    assert msg is not None and msg.op == "error" and msg.header["code"] == code
    assert msg.id in ("x1", "-") and msg.header["message"] and msg.header["hint"]
    r.request("hello", "after")
    assert r.until("after")[0].op == "hello"


def test_model_not_cached_and_unknown_session_are_errors(service):
    _, executor, raw = service
    executor.models = ("tiny", "big")
    r = raw()
    r.request("drag", "m1", {**PHOTO, "model": "big"}, PIXELS)
    assert r.until("m1")[0].header["code"] == "model_not_cached"
    executor.fail_next = P.ProtocolError(P.ErrorCode.UNKNOWN_SESSION, "unknown session 'zz'")
    drag(r, "m2", session="zz")
    assert r.until("m2")[0].header["code"] == "unknown_session"


def test_models_list_and_download_with_progress(service):
    _, executor, raw = service
    executor.models = ("tiny", "big")
    r = raw()
    r.request("models", "l1", {"action": "list"})
    assert [m["name"] for m in r.until("l1")[0].header["models"]] == ["tiny", "big"]
    r.request("models", "l2", {"action": "download", "name": "big"})
    msg, before = r.until("l2")
    assert msg.op == "models" and msg.header["downloaded"] == "big"
    assert any(m.op == "progress" and m.header["phase"] == "download" for m in before)
    assert {"name": "big", "cached": True} in msg.header["models"]


@pytest.mark.parametrize("service", [{"max_queue": 2, "step_s": 0.02}], indirect=True)
def test_queue_positions_and_queue_full(service):
    _, executor, raw = service
    r = raw()
    drag(r, "q0", steps=15)
    assert wait_for(executor.running.is_set, 5)
    drag(r, "q1")
    drag(r, "q2")
    drag(r, "q3")
    full, seen = r.until("q3")
    assert full.op == "error" and full.header["code"] == "queue_full"
    r.request("status", "st")
    status, more = r.until("st")
    assert status.header["waiting"] == 2 and status.header["running"]["op"] == "drag"
    results = {}
    positions = {"q0": [], "q1": [], "q2": []}
    pending = seen + more
    while len(results) < 3:
        msg = pending.pop(0) if pending else r.recv()
        assert msg is not None
        if msg.op == "queued":
            positions[msg.id].append(msg.header["position"])
        elif msg.op == "result":
            results[msg.id] = msg
    assert positions == {"q0": [1], "q1": [1], "q2": [2, 1]}


def test_cancel_mid_drag_within_one_step(service):
    _, executor, raw = service
    r = raw()
    drag(r, "c1", steps=2000)
    r.until("c1", ("progress",))
    r.request("cancel", "x", {"job": "c1"})
    final, before = r.until("c1")
    assert final.op == "error" and final.header["code"] == "cancelled"
    acks = [m for m in before if m.id == "x"]
    ack = acks[0] if acks else r.until("x")[0]
    assert ack.op == "cancel" and ack.header["found"] is True
    assert wait_for(lambda: not executor.running.is_set(), 1.0)
    r.request("cancel", "y", {"job": "c1"})
    assert r.until("y")[0].header["found"] is False


def test_cancel_of_a_queued_job_drops_it(service):
    _, executor, raw = service
    r = raw()
    drag(r, "a", steps=2000)
    r.until("a", ("progress",))
    drag(r, "b")
    r.until("b", ("queued",))
    r.request("cancel", "cb", {"job": "b"})
    assert r.until("b")[0].header["code"] == "cancelled"
    r.request("cancel", "ca", {"job": "a"})
    assert r.until("a")[0].header["code"] == "cancelled"
    assert executor.runs == 1


def test_a_client_cannot_cancel_another_clients_job(service):
    _, _, raw = service
    owner, other = raw(), raw()
    drag(owner, "j", steps=30)
    owner.until("j", ("progress",))
    other.request("cancel", "k", {"job": "j"})
    assert other.until("k")[0].header["found"] is False
    assert owner.until("j")[0].op == "result"


def test_out_of_memory_frees_caches_and_the_next_job_runs(service):
    _, executor, raw = service
    executor.fail_next = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    r = raw()
    drag(r, "o1")
    err = r.until("o1")[0]
    assert err.header["code"] == "out_of_memory" and "smaller" in err.header["hint"]
    assert executor.recovered == 1
    drag(r, "o2")
    assert r.until("o2")[0].op == "result"


def test_executor_crash_is_an_internal_error_not_a_dead_daemon(service):
    _, executor, raw = service
    executor.fail_next = KeyError("boom")
    r = raw()
    drag(r, "e1")
    assert r.until("e1")[0].header["code"] == "internal"
    drag(r, "e2")
    assert r.until("e2")[0].op == "result"


def test_duplicate_job_id_from_one_client_is_refused(service):
    _, _, raw = service
    r = raw()
    drag(r, "dup", steps=20)
    drag(r, "dup")
    first = r.recv()
    assert first is not None and first.op == "queued"
    msg, _ = r.until("dup", ("error",))
    assert msg.header["code"] == "bad_request"
    assert r.until("dup")[0].op == "result"


CLIENT = textwrap.dedent("""
    import sys, time
    from gimp_draggan_plugin import protocol as P
    import zmq
    s = zmq.Context().socket(zmq.DEALER)
    s.connect(sys.argv[1])
    fields = {"width": 2, "height": 2, "pairs": [[0, 0, 1, 1]], "params": {"steps": 2000}}
    s.send_multipart(P.encode("drag", "long", fields, {"pixels": bytes(16)}))
    s.send_multipart(P.encode("drag", "next", fields, {"pixels": bytes(16)}))
    while True:
        msg = P.decode(s.recv_multipart())
        if msg.op == "progress":
            print("running", flush=True)
            time.sleep(60)
""")


def test_client_killed_mid_drag_frees_the_worker_within_a_second(service):
    server, executor, raw = service
    child = subprocess.Popen(
        [sys.executable, "-c", CLIENT, server.address], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "running"
        assert executor.running.is_set() and len(server.queue.waiting()) == 1
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        killed = time.monotonic()
        assert wait_for(lambda: not executor.running.is_set(), 1.0)
        freed = time.monotonic() - killed
    finally:
        if child.poll() is None:
            child.kill()
    assert freed < 1.0
    assert server.queue.waiting() == []
    assert executor.runs == 1  # The queued job of the dead client never ran.
    r = raw()
    drag(r, "after")
    assert r.until("after")[0].op == "result"


@pytest.mark.parametrize("service", [{"silence_s": 0.5, "heartbeat_s": 0.1}], indirect=True)
def test_a_silent_client_is_treated_as_gone(service):
    server, executor, raw = service
    r = raw()
    drag(r, "quiet", steps=2000)
    r.until("quiet", ("progress",))
    assert wait_for(lambda: not executor.running.is_set(), 5.0)
    assert server.queue.running is None


@pytest.mark.parametrize("service", [{"silence_s": 0.5, "heartbeat_s": 0.1}], indirect=True)
def test_heartbeats_keep_a_client_alive_and_are_answered(service):
    _, _, raw = service
    r = raw()
    drag(r, "alive", steps=150)
    got_beat = False
    while True:
        r.request("heartbeat", "hb")
        msg = r.recv(0.2)
        if msg is None:
            continue
        got_beat |= msg.op == "heartbeat"
        if msg.id == "alive" and msg.op in P.FINAL_OPS:
            break
    assert msg.op == "result" and got_beat


def test_non_loopback_bind_without_keys_is_refused():
    server = Server(ServerConfig(bind="tcp://0.0.0.0:*"), FakeExecutor())
    with pytest.raises(ServerError, match="gimp-draggan keys"):
        server.start()


@pytest.mark.parametrize("service", [{"max_message_bytes": 1 << 20}], indirect=True)
def test_a_frame_over_the_socket_limit_drops_that_connection_only(service):
    _, executor, raw = service
    big = raw()
    big.request(
        "drag",
        "huge",
        {"width": 1024, "height": 512, "pairs": [[0, 0, 1, 1]]},
        {"pixels": bytes(1024 * 512 * 4)},
    )  # 2 MiB > the 1 MiB limit.
    assert big.recv(1.0) is None  # libzmq closed the connection; nothing was queued.
    other = raw()
    drag(other, "fine")
    assert other.until("fine")[0].op == "result"
    assert big.recv(0.5) is None and executor.runs == 1  # The huge one never became a job.
