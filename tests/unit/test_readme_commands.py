"""Every `gimp-draggan …` command line in the README's sh blocks runs as written.

They run in a temporary folder holding the files they name (IN.png, face.png: the bundled demo
photo), in-process, against a real daemon on loopback ($GIMP_DRAGGAN_DAEMON, which the README
names, points at it). `serve` runs as a process and must answer `ping`. Commands that need a
download must end cleanly: exit 0, or exit 1 with an "error: …" message and no traceback (the
network is cut here).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_helpers import embedded_daemon, single_torch_thread

from gimp_draggan.cli import main
from gimp_draggan.draggan import pti
from gimp_draggan_plugin import protocol as P

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "daemon" / "assets" / "demo_photo.png"
NEEDS_DOWNLOAD = ("invert face.png --model stylegan2-ffhq", "models download")


def readme_commands() -> list[str]:
    """`gimp-draggan …` lines (or `&& gimp-draggan …` tails) of README.md's sh blocks, comments
    stripped."""
    blocks = re.findall(r"^```sh\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)
    found = []
    for line in "\n".join(blocks).splitlines():
        for part in line.split("&&"):
            command = part.split(" #", 1)[0].strip()
            if command.startswith("gimp-draggan "):
                found.append(command)
    return found


COMMANDS = readme_commands()


def free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture(scope="module")
def daemon() -> Iterator[str]:
    """The embedded model's daemon in this process, with few PTI steps."""
    yield from embedded_daemon()


def test_the_readme_has_the_examples_this_test_runs() -> None:
    """A README without them would make the test below vacuous."""
    assert any(c.startswith("gimp-draggan drag ") and "--daemon" in c for c in COMMANDS)
    assert "gimp-draggan serve" in COMMANDS and "gimp-draggan ping" in COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs_as_written(
    command: str,
    daemon: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIMP_DRAGGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(P.ADDRESS_ENV, daemon)
    for name in ("IN.png", "face.png"):
        shutil.copy(PHOTO, tmp_path / name)
    argv = shlex.split(command)[1:]
    if argv[0] == "serve":
        return check_serve(argv, monkeypatch, capsys)

    def offline(*_a: object, **_k: object) -> None:
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setitem(
        pti.PRESETS, "fast", pti.InvertParams(projection_steps=3, tuning_steps=2, w_avg_samples=64)
    )
    for _ in single_torch_thread():
        try:
            code = main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if any(needle in command for needle in NEEDS_DOWNLOAD):
        assert code == 0 or (code == 1 and err.startswith("error: ")), out + err
    else:
        assert code == 0, out + err
    if argv[0] == "drag":
        assert (tmp_path / "OUT.png").is_file()


def check_serve(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`serve` as written, at $GIMP_DRAGGAN_DAEMON (a free port): it must answer `ping`."""
    address = free_address()
    monkeypatch.setenv(P.ADDRESS_ENV, address)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gimp_draggan", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while main(["ping"]) != 0:
            assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
            assert time.monotonic() < deadline, "serve did not answer ping within 60 s"
            time.sleep(0.3)
        assert address in capsys.readouterr().out
    finally:
        proc.terminate()
        proc.wait(20)
