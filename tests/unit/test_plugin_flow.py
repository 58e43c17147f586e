"""The plug-in's run (gimp_draggan_plugin.flow) against the real daemon service on 127.0.0.1.

The service is gimp_draggan.service.server with the model-free executor of server_fakes (it
"drags" by inverting colours), so these tests cover the plug-in side: both transports, progress
words, error sentences, discarding the half-done layer, and starting a daemon on request.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from server_fakes import FakeExecutor

from gimp_draggan.service.server import Server, ServerConfig
from gimp_draggan_plugin import flow, models, protocol, settings, texts
from gimp_draggan_plugin.client import Client, DaemonError

TRANSPORTS = ["pyzmq", "zmtp"]


class FakeHost:
    """Records what the flow asks GIMP to do."""

    def __init__(self, interactive: bool = False, answer: bool = True) -> None:
        self.interactive = interactive
        self.answer = answer
        self.texts: list[str] = []
        self.previews: list[tuple[bytes, tuple]] = []
        self.finished: list[protocol.JobResult] = []
        self.discarded = 0
        self.questions: list[str] = []
        self.notices: list[str] = []

    def progress(self, text: str, fraction: float) -> None:
        assert 0.0 <= fraction <= 1.0
        self.texts.append(text)

    def preview(self, jpeg: bytes, box: tuple) -> None:
        self.previews.append((jpeg, box))

    def finish(self, result: protocol.JobResult) -> None:
        self.finished.append(result)

    def discard(self) -> None:
        self.discarded += 1

    def confirm(self, question: str) -> bool:
        self.questions.append(question)
        return self.answer

    def notice(self, text: str) -> None:
        self.notices.append(text)


def free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def daemon():
    executor = FakeExecutor()
    server = Server(ServerConfig(bind=free_address()), executor)
    address = server.start()
    yield address, executor
    server.stop()


def layer(width=8, height=6):
    pixels = bytes((i * 7) % 256 for i in range(width * height * 4))
    return flow.LayerData(width, height, "u8", pixels)


def config(address: str, command: tuple[str, ...] = ()) -> settings.Settings:
    return settings.Settings(address, command, None)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_drag_through_the_service(daemon, transport):
    address, _executor = daemon
    host = FakeHost()
    data = layer()
    with Client(address, prefer=transport) as client:
        result = flow.run(
            host,
            client,
            config(address),
            data,
            [((1.0, 1.0), (5.0, 4.0))],
            None,
            flow.Options(steps=5),
        )
        assert client.transport_name == transport
    assert host.finished == [result] and host.discarded == 0
    assert result.patch == bytes(255 - b for b in data.pixels)
    # No selection: every progress text says which region changes. The fake daemon drags without
    # inverting, which the plug-in tells as reusing an earlier inversion.
    note = "no selection: editing the subject around the points, feathered"
    assert host.texts[0] == f"Inverting \u00b7 {note}"
    assert (
        f"Dragging 5/5 \u2014 1.0 px to go, < 1 s left \u00b7 {texts.REUSED_NOTE} \u00b7 {note}"
        in host.texts
    )
    assert result.converged and host.notices == []


def test_a_drag_that_ends_short_is_told_not_called_done(daemon):
    address, executor = daemon
    executor.short_by = 4.9
    host = FakeHost()
    with Client(address) as client:
        result = flow.run(
            host,
            client,
            config(address),
            layer(),
            [((1.0, 1.0), (5.0, 4.0))],
            None,
            flow.Options(steps=3),
        )
    assert not result.converged and result.worse == [0] and result.distances == [4.9]
    assert host.finished == [result]
    assert len(host.notices) == 1
    assert "stopped short after 3 steps: handle 1 is 4.9 px from its target" in host.notices[0]
    assert "farther from the target than they started" in host.notices[0]
    assert texts.layer_name(1, result) == "DragGAN drag (1 point, 4.9 px short)"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_daemon_not_running_names_the_start_command(transport):
    address = free_address()
    host = FakeHost()
    with (
        Client(address, prefer=transport, timeout_s=0.5) as client,
        pytest.raises(flow.PluginError) as err,
    ):
        flow.run(
            host, client, config(address), layer(), [((1.0, 1.0), (2.0, 2.0))], None, flow.Options()
        )
    assert f"gimp-draggan serve --bind {address}" in str(err.value)
    assert host.discarded == 1 and not host.finished and not host.questions


def test_model_not_cached_says_how_to_download(daemon):
    address, executor = daemon
    executor.models = ("tiny", "big")
    host = FakeHost()
    with Client(address) as client, pytest.raises(flow.PluginError) as err:
        flow.run(
            host,
            client,
            config(address),
            layer(),
            [((1.0, 1.0), (2.0, 2.0))],
            None,
            flow.Options(model="big"),
        )
    assert "gimp-draggan models download big" in str(err.value)
    assert host.discarded == 1


class DownloadingExecutor(FakeExecutor):
    """The fake daemon with a model it can download in a few progress steps (the real
    download is covered by test_server_download.py); `slow_s` per step, to cancel mid-way."""

    def __init__(self, slow_s: float = 0.0) -> None:
        super().__init__(models=("tiny", "big"), cached=("tiny",))
        self.slow_s = slow_s
        self.stopped = threading.Event()

    def info(self) -> dict:
        info = super().info()
        for row in info["models"]:
            row.update(
                resolution=512,
                domain="human faces",
                downloadable=True,
                licence="NVIDIA Source Code License (non-commercial)",
                licence_short="NVIDIA, non-commercial",
                download_bytes=4_000_000,
            )
        return info

    def download(self, name, on_progress, should_stop) -> None:
        for step in range(1, 5):
            if should_stop():
                self.stopped.set()
                return
            time.sleep(self.slow_s)
            on_progress(protocol.ProgressEvent("download", step * 1_000_000, 4_000_000))
        self.cached = (*self.cached, name)


def test_picking_a_model_not_downloaded_asks_downloads_with_progress_then_drags(tmp_path):
    executor = DownloadingExecutor()
    server = Server(ServerConfig(bind=free_address()), executor)
    address = server.start()
    (tmp_path / "gimp-draggan.py").write_text("# entry\n")
    os.utime(tmp_path / "gimp-draggan.py", (1, 1))
    host = FakeHost(interactive=True, answer=True)
    try:
        with Client(address) as client:
            result = flow.run(
                host,
                client,
                config(address),
                layer(),
                [((1.0, 1.0), (2.0, 2.0))],
                None,
                flow.Options(model="big", steps=2),
                tmp_path,
            )
    finally:
        server.stop()
    assert host.finished == [result] and executor.cached == ("tiny", "big")
    [question] = host.questions
    assert "big" in question and "Download it now (4 MB)?" in question
    assert "NVIDIA Source Code License (non-commercial)" in question
    assert "Downloading big: 2 / 4 MB" in host.texts and "Downloading big: 4 / 4 MB" in host.texts
    # the dropdown's table follows the daemon: "big" is now downloaded; GIMP re-registers
    table = {m.name: m.cached for m in models.read_table(tmp_path)}
    assert table == {"tiny": True, "big": True}
    assert (tmp_path / "gimp-draggan.py").stat().st_mtime > 1


@pytest.mark.parametrize("interactive", [True, False])
def test_a_declined_or_scripted_download_says_how_and_fetches_nothing(interactive):
    executor = DownloadingExecutor()
    server = Server(ServerConfig(bind=free_address()), executor)
    address = server.start()
    host = FakeHost(interactive=interactive, answer=False)
    try:
        with Client(address) as client, pytest.raises(flow.PluginError) as err:
            flow.run(
                host,
                client,
                config(address),
                layer(),
                [((1.0, 1.0), (2.0, 2.0))],
                None,
                flow.Options(model="big"),
            )
    finally:
        server.stop()
    assert "gimp-draggan models download big" in str(err.value)
    assert executor.cached == ("tiny",) and executor.runs == 0 and host.discarded == 1
    assert len(host.questions) == (1 if interactive else 0)


def test_a_plugin_killed_mid_download_stops_the_daemons_download():
    """GIMP's Cancel kills the plug-in: the daemon sees the connection drop and stops."""
    executor = DownloadingExecutor(slow_s=0.5)
    server = Server(ServerConfig(bind=free_address()), executor)
    address = server.start()
    code = textwrap.dedent(
        f"""
        from gimp_draggan_plugin.client import Client
        with Client({address!r}) as client:
            client.models(
                action="download", name="big", on_event=lambda e: print("step", flush=True)
            )
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"step"
        proc.kill()
        proc.wait()
        assert executor.stopped.wait(30), "the daemon went on downloading for a dead client"
    finally:
        server.stop()
    assert executor.cached == ("tiny",)


def test_out_of_memory_says_smaller_selection(daemon):
    address, executor = daemon
    executor.fail_next = RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
    host = FakeHost()
    with Client(address) as client, pytest.raises(flow.PluginError, match="smaller area"):
        flow.run(
            host, client, config(address), layer(), [((1.0, 1.0), (2.0, 2.0))], None, flow.Options()
        )
    assert host.discarded == 1 and executor.recovered == 1


def test_bad_parameters_are_refused_before_sending(daemon):
    address, executor = daemon
    host = FakeHost()
    with Client(address) as client, pytest.raises(flow.PluginError, match="steps"):
        flow.run(
            host,
            client,
            config(address),
            layer(),
            [((1.0, 1.0), (2.0, 2.0))],
            None,
            flow.Options(steps=99999),
        )
    assert executor.runs == 0 and host.discarded == 1


def test_mask_travels_with_the_request(daemon):
    address, _executor = daemon
    data = layer(4, 2)
    seen = []
    with Client(address) as client:
        original = client.drag

        def spy(request, **kwargs):
            seen.append(request.mask)
            return original(request, **kwargs)

        client.drag = spy  # type: ignore[method-assign]
        host = FakeHost()
        flow.run(
            host,
            client,
            config(address),
            data,
            [((0.0, 0.0), (3.0, 1.0))],
            bytes([255, 0, 0, 0, 255, 255, 0, 255]),
            flow.Options(steps=1),
        )
    assert seen == [bytes([255, 0, 0, 0, 255, 255, 0, 255])]
    assert host.texts and not any("no selection" in t for t in host.texts)


def test_non_interactive_never_asks(daemon):
    host = FakeHost(interactive=False)
    address = free_address()
    with Client(address, timeout_s=0.3) as client, pytest.raises(DaemonError) as err:
        flow.reach_daemon(host, client, config(address, (sys.executable, "-c", "pass")))
    assert err.value.code == "not_running" and host.questions == []


def test_declined_start_reports_not_running():
    address = free_address()
    host = FakeHost(interactive=True, answer=False)
    with (
        Client(address, timeout_s=0.3) as client,
        pytest.raises(flow.PluginError, match="gimp-draggan serve"),
    ):
        flow.run(
            host,
            client,
            config(address, (sys.executable, "-c", "pass")),
            layer(),
            [((1.0, 1.0), (2.0, 2.0))],
            None,
            flow.Options(),
        )
    assert len(host.questions) == 1 and "Start it now?" in host.questions[0]


def test_interactive_start_of_a_local_daemon(tmp_path):
    """Yes -> the serve command runs (here: the real service with the fake executor), the flow
    waits for its hello and drags."""
    address = free_address()
    unit_dir = Path(__file__).parent
    script = tmp_path / "serve.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, sys, threading
        open({str(tmp_path / "pid")!r}, "w").write(str(os.getpid()))
        sys.path.insert(0, {str(unit_dir)!r})
        from server_fakes import FakeExecutor
        from gimp_draggan.service.server import Server, ServerConfig
        bind = sys.argv[sys.argv.index("--bind") + 1]
        Server(ServerConfig(bind=bind), FakeExecutor()).start()
        threading.Event().wait(60)
    """)
    )
    host = FakeHost(interactive=True, answer=True)
    cfg = config(address, (sys.executable, str(script), "serve"))
    try:
        with Client(address, timeout_s=0.5) as client:
            result = flow.run(
                host, client, cfg, layer(), [((1.0, 1.0), (2.0, 2.0))], None, flow.Options(steps=2)
            )
            assert result.steps == 2 and host.finished
            assert any("Starting the DragGAN daemon" in t for t in host.texts)
    finally:
        pid_file = tmp_path / "pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)


def test_describe_unexpected_errors_point_to_doctor():
    text = flow.describe(KeyError("x"), protocol.DEFAULT_ADDRESS)
    assert "gimp-draggan doctor" in text and "KeyError" in text


def test_layer_data_checks_size():
    with pytest.raises(ValueError, match="needs 192"):
        flow.LayerData(8, 6, "u8", bytes(10))


def test_progress_events_become_text_and_previews():
    """Queued position, progress words and fraction; a preview with its crop box reaches the
    host, one without a box (protocol v1) does not."""
    from types import SimpleNamespace

    host = FakeHost()
    ticks = iter([0.0, 10.0, 12.0, 40.0])  # seconds at each progress event
    on_event = flow.event_handler(host, now=lambda: next(ticks))
    on_event(protocol.QueuedEvent(2))
    on_event(protocol.ProgressEvent("invert", 120, 300))
    on_event(protocol.ProgressEvent("drag", 35, 200, [(1.0, 1.0)], [4.2], b"jpeg-1"))
    on_event(protocol.ProgressEvent("drag", 36, 200, [(1.0, 1.0)], [4.0]))
    on_event(
        SimpleNamespace(
            phase="drag",
            step=40,
            total=200,
            distances=[3.0],
            preview=b"jpeg-2",
            crop=[4, 5, 30.0, 20],
        )
    )
    assert host.texts == [
        "Waiting for the daemon (1 job ahead)",
        "Inverting 120/300",
        "Dragging 35/200 \u2014 4.2 px to go",
        "Dragging 36/200 \u2014 4.0 px to go",
        # 5 steps in 30 s since step 35: 160 steps left at 6 s each (an upper bound).
        "Dragging 40/200 \u2014 3.0 px to go, \u2264 16 min left",
    ]
    assert host.previews == [(b"jpeg-2", (4, 5, 30, 20))]
    on_event(protocol.QueuedEvent(1))  # An idle daemon: position 1 is next, nothing ahead.
    assert host.texts[-1] == "Waiting for the daemon (next to run)"


def test_a_drag_without_inversion_says_it_reuses_one_and_the_note_follows():
    host = FakeHost()
    on_event = flow.event_handler(host, "no selection: editing the face around the points")
    on_event(protocol.ProgressEvent("drag", 1, 10, [(1.0, 1.0)], [2.0]))
    on_event(protocol.ProgressEvent("invert", 1, 10))  # a second face, inverted anew
    on_event(protocol.ProgressEvent("drag", 2, 10, [(1.0, 1.0)], [1.0]))
    assert host.texts == [
        f"Dragging 1/10 \u2014 2.0 px to go \u00b7 {texts.REUSED_NOTE} \u00b7 no selection: "
        "editing the face around the points",
        "Inverting 1/10 \u00b7 no selection: editing the face around the points",
        "Dragging 2/10 \u2014 1.0 px to go \u00b7 no selection: editing the face around the points",
    ]


def test_region_note_names_the_face_for_face_models():
    hello = {
        "default_model": "ffhq",
        "models": [
            {"name": "ffhq", "domain": "human faces"},
            {"name": "embedded", "domain": "cartoon heads (procedural)"},
            {"name": "lions", "domain": "lions"},
        ],
    }
    assert texts.model_domain(hello, "") == "human faces"
    assert texts.model_domain(hello, "lions") == "lions"
    assert texts.model_domain(hello, "gone") == ""
    assert "editing the face around" in texts.region_note(texts.model_domain(hello, "embedded"))
    assert "editing the subject around" in texts.region_note("lions")


def test_visible_part_of_a_preview():
    assert flow.visible_part((10, 20, 30, 40), 100, 100) == ((10, 20, 30, 40), (0, 0, 30, 40))
    assert flow.visible_part((-5, -10, 30, 40), 20, 100) == ((0, 0, 20, 30), (5, 10, 20, 30))
    assert flow.visible_part((90, 90, 30, 30), 100, 95) == ((90, 90, 10, 5), (0, 0, 10, 5))
    assert flow.visible_part((100, 0, 10, 10), 100, 100) is None
