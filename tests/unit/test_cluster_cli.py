"""`gimp-draggan serve --cluster local` as its own process: a private Ray with one CPU actor
answers `hello` with the cluster as its device, runs a seed drag, and stops on SIGTERM (Ray
with it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from service_helpers import wait_for

from gimp_draggan_plugin.client import Client, DaemonError
from gimp_draggan_plugin.protocol import JobRequest, Params

pytestmark = pytest.mark.timeout(150)


def test_serve_cluster_local_runs_jobs_and_stops_on_sigterm(tiny, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[cluster]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gimp_draggan",
            "serve",
            "--cluster",
            "local",
            "--device",
            "cpu",
            "--actors",
            "1",
            "--threads-per-actor",
            "1",
            "--bind",
            address,
            "--model",
            str(tiny),
        ],
        env={**os.environ, "GIMP_DRAGGAN_LOG_DIR": str(tmp_path / "log")},
        stderr=(tmp_path / "stderr.txt").open("w"),
        stdout=subprocess.DEVNULL,
    )
    try:

        def hello() -> dict | None:
            try:
                with Client(address) as client:
                    return client.hello()
            except DaemonError:
                return None

        assert wait_for(lambda: hello() is not None, 90, every_s=0.5), (
            tmp_path / "stderr.txt"
        ).read_text()[-2000:]
        assert hello()["device"].startswith("ray local: 1 actor(s) (cpu@")
        with Client(address) as client:
            r = client.drag(
                JobRequest.seeded(
                    seed=3,
                    pairs=[((10.0, 10.0), (14.0, 10.0))],
                    model="tiny",
                    params=Params(steps=2),
                )
            )
        assert (r.width, r.height, r.steps) == (32, 32, 2)
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "log" / "daemon.log").read_text()
    assert "ray local: 1 actor(s)" in log and "daemon stopped" in log
