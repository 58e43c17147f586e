"""The daemon with the real executor and a tiny generator: results equal the in-process ones,
sessions are reused, and many clients' jobs are each answered exactly once."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from service_helpers import (
    Raw,
    pipeline_daemon,
    single_torch_thread,
    wait_for,
)

from gimp_draggan.edit.pipeline import run_edit
from gimp_draggan.edit.sessions import SessionCache
from gimp_draggan.models.store import ModelStore
from gimp_draggan.service.executor import PipelineExecutor, seed_drag
from gimp_draggan.service.server import Server, ServerConfig
from gimp_draggan_plugin import protocol as P
from gimp_draggan_plugin.client import Client, DaemonError
from gimp_draggan_plugin.protocol import JobRequest, Params

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    yield from single_torch_thread()


@pytest.fixture(scope="module")
def service(tiny):
    yield from pipeline_daemon(tiny, max_queue=16)


def photo(width=40, height=36, seed=1):
    """A smooth RGBA test layer (gradients + blobs), 8-bit."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 4), np.float32)
    for c in range(3):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        img[:, :, c] = 0.5 + 0.5 * np.sin(((x - cx) ** 2 + (y - cy) ** 2) ** 0.5 / 6.0 + c)
    img[:, :, 3] = 1.0
    return (img * 255).round().astype(np.uint8).tobytes()


PAIRS = [((14.0, 16.0), (22.0, 16.0))]


def test_seed_drag_through_the_service_equals_in_process(service, tiny):
    server, _ = service
    events = []
    with Client(server.address) as client:
        r = client.drag(
            JobRequest.seeded(seed=5, pairs=PAIRS, model="tiny", params=Params(steps=6)),
            on_event=events.append,
        )
    local = PipelineExecutor("cpu", files={"tiny": tiny})
    image, result = seed_drag(
        local.store.load("tiny", "cpu").G,
        5,
        PAIRS,
        Params(steps=6),
        None,
        "cpu",
        lambda e: None,
        lambda: False,
    )
    got = np.frombuffer(r.patch, np.uint8).reshape(r.height, r.width, 4)
    assert (r.width, r.height) == (32, 32)
    assert np.array_equal(got[:, :, :3], image) and (got[:, :, 3] == 255).all()
    assert r.points == result.points and r.steps == result.steps
    drag_events = [e for e in events if isinstance(e, P.ProgressEvent)]
    assert [e.step for e in drag_events] == list(range(1, r.steps + 1))


def test_photo_drag_through_the_service_equals_in_process(service, tiny):
    server, _ = service
    pixels = photo()
    mask = np.zeros((36, 40), np.uint8)
    mask[4:32, 6:36] = 255
    params = {"steps": 4, "preview_every": 2, "preview_size": 64}
    events = []
    with Client(server.address) as client:
        r = client.drag(
            JobRequest.photo(
                pixels=pixels,
                width=40,
                height=36,
                pairs=PAIRS,
                mask=mask.tobytes(),
                model="tiny",
                params=Params(**params),
            ),
            on_event=events.append,
        )
    local = run_edit(
        JobRequest.photo(
            pixels,
            40,
            36,
            PAIRS,
            depth="u8",
            model=str(tiny),
            mask=mask.tobytes(),
            params=Params(**params),
        ),
        device="cpu",
        sessions=SessionCache(),
        models=ModelStore(any_file=True),
        on_progress=lambda p: None,
        should_stop=lambda: False,
    )
    assert (r.x, r.y, r.width, r.height) == (local.x, local.y, local.width, local.height)
    assert r.patch == local.patch
    assert r.points == local.points and r.steps == local.steps and r.session == local.session
    phases = {e.phase for e in events if isinstance(e, P.ProgressEvent)}
    assert phases == {"invert", "drag"}
    previews = [e.preview for e in events if isinstance(e, P.ProgressEvent) and e.preview]
    assert previews and all(p[:2] == b"\xff\xd8" for p in previews)  # JPEG

    # Same photo again with the session id: no inversion this time.
    events.clear()
    with Client(server.address) as client:
        again = client.drag(
            JobRequest.photo(
                pixels=pixels,
                width=40,
                height=36,
                pairs=PAIRS,
                mask=mask.tobytes(),
                model="tiny",
                params=Params(**params),
                session=r.session,
            ),
            on_event=events.append,
        )
    assert again.session == r.session
    assert {e.phase for e in events if isinstance(e, P.ProgressEvent)} == {"drag"}


def test_invert_prepares_a_session_that_a_drag_reuses(service):
    server, executor = service
    pixels = photo(seed=7)
    with Client(server.address) as client:
        inv = client.invert(
            JobRequest.photo(pixels=pixels, width=40, height=36, pairs=PAIRS, model="tiny")
        )
        assert inv.session and inv.patch == b"" and "invert" in inv.timings
        hits = executor.sessions.hits
        events = []
        client.drag(
            JobRequest.photo(
                pixels=pixels,
                width=40,
                height=36,
                pairs=PAIRS,
                model="tiny",
                params=Params(steps=2),
                session=inv.session,
            ),
            on_event=events.append,
        )
    assert executor.sessions.hits == hits + 1
    assert not any(isinstance(e, P.ProgressEvent) and e.phase == "invert" for e in events)


def test_pipeline_errors_reach_the_client_as_bad_request(service):
    server, _ = service
    with Client(server.address) as client, pytest.raises(DaemonError) as err:
        client.drag(JobRequest.seeded(seed=1, pairs=[((3.0, 3.0), (300.0, 3.0))], model="tiny"))
    assert err.value.code == "bad_request" and "300" in str(err.value)


def test_eight_clients_fifty_jobs_each_answered_exactly_once(service):
    server, _ = service
    n_clients, n_jobs = 8, 50
    finals: dict[str, list[P.Message]] = {}
    lock = threading.Lock()
    failures: list[str] = []

    def client(c: int) -> None:
        raw = Raw(server.address)
        try:
            for j in range(n_jobs):
                msg_id = f"c{c}-j{j}"
                raw.request(
                    "drag",
                    msg_id,
                    {
                        "seed": c * 1000 + j,
                        "model": "tiny",
                        "pairs": [[8, 8, 20, 8]],
                        "params": {"steps": 1},
                    },
                )
                msg, before = raw.until(msg_id, timeout_s=60)
                with lock:
                    for m in [*before, msg]:
                        if m.op in P.FINAL_OPS:
                            finals.setdefault(m.id, []).append(m)
            time.sleep(0.3)  # Anything duplicated would arrive now.
            while (m := raw.recv(0.1)) is not None:
                with lock:
                    if m.op in P.FINAL_OPS:
                        finals.setdefault(m.id, []).append(m)
        except Exception as exc:
            failures.append(f"client {c}: {exc}")
        finally:
            raw.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(110)
    assert not failures
    expected = {f"c{c}-j{j}" for c in range(n_clients) for j in range(n_jobs)}
    assert set(finals) == expected
    assert all(len(v) == 1 for v in finals.values())
    for msg_id, (msg,) in finals.items():
        c, j = (int(part[1:]) for part in msg_id.split("-"))
        assert msg.op == "result" and msg.header["session"] == f"seed-{c * 1000 + j}"


def test_the_default_model_is_loaded_before_the_first_job(tiny, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="gimp_draggan")
    executor = PipelineExecutor("cpu", files={"tiny": tiny})
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*"), executor)
    server.start()
    try:
        assert wait_for(lambda: "model tiny ready on cpu" in caplog.text, 30, every_s=0.05)
    finally:
        server.stop()
