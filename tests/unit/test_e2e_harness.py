"""Where GIMP 3 cannot run, the end-to-end tests skip with a reason naming what is missing."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
import harness


def test_not_root_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(harness.os, "geteuid", lambda: 1000)
    assert "needs root" in (harness.missing(tmp_path / "root") or "")


def test_no_mirror_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def unreachable(*_a: object, **_k: object) -> socket.socket:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(harness.os, "geteuid", lambda: 0)
    monkeypatch.setattr(harness.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(harness.socket, "create_connection", unreachable)
    reason = harness.missing(tmp_path / "root") or ""
    assert "no network to the Debian mirror" in reason and "\n" not in reason


def test_no_debootstrap_nor_apt_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(harness.os, "geteuid", lambda: 0)
    monkeypatch.setattr(
        harness.shutil, "which", lambda name: None if name in ("debootstrap", "apt-get") else name
    )
    assert "no debootstrap" in (harness.missing(tmp_path / "root") or "")


def test_nothing_under_tests_reaches_outside_the_project() -> None:
    tests = Path(__file__).resolve().parents[1]
    needles = ("../" + "shared", '"shared" / ' + '"gimp3"', "make-" + "chroot.sh")
    for path in tests.rglob("*"):
        if path.is_file() and path.suffix in (".py", ".sh"):
            text = path.read_text(errors="replace")
            assert not any(n in text for n in needles), path


def test_version_comes_from_the_gimp_console_link(tmp_path: Path) -> None:
    bin_dir = tmp_path / "usr" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "gimp-console-3.2").write_text("")
    (bin_dir / "gimp-console").symlink_to("gimp-console-3.2")
    assert harness.built(tmp_path) and harness.version(tmp_path) == "3.2"
    assert set(harness.GIMPS) == {"3.0", "3.2"}
