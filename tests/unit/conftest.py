"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_helpers import small_counted_inversion


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[int]]:
    """Few PTI steps, an empty model cache and one torch thread; yields the list that gets an
    entry per inversion run (see `pipeline_helpers.small_counted_inversion`)."""
    import torch

    calls = small_counted_inversion(monkeypatch, tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield calls
    torch.set_num_threads(before)
