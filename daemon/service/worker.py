"""The one worker thread: runs queued jobs on the executor, one at a time.

It never touches the client socket (ZeroMQ sockets are single-threaded): progress and final
replies go, already encoded, over an inproc PAIR to the socket loop, which routes them.
Every job ends in exactly one final reply, whatever the executor does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import zmq

from gimp_draggan.service.jobs import Job, JobQueue
from gimp_draggan_plugin import protocol as P

log = logging.getLogger("gimp_draggan.service.worker")

ProgressFn = Callable[[P.ProgressEvent], None]
StopFn = Callable[[], bool]

# Worker -> loop message kinds (first frame), followed by the job key and the reply frames.
START, MSG, DONE = b"start", b"msg", b"done"


class Executor(Protocol):
    """What the daemon runs jobs on (the photo pipeline; tests inject small ones)."""

    def info(self) -> dict[str, Any]:
        """`device`, `default_model`, and `models` (list of dicts with name, cached, ...)."""
        ...

    def check_model(self, name: str | None) -> str:
        """The model a job will use; raise ProtocolError (unknown_model, model_not_cached,
        model_damaged)."""
        ...

    def run(
        self, request: P.JobRequest, on_progress: ProgressFn, should_stop: StopFn
    ) -> P.JobResult:
        """Run a drag or invert; return early once should_stop() (the result is discarded)."""
        ...

    def download(self, name: str, on_progress: ProgressFn, should_stop: StopFn) -> None: ...

    def warm(self) -> None:
        """Before the first job: load what it will need (the default model); may do nothing."""
        ...

    def recover(self) -> None:
        """After out-of-memory: drop caches so the next job can run."""
        ...


class Runner(Protocol):
    """What runs the queued jobs: the one `Worker` thread, or the cluster's dispatcher."""

    stopping: threading.Event

    def start(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...


# Made by the server once its event socket is bound: (context, event address, queue, executor).
RunnerFactory = Callable[[zmq.Context, str, JobQueue, Executor], Runner]


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError / MPS / host OOM, without importing torch here."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class Worker(threading.Thread):
    def __init__(self, ctx: zmq.Context, events: str, queue: JobQueue, executor: Executor) -> None:
        super().__init__(name="gimp-draggan-worker", daemon=True)
        self._ctx = ctx
        self._events = events
        self._queue = queue
        self._executor = executor
        self.stopping = threading.Event()

    def run(self) -> None:
        sock = self._ctx.socket(zmq.PAIR)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self._events)
        self._warm()
        try:
            while not self.stopping.is_set():
                job = self._queue.take(0.2)
                if job is None:
                    continue
                sock.send_multipart([START, job.key])
                try:
                    frames = self._execute(job, sock)
                finally:
                    self._queue.finish(job)
                sock.send_multipart([DONE, job.key, *frames], copy=False)
        finally:
            sock.close(linger=0)

    def _warm(self) -> None:
        """Let the executor load its default model before the first job."""
        try:
            self._executor.warm()
        except Exception as exc:  # The first job will report the problem properly.
            log.warning("warm-up failed: %s", exc)

    def _execute(self, job: Job, sock: zmq.Socket) -> list[bytes]:
        def should_stop() -> bool:
            return job.cancelled.is_set() or self.stopping.is_set()

        def on_progress(ev: P.ProgressEvent) -> None:
            job.progress = ev
            if not should_stop():
                sock.send_multipart([MSG, job.key, *P.progress_frames(job.id, ev)])

        return run_job(
            self._executor, JobSpec(job.id, job.op, job.request, job.args), on_progress, should_stop
        )


@dataclass(frozen=True)
class JobSpec:
    """What a job runs, without the socket loop's bookkeeping: it can travel to a Ray actor."""

    id: str
    op: str  # "drag" | "invert" | "models"
    request: P.JobRequest | None
    args: dict[str, Any]


def run_job(
    executor: Executor, job: JobSpec, on_progress: ProgressFn, should_stop: StopFn
) -> list[bytes]:
    """Run one job on `executor`; its final reply, encoded. Shared by the worker thread and the
    cluster's actors, so both answer every failure with the same code."""
    try:
        if should_stop():
            raise P.ProtocolError(P.ErrorCode.CANCELLED, "cancelled before it started")
        if job.op == "models":
            name = job.args["name"]
            executor.download(name, on_progress, should_stop)
            if should_stop():
                raise P.ProtocolError(P.ErrorCode.CANCELLED, "download cancelled")
            return P.encode(
                "models", job.id, {"models": executor.info()["models"], "downloaded": name}
            )
        if job.request is None:
            raise P.ProtocolError(P.ErrorCode.INTERNAL, f"job {job.id} has no request")
        result = executor.run(job.request, on_progress, should_stop)
        if should_stop():
            raise P.ProtocolError(P.ErrorCode.CANCELLED, "cancelled")
        return P.result_frames(job.id, result)
    except P.ProtocolError as exc:
        return P.exception_frames(job.id, exc)
    except Exception as exc:
        return _failure(executor, job.id, exc, should_stop())


def _failure(executor: Executor, job_id: str, exc: Exception, cancelled: bool) -> list[bytes]:
    if cancelled:
        return P.error_frames(job_id, P.ErrorCode.CANCELLED, "cancelled")
    if is_out_of_memory(exc):
        log.warning("job %s ran out of memory: %s; freeing caches", job_id, exc)
        try:
            executor.recover()
        except Exception:
            log.exception("recovering from out-of-memory failed")
        return P.error_frames(job_id, P.ErrorCode.OUT_OF_MEMORY, f"out of memory: {exc}")
    if isinstance(exc, ValueError):
        log.info("job %s rejected: %s", job_id, exc)
        return P.error_frames(job_id, P.ErrorCode.BAD_REQUEST, str(exc))
    log.exception("job %s failed", job_id)
    return P.error_frames(job_id, P.ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
