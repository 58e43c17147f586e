"""The downloader against a real HTTP server on 127.0.0.1 that drops connections and lies."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from gimp_draggan.models.download import DownloadError, DownloadMeter, download, sha256_file

PAYLOAD = os.urandom(3 * 1024 * 1024 + 123)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
CORRUPT = PAYLOAD[:1000] + bytes([PAYLOAD[1000] ^ 0xFF]) + PAYLOAD[1001:]


class _Handler(http.server.BaseHTTPRequestHandler):
    """/good: the file (Range honoured); /flaky: first two GETs die half-way; /corrupt: one
    flipped byte; /norange: ignores Range; /missing: 404."""

    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        if self.path == "/missing":
            self.send_error(404, "Not Found")
            return
        body = CORRUPT if self.path == "/corrupt" else PAYLOAD
        start = 0
        rng = self.headers.get("Range")
        if rng and self.path != "/norange":
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            assert m is not None
            start = int(m.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        part = body[start:]
        if self.path in ("/flaky", "/norange") and srv.drops_left > 0:
            srv.drops_left -= 1
            self.wfile.write(part[: len(part) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # drop the connection half-way
            return
        self.wfile.write(part)


class _Server(http.server.ThreadingHTTPServer):
    requests: list[tuple[str, str | None]]
    drops_left: int

    def handle_error(self, request: object, client_address: object) -> None:
        """The client hangs up early on purpose in some tests (refused sizes): stay quiet."""


@pytest.fixture()
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.requests, srv.drops_left = [], 2
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: _Server, path: str) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def test_plain_download_verified(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "m.pkl"
    out = download(
        [_url(server, "/good")], dest, sha256=SHA, size=len(PAYLOAD), show_progress=False
    )
    assert dest.read_bytes() == PAYLOAD and out.sha256 == SHA and out.size == len(PAYLOAD)
    assert not (tmp_path / "m.pkl.part").exists()


def test_resumes_after_dropped_connections(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "m.pkl"
    download([_url(server, "/flaky")], dest, sha256=SHA, show_progress=False)
    assert dest.read_bytes() == PAYLOAD
    ranges = [r for p, r in server.requests if p == "/flaky"]
    assert ranges[0] is None and len(ranges) == 3
    half = len(PAYLOAD) // 2
    assert ranges[1] == f"bytes={half}-"  # continued where the first transfer stopped
    assert ranges[2] == f"bytes={half + (len(PAYLOAD) - half) // 2}-"


def test_resumes_a_part_file_left_by_an_earlier_run(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "m.pkl"
    (tmp_path / "m.pkl.part").write_bytes(PAYLOAD[:1_000_000])
    download([_url(server, "/good")], dest, sha256=SHA, show_progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/good", "bytes=1000000-")]


def test_server_ignoring_range_restarts_cleanly(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "m.pkl"
    download([_url(server, "/norange")], dest, sha256=SHA, show_progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_corrupt_copy_refused_and_removed(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "m.pkl"
    with pytest.raises(DownloadError) as info:
        download(
            [_url(server, "/corrupt")],
            dest,
            sha256=SHA,
            hash_source="HF copy X",
            show_progress=False,
        )
    msg = str(info.value)
    assert "SHA-256 mismatch" in msg and "/corrupt" in msg and "HF copy X" in msg
    assert hashlib.sha256(CORRUPT).hexdigest() in msg
    assert not dest.exists() and not (tmp_path / "m.pkl.part").exists()


def test_falls_back_to_next_url_after_a_bad_one(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "m.pkl"
    out = download(
        [_url(server, "/corrupt"), _url(server, "/good")], dest, sha256=SHA, show_progress=False
    )
    assert out.url.endswith("/good") and dest.read_bytes() == PAYLOAD


def test_http_error_and_size_mismatch(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download([_url(server, "/missing")], tmp_path / "a", show_progress=False)
    with pytest.raises(DownloadError, match="pins 5;"):
        download([_url(server, "/good")], tmp_path / "b", size=5, show_progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_no_network_is_a_clear_error(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(DownloadError, match=r"cannot reach 127\.0\.0\.1"):
        download([f"http://127.0.0.1:{port}/x"], tmp_path / "x", show_progress=False)
    with pytest.raises(DownloadError, match=r"cannot reach no-such-host\.invalid"):
        download(["http://no-such-host.invalid/x"], tmp_path / "x", show_progress=False)


def test_disk_space_checked_before_writing(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gimp_draggan.models import download as dl

    tiny_disk = SimpleNamespace(total=1, used=1, free=10)
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: tiny_disk)
    with pytest.raises(DownloadError, match="not enough disk space"):
        download([_url(server, "/good")], tmp_path / "m", show_progress=False)
    assert not (tmp_path / "m").exists()


def test_progress_bar_shows_percent_speed_and_eta() -> None:
    stream = io.StringIO()
    meter = DownloadMeter("model.pkl", stream, interval=0.0)
    meter.update(0, 1000)
    meter.update(250, 1000, final=True)
    text = stream.getvalue()
    assert "model.pkl" in text and "25.0%" in text and "/s" in text and "ETA" in text


def test_sha256_file(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(PAYLOAD)
    assert sha256_file(p, chunk=4096) == SHA


def test_fetch_model_downloads_once_then_uses_the_cache(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gimp_draggan.models import registry
    from gimp_draggan.models.download import fetch_model

    entry = registry.ModelEntry(
        name="t",
        kind="generator",
        description="",
        domain="",
        resolution=None,
        num_ws=None,
        format="stylegan2-pkl",
        filename="t.pkl",
        urls=(_url(server, "/good"),),
        size_bytes=len(PAYLOAD),
        sha256=SHA,
        sha256_source="test",
        licence="test",
    )
    monkeypatch.setattr(registry, "load_table", lambda path=None: {"t": entry})
    path = fetch_model("t", tmp_path, show_progress=False)
    assert path == tmp_path / "models" / "t.pkl" and path.read_bytes() == PAYLOAD
    assert fetch_model("t", tmp_path, show_progress=False) == path
    assert len(server.requests) == 1
