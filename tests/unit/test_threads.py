"""Torch threads follow the cores actually free (thread oversubscription costs 5x, measured)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from gimp_draggan import threads


def test_a_busy_core_is_not_counted_as_free() -> None:
    cores = threads.usable_cores()
    if cores < 2:
        pytest.skip("one usable core: nothing to leave free")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it get scheduled
        busy = threads.free_cores(sample_s=0.5)
    finally:
        hog.kill()
        hog.wait()
    assert 1 <= busy <= cores - 1


def test_requested_and_environment_counts_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(threads.THREADS_ENV, "3")
    assert threads.choose() == 3
    assert threads.choose(1) == 1
    monkeypatch.setenv(threads.THREADS_ENV, "zero")
    with pytest.raises(ValueError, match="whole number"):
        threads.choose()


@pytest.mark.parametrize("bad", ["0", "-2", "two"])
def test_bad_thread_counts_are_refused_by_name(bad: str) -> None:
    with pytest.raises(ValueError, match="threads must be"):
        threads.parse_threads(bad)


def test_apply_sets_torchs_count(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        assert threads.apply(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_cli_refuses_a_bad_thread_count(capsys: pytest.CaptureFixture[str]) -> None:
    from gimp_draggan.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["drag", "in.png", "-p", "1,1:5,5", "-o", "o.png", "--threads", "0"])
    assert exit_.value.code == 2
    assert "threads must be >= 1" in capsys.readouterr().err
