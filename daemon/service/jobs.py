"""Jobs of the daemon and the bounded queue between the socket loop and what runs them.

The socket loop adds and cancels; the worker takes one job at a time (the cluster's dispatcher
one per idle actor). Positions (1 = next) are what a waiting client is told.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gimp_draggan_plugin import protocol as P

_serial = itertools.count(1)
T = TypeVar("T")


@dataclass
class Job:
    """One queued or running request. `envelope` routes replies back to its client."""

    envelope: list[bytes]
    id: str
    op: str  # "drag" | "invert" | "models"
    request: P.JobRequest | None = None  # drag / invert
    args: dict[str, Any] = field(default_factory=dict)  # models download: {"name": ...}
    key: bytes = field(default_factory=lambda: str(next(_serial)).encode())
    cancelled: threading.Event = field(default_factory=threading.Event)
    abandoned: bool = False  # Its client is gone: send it nothing more.
    sent_position: int = 0
    progress: P.ProgressEvent | None = None  # Last progress, for `status`.

    @property
    def client(self) -> bytes:
        return self.envelope[0] if self.envelope else b""


class JobQueue:
    """Bounded FIFO of waiting jobs plus the running ones (one per worker); thread-safe."""

    def __init__(self, max_queue: int) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.max_queue = max_queue
        self._waiting: deque[Job] = deque()
        self._running: list[Job] = []
        self._cond = threading.Condition()
        self.done = 0

    def put(self, job: Job) -> int:
        """Queue `job`; return its position, or raise ProtocolError(queue_full)."""
        with self._cond:
            if len(self._waiting) >= self.max_queue:
                raise P.ProtocolError(
                    P.ErrorCode.QUEUE_FULL,
                    f"{len(self._waiting)} jobs are already waiting (limit {self.max_queue})",
                )
            self._waiting.append(job)
            self._cond.notify()
            return len(self._waiting)

    def take(self, timeout_s: float) -> Job | None:
        """Worker side: the next job (now running), or None after `timeout_s`."""
        with self._cond:
            if not self._waiting:
                self._cond.wait(timeout_s)
            if not self._waiting:
                return None
            job = self._waiting.popleft()
            self._running.append(job)
            return job

    def take_first(
        self, choose: Callable[[Job], T | None], timeout_s: float
    ) -> tuple[Job, T] | None:
        """Dispatcher side: the first waiting job that `choose` finds a place for (now
        running), with that place; None when there is none (waits `timeout_s` only for an
        empty queue). Later jobs may overtake one whose place is busy."""
        with self._cond:
            if not self._waiting:
                self._cond.wait(timeout_s)
            for job in self._waiting:
                place = choose(job)
                if place is not None:
                    self._waiting.remove(job)
                    self._running.append(job)
                    return job, place
            return None

    def finish(self, job: Job) -> None:
        with self._cond:
            if job in self._running:
                self._running.remove(job)
            self.done += 1

    def remove(self, job: Job) -> bool:
        """Drop a waiting job; False if it is not waiting (running or gone)."""
        with self._cond:
            try:
                self._waiting.remove(job)
            except ValueError:
                return False
            return True

    @property
    def running(self) -> Job | None:
        """The longest-running job (the only one with a single worker)."""
        with self._cond:
            return self._running[0] if self._running else None

    def waiting(self) -> list[Job]:
        with self._cond:
            return list(self._waiting)
