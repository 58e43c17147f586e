"""The daemon's life cycle: `serve_forever()` in the foreground (the CLI),
or `start()` in a background thread (tests, embedding) that returns once the sockets listen and
re-raises a startup failure (address in use, missing keys) in the caller's thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger("gimp_draggan.service")


class ServiceThread:
    """Base of `Server`; subclasses implement `serve_forever` and open their
    sockets through `_open_or_report`."""

    kind = "service"  # Named in the log when the loop fails.

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        raise NotImplementedError

    def _start_thread(self) -> None:
        self._thread = threading.Thread(
            target=self._serve_quietly, name=f"gimp-draggan-{self.kind}", daemon=True
        )
        self._thread.start()
        self._ready.wait(30)
        if self._startup_error is not None:
            raise self._startup_error

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _serve_quietly(self) -> None:
        """Thread body for start(): a startup error is re-raised by start(), not logged here."""
        try:
            self.serve_forever()
        except BaseException:
            if self._startup_error is None:
                log.exception("the %s's loop failed", self.kind)

    def _open_or_report(self, open_sockets: Callable[[], T]) -> T:
        """Open the sockets; on failure hand the error to start() and re-raise it."""
        try:
            return open_sockets()
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            raise
