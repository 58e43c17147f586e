"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_helpers import small_counted_inversion
from service_helpers import save_tiny_model, single_torch_thread


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random generator file (`service_helpers.save_tiny_model`), one per test module."""
    return save_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    yield from single_torch_thread()


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
          one_torch_thread: None) -> list[int]:
    """Few PTI steps, an empty model cache and one torch thread; the list that gets an entry
    per inversion run (see `pipeline_helpers.small_counted_inversion`)."""
    return small_counted_inversion(monkeypatch, tmp_path)
