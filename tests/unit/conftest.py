"""Fixtures shared by the unit tests."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_helpers import small_counted_inversion
from service_helpers import save_tiny_model, single_torch_thread

from gimp_draggan.service.logs import LOGGER
from gimp_draggan_plugin.protocol import SECRET_ENV


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """An in-process `serve` (`logs.setup_logging`) points the gimp_draggan logger at this
    test's captured stderr and stops it propagating; every later test gets the logger back as
    it was (else they log to a closed stream and caplog sees nothing)."""
    logger = logging.getLogger(LOGGER)
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    for handler in logger.handlers:
        if handler not in handlers:
            handler.close()
    logger.handlers[:] = handlers
    logger.propagate = propagate
    logger.setLevel(level)


@pytest.fixture(autouse=True, scope="session")
def own_secret(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Daemons started by the tests (`serve` in a subprocess too) and their clients share a
    loopback secret in a temporary file, never the user's own (docs/PROTOCOL.md, Security)."""
    path = tmp_path_factory.mktemp("secret") / "daemon.secret"
    before = os.environ.get(SECRET_ENV)
    os.environ[SECRET_ENV] = str(path)
    yield path
    if before is None:
        os.environ.pop(SECRET_ENV, None)
    else:
        os.environ[SECRET_ENV] = before


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random generator file (`service_helpers.save_tiny_model`), one per test module."""
    return save_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    yield from single_torch_thread()


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, one_torch_thread: None) -> list[int]:
    """Few PTI steps, an empty model cache and one torch thread; the list that gets an entry
    per inversion run (see `pipeline_helpers.small_counted_inversion`)."""
    return small_counted_inversion(monkeypatch, tmp_path)
