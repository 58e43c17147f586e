"""`serve --cluster`: jobs on Ray actors (a local Ray, 2 CPU actors of one torch thread each, the
tiny model). Placement, no re-inversion on a repeat, no pixels sent again on a repeat (and sent
again when the actor lost them), byte-identical output, cancel within one step, an actor killed
mid-job; and the default daemon never imports Ray."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from service_helpers import Raw, pipeline_daemon, single_torch_thread, wait_for

from gimp_draggan.service.cluster import ActorInfo, ActorPool, Ask, Slot
from gimp_draggan.service.executor import PipelineExecutor
from gimp_draggan.service.server import Server, ServerConfig
from gimp_draggan_plugin import protocol as P
from gimp_draggan_plugin.client import Client
from gimp_draggan_plugin.protocol import JobRequest, Params

pytestmark = pytest.mark.timeout(120)

PAIRS = [((14.0, 16.0), (22.0, 16.0))]
W, H = 40, 36


def photo(seed: int) -> bytes:
    """A smooth 8-bit RGBA layer; each seed a different picture (so a different session)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.ones((H, W, 4), np.float32)
    for c in range(3):
        cx, cy = rng.uniform(0, W), rng.uniform(0, H)
        img[:, :, c] = 0.5 + 0.5 * np.sin(((x - cx) ** 2 + (y - cy) ** 2) ** 0.5 / 6.0 + c)
    return (img * 255).round().astype(np.uint8).tobytes()


def drag(
    address: str,
    pixels: bytes,
    steps: int = 3,
    session: str | None = None,
    events: list | None = None,
    mask: bytes | None = None,
) -> P.JobResult:
    with Client(address) as client:
        return client.drag(
            JobRequest.photo(
                pixels=pixels,
                width=W,
                height=H,
                pairs=PAIRS,
                mask=mask,
                model="tiny",
                params=Params(steps=steps),
                session=session,
            ),
            on_event=None if events is None else events.append,
        )


# ---- the placement rule (no Ray) --------------------------------------------------------------
def test_placement_session_then_content_then_model_then_load():
    pool = ActorPool([Slot(i, None, ActorInfo(i, "cpu", "n"), {"a"}) for i in range(3)], "a")
    pool.slots[2].models.add("b")
    assert pool.target(Ask("b")).index == 2  # The model loaded beats idle actors...
    pool.slots[2].running = object()  # type: ignore[assignment]
    assert pool.target(Ask("b")).index == 2  # ...even a busy one (the job waits).
    assert pool.target(Ask("a")).index == 0  # Least loaded of those with the model.
    pool.placed(pool.slots[0], Ask("a", content="pix"))
    pool.finished(pool.slots[0], "a", "s0")
    assert pool.target(Ask("a")).index == 1  # Fewer sessions held.
    assert pool.target(Ask("a", content="pix")).index == 0  # Same pixels, same actor.
    assert pool.target(Ask("c", session="s0")).index == 0  # The session's actor first.
    assert pool.where("s0") == 0
    pool.lost(pool.slots[0])
    assert pool.where("s0") is None  # Forgotten: placed anew by load.
    assert pool.target(Ask("a", content="pix")).index == 1
    assert pool.slots[0].sessions == set() and pool.slots[0].models == {"a"}


# ---- a local Ray with two actors --------------------------------------------------------------
@pytest.fixture(scope="module")
def pool(tiny):
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[cluster]')")
    from gimp_draggan.service import cluster

    cluster.join("local", num_cpus=2, object_store_memory=80 * 2**20, log_to_driver=False)
    try:
        yield cluster.start_actors(
            cluster.ClusterConfig("local", actors=2, threads_per_actor=1, device="cpu"),
            "tiny",
            {"tiny": tiny},
            None,
        )
    finally:
        cluster.leave()


@pytest.fixture(scope="module")
def daemon(pool, tiny):
    executor = PipelineExecutor(pool.description, files={"tiny": tiny})
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*"), executor, runner=pool.dispatcher)
    server.start()
    yield server
    server.stop()


def test_two_clients_land_on_two_actors_and_repeats_stay_without_reinverting(daemon, pool):
    results: dict[int, P.JobResult] = {}

    def one(seed: int) -> None:
        results[seed] = drag(daemon.address, photo(seed))

    threads = [threading.Thread(target=one, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    first, second = results[1].session, results[2].session
    assert {pool.where(first), pool.where(second)} == {0, 1}
    assert "invert" in results[1].timings and "invert" in results[2].timings
    for session in (first, None):  # The id, then the same pixels without one.
        events: list = []
        again = drag(daemon.address, photo(1), session=session, events=events)
        assert again.session == first and pool.where(first) == pool.where(again.session)
        assert "invert" not in again.timings
        assert not [e for e in events if isinstance(e, P.ProgressEvent) and e.phase == "invert"]


def test_a_repeat_sends_no_pixels_and_a_lost_layer_is_sent_again(daemon, pool):
    import ray

    pixels, mask = photo(31), bytes([255]) * (W * H)
    before = sum(s.sent_bytes for s in pool.slots)
    first = drag(daemon.address, pixels, mask=mask)
    slot = pool.slots[pool.where(first.session)]
    assert sum(s.sent_bytes for s in pool.slots) - before == len(pixels) + len(mask)
    sent, resends = slot.sent_bytes, slot.resends
    again = drag(daemon.address, pixels, session=first.session, mask=mask)
    assert slot.sent_bytes == sent and slot.resends == resends  # Only the digests travelled.
    ray.get(slot.handle.forget_layers.remote())  # As if evicted or restarted.
    third = drag(daemon.address, pixels, session=first.session, mask=mask)
    assert slot.resends == resends + 1 and slot.sent_bytes == sent + len(pixels) + len(mask)
    assert "invert" not in again.timings and "invert" not in third.timings
    assert again.session == third.session == first.session
    assert len(first.patch) > 0 and first.patch == again.patch == third.patch
    assert first.points == again.points == third.points


def test_output_is_byte_identical_to_the_in_process_daemon(daemon, tiny):
    pixels, params = photo(7), {"steps": 4, "preview_every": 2, "preview_size": 64}
    results = []
    threads = single_torch_thread()  # The actors run one torch thread each too.
    next(threads)
    local = pipeline_daemon(tiny)
    try:
        for address in (daemon.address, next(local)[0].address):
            with Client(address) as client:
                results.append(
                    client.drag(
                        JobRequest.photo(
                            pixels=pixels,
                            width=W,
                            height=H,
                            pairs=PAIRS,
                            model="tiny",
                            params=Params(**params),
                        )
                    )
                )
    finally:
        local.close()
        threads.close()
    remote, here = results
    assert remote.patch == here.patch and len(here.patch) > 0
    assert (remote.x, remote.y, remote.width, remote.height) == (
        here.x,
        here.y,
        here.width,
        here.height,
    )
    assert remote.points == here.points and remote.steps == here.steps
    assert remote.session == here.session


def running_slot(pool, job_id: str):
    found = [s for s in pool.slots if s.running is not None and s.running.job.id == job_id]
    return found[0] if found else None


def start_long_drag(daemon, raw: Raw, job_id: str, seed: int) -> None:
    raw.request(
        "drag",
        job_id,
        {
            "width": W,
            "height": H,
            "depth": "u8",
            "model": "tiny",
            "pairs": [[14, 16, 30, 20]],
            "params": {"steps": 2000},
        },
        {"pixels": photo(seed)},
    )
    raw.until(job_id, ("progress",), timeout_s=60)


def test_cancel_stops_the_job_on_its_actor_within_one_step(daemon, pool):
    raw = Raw(daemon.address)
    try:
        start_long_drag(daemon, raw, "long-1", seed=11)
        slot = running_slot(pool, "long-1")
        assert slot is not None

        # Wait for the drag itself (past the inversion), then cancel.
        def dragging() -> bool:
            run = slot.running
            return (
                run is not None
                and run.job.progress is not None
                and run.job.progress.phase == "drag"
                and run.job.progress.step >= 2
            )

        assert wait_for(dragging, 60)
        raw.request("cancel", "c-1", {"job": "long-1"})
        start = time.monotonic()
        final, _ = raw.until("long-1", timeout_s=10)
        took = time.monotonic() - start
    finally:
        raw.close()
    assert final.op == "error" and final.header["code"] == "cancelled"
    stopped, came = re.search(
        r"stopped after drag step (\d+); the cancel came after drag "
        r"step (\d+)",
        final.header["message"],
    ).groups()
    assert 0 <= int(stopped) - int(came) <= 1, final.header["message"]
    assert took < 5 and wait_for(lambda: not slot.busy, 2)


def test_a_killed_actor_gives_worker_lost_and_the_daemon_serves_on(daemon, pool):
    import ray

    raw = Raw(daemon.address)
    try:
        start_long_drag(daemon, raw, "long-2", seed=12)
        slot = running_slot(pool, "long-2")
        assert slot is not None and slot.sessions
        held = set(slot.sessions)
        killed = ray.get(slot.handle.describe.remote()).pid
        os.kill(killed, signal.SIGKILL)
        start = time.monotonic()
        final, _ = raw.until("long-2", timeout_s=15)
        took = time.monotonic() - start
    finally:
        raw.close()
    assert final.op == "error" and final.header["code"] == "worker_lost", final.header
    assert took < 10
    assert all(pool.where(s) is None for s in held)
    again = drag(daemon.address, photo(12), steps=2)  # The lost session: inverted anew.
    assert len(again.patch) > 0 and "invert" in again.timings
    assert wait_for(lambda: slot.up, 60, every_s=0.1)  # Ray restarted it; it serves again.
    assert slot.info.pid != killed and ray.get(slot.handle.describe.remote()).pid == slot.info.pid


# ---- without --cluster ------------------------------------------------------------------------
CHECK = """
import os, sys, threading, time
from gimp_draggan.cli import main
from gimp_draggan_plugin.client import Client, DaemonError

def check():
    for _ in range(600):
        try:
            with Client(sys.argv[1]) as client:
                client.hello()
            break
        except DaemonError:  # Not listening yet.
            time.sleep(0.1)
    print("ray imported" if "ray" in sys.modules else "no ray", flush=True)
    os._exit(0)

threading.Thread(target=check, daemon=True).start()
sys.exit(main(["serve", "--bind", sys.argv[1], "--model", sys.argv[2], "--device", "cpu"]))
"""


def test_the_default_daemon_does_not_import_ray(tiny, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    out = subprocess.run(
        [sys.executable, "-c", CHECK, address, str(tiny)],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "GIMP_DRAGGAN_LOG_DIR": str(tmp_path)},
    )
    assert out.stdout.strip() == "no ray", out.stderr[-2000:]


def test_actor_options_need_cluster(capsys, monkeypatch, tmp_path):
    from gimp_draggan.cli import main

    monkeypatch.setenv("GIMP_DRAGGAN_LOG_DIR", str(tmp_path))

    assert main(["serve", "--actors", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --actors and --threads-per-actor need --cluster"
