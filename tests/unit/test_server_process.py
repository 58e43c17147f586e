"""`gimp-draggan serve` as its own process: answers `ping`, logs to its file, stops on SIGTERM."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from service_helpers import save_tiny_model, wait_for

pytestmark = pytest.mark.timeout(120)


def test_serve_process_answers_ping_and_stops_on_sigterm(tmp_path):
    tiny = save_tiny_model(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    env_log = {"GIMP_DRAGGAN_LOG_DIR": str(tmp_path / "log")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gimp_draggan",
            "serve",
            "--bind",
            address,
            "--model",
            str(tiny),
            "--device",
            "cpu",
        ],
        env={**os.environ, **env_log},
        stderr=(tmp_path / "stderr.txt").open("w"),
    )
    try:

        def pings() -> bool:
            return (
                subprocess.run(
                    [sys.executable, "-m", "gimp_draggan", "ping", "--daemon", address],
                    capture_output=True,
                ).returncode
                == 0
            )

        assert wait_for(pings, 60, every_s=0.5)
        proc.terminate()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "log" / "daemon.log").read_text()
    assert f"listening on {address}" in log and "daemon stopped" in log
