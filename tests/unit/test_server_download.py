"""`models download` through the daemon: a real HTTP server on 127.0.0.1, a model table of the
operator's, progress events, the verified file in the cache; a bad hash is an error."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from typing import ClassVar

import pytest

from gimp_draggan.service.executor import PipelineExecutor
from gimp_draggan.service.server import Server, ServerConfig
from gimp_draggan_plugin import protocol as P
from gimp_draggan_plugin.client import Client, DaemonError
from gimp_draggan_plugin.protocol import JobRequest

pytestmark = pytest.mark.timeout(60)

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Files(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args: object) -> None:
        pass


def model_row(name: str, url: str, size: int, sha: str) -> dict:
    """A models.json row for a file served by this test's HTTP server."""
    return {
        "name": name,
        "kind": "generator",
        "description": "test",
        "domain": "test",
        "resolution": 32,
        "num_ws": 8,
        "format": "gimp-draggan",
        "filename": f"{name}.safetensors",
        "urls": [url],
        "size_bytes": size,
        "sha256": sha,
        "sha256_source": "this test",
        "licence": "test",
    }


@pytest.fixture
def setup(tmp_path):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/gen.safetensors"

    table = tmp_path / "models.json"
    table.write_text(
        json.dumps(
            {
                "format": "gimp-draggan-models",
                "models": [
                    model_row("good", url, len(PAYLOAD), hashlib.sha256(PAYLOAD).hexdigest()),
                    model_row("bad", url, len(PAYLOAD), "0" * 64),
                ],
            }
        )
    )
    executor = PipelineExecutor("cpu", cache=str(tmp_path / "cache"), table=str(table))
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*"), executor)
    server.start()
    yield server.address, tmp_path / "cache" / "models"
    server.stop()
    httpd.shutdown()


def test_download_through_the_daemon(setup):
    address, models = setup
    events = []
    with Client(address) as client:
        before = {m["name"]: m["cached"] for m in client.models()["models"]}
        assert before == {"good": False, "bad": False}
        with pytest.raises(DaemonError) as err:
            client.drag(JobRequest.seeded(seed=1, pairs=[((1, 1), (5, 5))], model="good"))
        assert err.value.code == "model_not_cached"
        reply = client.models("download", "good", on_event=events.append)
        assert reply["downloaded"] == "good"
        assert {m["name"]: m["cached"] for m in reply["models"]} == {"good": True, "bad": False}
    assert (models / "good.safetensors").read_bytes() == PAYLOAD
    assert events and all(e.phase == "download" for e in events if isinstance(e, P.ProgressEvent))


def test_a_bad_hash_is_an_error_and_nothing_is_cached(setup):
    address, models = setup
    with Client(address) as client:
        with pytest.raises(DaemonError) as err:
            client.models("download", "bad")
        assert err.value.code == "download_failed" and "SHA-256" in err.value.message
        with pytest.raises(DaemonError) as err:
            client.models("download", "nosuch")
        assert err.value.code == "unknown_model"
        assert {m["name"]: m["cached"] for m in client.models()["models"]}["bad"] is False
    assert not (models / "bad.safetensors").exists()


def test_models_list_what_a_picker_shows(setup):
    """`hello`/`models` rows carry the licence (full and short) and the download size, so the
    plug-in's Model dropdown can say both where the person picks a model."""
    address, _models = setup
    with Client(address) as client:
        rows = {m["name"]: m for m in client.hello()["models"]}
    good = rows["good"]
    assert good["licence"] == "test" and good["licence_short"] == ""
    assert good["download_bytes"] == len(PAYLOAD) and good["downloadable"] is True
    assert not good["cached"] and good["resolution"] == 32 and good["domain"] == "test"


BIG = bytes(range(256)) * (16 * 4096)  # 16 MiB in 256 KiB pieces, slowly at first


class _SlowFiles(http.server.BaseHTTPRequestHandler):
    """Serves BIG slowly, honours Range, and records each request's start and whether the
    reader hung up before the end."""

    requests: ClassVar[list[tuple[int, bool]]] = []

    def do_GET(self) -> None:
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
            self.send_response(206)
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(BIG) - start))
        self.end_headers()
        hung_up = False
        try:
            for at in range(start, len(BIG), 256 << 10):
                self.wfile.write(BIG[at : at + (256 << 10)])
                if not start:  # The first request lasts >= 3 s: time to cancel, even on a busy CI.
                    time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            hung_up = True
        self.requests.append((start, hung_up))

    def log_message(self, *args: object) -> None:
        pass


def served(n: int) -> None:
    """Wait until the slow server has noted ``n`` requests (its handler ends after its reader)."""
    deadline = time.monotonic() + 10
    while len(_SlowFiles.requests) < n and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_cancelled_download_stops_fetching_and_the_next_one_resumes(tmp_path):
    _SlowFiles.requests.clear()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowFiles)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/big.safetensors"
    row = model_row("big", url, len(BIG), hashlib.sha256(BIG).hexdigest())
    table = tmp_path / "models.json"
    table.write_text(json.dumps({"format": "gimp-draggan-models", "models": [row]}))
    executor = PipelineExecutor("cpu", cache=str(tmp_path / "cache"), table=str(table))
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*"), executor)
    server.start()
    part = tmp_path / "cache" / "models" / "big.safetensors.part"
    try:
        with Client(server.address) as client:
            events: list[object] = []
            with pytest.raises(DaemonError) as err:
                client.models(
                    "download",
                    "big",
                    on_event=events.append,
                    should_stop=lambda: any(
                        isinstance(e, P.ProgressEvent) and e.step > 0 for e in events
                    ),
                )
            assert err.value.code == "cancelled"
            # The daemon hung up on the server instead of reading the other ~15 MiB.
            served(1)
            assert _SlowFiles.requests == [(0, True)]
            kept = part.stat().st_size
            assert 0 < kept < len(BIG)
            assert not (tmp_path / "cache" / "models" / "big.safetensors").exists()
            reply = client.models("download", "big")
        assert reply["downloaded"] == "big"
        served(2)  # The server notes a request once its last write returned.
        assert _SlowFiles.requests[1] == (kept, False)  # Resumed where the part ended.
        assert (tmp_path / "cache" / "models" / "big.safetensors").read_bytes() == BIG
    finally:
        server.stop()
        httpd.shutdown()
