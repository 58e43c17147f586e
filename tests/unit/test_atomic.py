"""Files are replaced whole or not at all: a full disk leaves the old file byte-identical and
the command line says so in one line (issue 21)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gimp_draggan import atomic
from gimp_draggan.cli import main


def test_write_replaces_whole_and_keeps_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    target.chmod(0o640)
    atomic.write_bytes(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert target.stat().st_mode & 0o777 == 0o640
    atomic.write_text(tmp_path / "secret", "s\n", mode=0o600)
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin", "secret"]


def test_a_failing_writer_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "keep.png"
    target.write_bytes(b"the old picture")
    with (
        pytest.raises(atomic.NoSpaceError, match=r"no space left on .* \(needs ~3\.0 MB\)"),
        atomic.replacing(target, needed=3_000_000) as f,
    ):
        f.write(b"half of the new")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"the old picture"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs (needs root and a kernel that lets this container mount one)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a 2 MB tmpfs needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _fill(folder: Path) -> None:
    """Take every free block of the file system."""
    with (folder / "filler").open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_full_disk_keeps_the_old_output_and_says_one_line(
    tiny_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = tiny_disk / "keep.png"
    argv = [
        "drag",
        "--seed",
        "3",
        "-p",
        "20,20:24,22",
        "--model",
        "embedded",
        "--steps",
        "0",
        "-o",
        str(keep),
    ]
    assert main(argv) == 0
    old = keep.read_bytes()
    _fill(tiny_disk)
    capsys.readouterr()
    assert main([*argv[:2], "4", *argv[3:]]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: no space left on {tiny_disk} (needs ~0.")
    assert keep.read_bytes() == old
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler", "keep.png"]
