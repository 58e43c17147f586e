"""Faults named for what they are (issue 21): another program on the daemon's port, a daemon
that goes away mid-job, the queue position of an idle daemon."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest
from server_fakes import FakeExecutor

from gimp_draggan.cli import main
from gimp_draggan.service.server import Server, ServerConfig
from gimp_draggan_plugin import protocol as P
from gimp_draggan_plugin.client import Client, DaemonError
from gimp_draggan_plugin.protocol import JobRequest, Params


@pytest.fixture
def web_server() -> Iterator[str]:
    """`python3 -m http.server` in miniature, on a free loopback port."""
    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"tcp://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_ping_names_another_program_on_the_port_within_a_second(
    web_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    start = time.monotonic()
    assert main(["ping", "--daemon", web_server]) == 1
    took = time.monotonic() - start
    err = capsys.readouterr().err
    assert "not a gimp-draggan daemon" in err and web_server in err, err
    assert "Another program holds that port" in err
    assert took < 1.5, f"took {took:.2f} s"


@pytest.mark.parametrize("transport", ["pyzmq", "zmtp"])
def test_both_transports_name_it(web_server: str, transport: str) -> None:
    with Client(web_server, prefer=transport) as client, pytest.raises(DaemonError) as err:
        client.hello()
    assert err.value.code == "port_taken"


@pytest.mark.parametrize("transport", ["pyzmq", "zmtp"])
def test_a_daemon_that_goes_away_mid_job_is_reported_at_once(transport: str) -> None:
    executor = FakeExecutor(step_s=0.05)
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*"), executor)
    address = server.start()
    threading.Thread(target=lambda: (executor.running.wait(10), server.stop()), daemon=True).start()
    start = time.monotonic()
    with Client(address, prefer=transport) as client, pytest.raises(DaemonError) as err:
        client.drag(
            JobRequest.photo(
                pixels=bytes(16),
                width=2,
                height=2,
                pairs=[((0, 0), (1, 1))],
                params=Params(steps=2000),
            )
        )
    took = time.monotonic() - start
    assert err.value.code == "not_running", err.value
    assert took < P.HEARTBEAT_TIMEOUT_S / 2, f"took {took:.2f} s"


def test_an_idle_daemon_says_next_to_run() -> None:
    assert P.queue_words(1) == "next to run"
    assert P.queue_words(3) == "2 jobs ahead"
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*"), FakeExecutor())
    address = server.start()
    events: list[object] = []
    try:
        with Client(address) as client:
            client.drag(
                JobRequest.photo(
                    pixels=bytes(16),
                    width=2,
                    height=2,
                    pairs=[((0, 0), (1, 1))],
                    params=Params(steps=1),
                ),
                on_event=events.append,
            )
    finally:
        server.stop()
    assert events[0] == P.QueuedEvent(1)
