"""Jobs on a Ray cluster (`serve --cluster`): a dispatcher over actors instead of the one worker.

The ZeroMQ front, the queue and the protocol stay as they are; only where a job runs changes.
Each actor (one per GPU, or `--actors N` on CPUs with `--threads-per-actor K` torch threads)
holds its own `PipelineExecutor`, so its generators and PTI sessions stay in its memory; the
dispatcher thread in the daemon places jobs (`ActorPool.target`), streams each actor's progress
back to the socket loop as the worker thread does, forwards cancels, and answers `worker_lost`
when an actor dies. Ray is imported only here, and only `serve --cluster` imports this module's
Ray parts (the placement rule needs no Ray): Ray is an optional extra, so each function that
uses it imports it.

Placement: a job goes to the actor that holds its session (the request's `session` hint, learnt
from earlier results), else to the actor that got the same content (a digest of the request's
pixels, size, depth, model and preset: a repeat drag without a session id), else to the
least-loaded actor that has its model loaded, else the least-loaded actor. A job whose actor is
busy waits for it (later jobs may overtake it): a re-inversion costs more than the wait.

Pixels travel once per session: an actor keeps the layers it was sent, and the head sends a job's
pixels and mask only to an actor that does not hold them (`gimp_draggan.service.layers`); one that
lost them answers `missing`, and the head sends that job again with them.

Faults: an actor that dies mid-job gives its client `worker_lost` at once (Ray notices the
closed connection); the sessions it held are forgotten, so their next jobs are placed anew and
inverted again. Ray restarts the actor (`max_restarts=-1`), which loads the default model;
it gets jobs again once it answers (until then jobs go to the other actors).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import zmq

from gimp_draggan.service.executor import PipelineExecutor
from gimp_draggan.service.jobs import Job, JobQueue
from gimp_draggan.service.layers import (
    LAYER_BUDGET,
    LayerCache,
    LayerKeys,
    Parcel,
    blob_digest,
    pack,
    unpack,
)
from gimp_draggan.service.worker import DONE, MSG, START, Executor, JobSpec, run_job
from gimp_draggan_plugin import protocol as P

log = logging.getLogger("gimp_draggan.service.cluster")

MAX_ROUTES = 10000  # Remembered session / content -> actor routes (oldest dropped).
READY_TIMEOUT_S = 300.0  # Actors must be up (torch imported, default model loaded) by then.
POLL_S = 0.05  # Dispatcher's wait for actor output while jobs run.
PROBE_EVERY_S = 0.5  # How often a restarting actor is asked whether it is back.


class ClusterError(RuntimeError):
    """The cluster cannot be joined or has no room for the actors; the message says why."""


@dataclass(frozen=True)
class ActorSpec:
    """How each actor builds its executor (sent to the actor; paths must exist on its node)."""

    device: str  # "cpu", or "cuda" for a one-GPU actor.
    threads: int  # torch threads.
    default_model: str | None
    files: dict[str, Path] = field(default_factory=dict)  # `serve --model FILE` models.
    cache: str | None = None  # Model cache dir (`--cache-dir`).
    layer_budget: int = LAYER_BUDGET  # Bytes of layers kept (the head mirrors the same).


@dataclass(frozen=True)
class ActorInfo:
    """Who an actor is: for the log, `hello`'s device line and the fault tests."""

    pid: int
    device: str
    node: str


@dataclass(frozen=True)
class ActorReply:
    """One streamed item of a job on an actor: progress frames, or the final reply."""

    frames: list[bytes]
    final: bool = False
    progress: P.ProgressEvent | None = None  # Without the preview: what `status` shows.
    session: str | None = None  # The final result's session id.
    missing: bool = False  # Final, without frames: a layer left out is not held; send it again.


class DragActor:
    """One worker of the cluster (a Ray actor): its own executor and session caches. Threaded
    (`max_concurrency`), so `cancel` runs while `run` streams."""

    def __init__(self, spec: ActorSpec) -> None:
        torch.set_num_threads(spec.threads)
        self.executor = PipelineExecutor(
            spec.device, spec.default_model, dict(spec.files), spec.cache
        )
        self._cancelled: dict[str, str] = {}  # job key -> last step when the cancel came
        self._step: dict[str, str] = {}  # job key -> last step reported ("drag 12")
        self._finished: deque[str] = deque(maxlen=1024)  # Keys of jobs run to their end here.
        self.layers: LayerCache[bytes] = LayerCache(spec.layer_budget)
        try:
            self.executor.warm()
        except Exception as exc:  # The first job reports the problem properly.
            log.warning("actor warm-up failed: %s", exc)

    def describe(self) -> ActorInfo:
        import ray

        return ActorInfo(os.getpid(), self.executor.device, ray.util.get_node_ip_address())

    def cancel(self, key: str) -> None:
        """Stop job `key` before its next inversion or drag step. A cancel can overtake its job
        (both are calls to this threaded actor): one for a job not started here yet stops it
        before its first step. A finished one: nothing."""
        if key not in self._finished:
            self._cancelled[key] = self._step.get(key, "none")

    def forget_layers(self) -> None:
        """Drop the layers kept (tests: as after a restart, while the head thinks them held)."""
        self.layers.clear()

    def run(self, key: str, parcel: Parcel) -> Iterator[ActorReply]:
        """Run the parcel's job, yielding progress as it comes and the final reply last (a Ray
        streaming generator: the executor runs in a thread, its callbacks feed the stream); a
        `missing` reply at once when it leaves out a layer not kept here."""
        unpacked = unpack(parcel, self.layers)
        if unpacked is None:
            yield ActorReply([], final=True, missing=True)
            return
        job = unpacked
        replies: queue.Queue[ActorReply] = queue.Queue()
        self._step[key] = "none"

        def should_stop() -> bool:
            return key in self._cancelled

        def on_progress(ev: P.ProgressEvent) -> None:
            self._step[key] = f"{ev.phase} step {ev.step}"
            if not should_stop():
                replies.put(
                    ActorReply(P.progress_frames(job.id, ev), progress=replace(ev, preview=None))
                )

        def work() -> None:
            try:
                frames = run_job(self.executor, job, on_progress, should_stop)
            except BaseException as exc:  # run_job answers everything; this is a last resort.
                frames = P.error_frames(
                    job.id, P.ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"
                )
            replies.put(ActorReply(frames, final=True, session=_session_of(frames)))

        threading.Thread(target=work, name=f"job-{job.id}", daemon=True).start()
        try:
            while True:
                reply = replies.get()
                if reply.final and key in self._cancelled:
                    reply = ActorReply(
                        P.error_frames(
                            job.id,
                            P.ErrorCode.CANCELLED,
                            f"cancelled: the actor stopped after "
                            f"{self._step[key]}; the cancel came after {self._cancelled[key]}",
                        ),
                        final=True,
                    )
                yield reply
                if reply.final:
                    return
        finally:
            self._cancelled.pop(key, None)
            self._step.pop(key, None)
            self._finished.append(key)


def _session_of(frames: list[bytes]) -> str | None:
    """The session id of an encoded `result` (None for errors and downloads)."""
    try:
        msg = P.decode(frames)
    except P.ProtocolError:
        return None
    session = msg.header.get("session") if msg.op == "result" else None
    return session if isinstance(session, str) else None


@dataclass(frozen=True)
class Ask:
    """What placement needs to know of a job, and the digests its layer travels under."""

    model: str | None
    session: str | None = None
    content: str | None = None
    layer: LayerKeys = field(default_factory=LayerKeys)


def ask_of(job: Job) -> Ask:
    """A job's placement keys and layer digests; reads the pixels and mask once (not on the
    loop)."""
    req = job.request
    if req is None:
        return Ask(None)
    pixels = None if req.pixels is None else blob_digest(req.pixels)
    layer = LayerKeys(pixels, None if req.mask is None else blob_digest(req.mask))
    content = None
    if pixels is not None and req.image is not None:
        content = hashlib.blake2b(
            f"{req.model}|{req.image.width}x{req.image.height}|{req.image.depth}|"
            f"{req.params.preset}|{pixels}".encode(),
            digest_size=16,
        ).hexdigest()
    return Ask(req.model, req.session, content, layer)


@dataclass
class Running:
    job: Job
    ask: Ask
    stream: Any  # ray.ObjectRefGenerator of ActorReply
    cancel_sent: bool = False


@dataclass
class Slot:
    """The dispatcher's view of one actor."""

    index: int
    handle: Any  # ray.actor.ActorHandle of DragActor
    info: ActorInfo
    models: set[str] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)
    contents: set[str] = field(default_factory=set)
    layers: LayerCache[None] = field(default_factory=LayerCache)  # Mirror of the actor's.
    sent_bytes: int = 0  # Layer bytes (pixels, masks) sent to it.
    resends: int = 0  # Jobs sent again with their layer after a `missing` reply.
    jobs_done: int = 0
    running: Running | None = None
    up: bool = True  # False from its death until it answers again.
    probe: Any = None  # describe() call in flight while it restarts.
    probe_at: float = 0.0  # When to ask again.

    @property
    def busy(self) -> bool:
        return self.running is not None


class ActorPool:
    """The actors and where each session lives (the placement rule, without Ray)."""

    def __init__(self, slots: list[Slot], default_model: str | None, description: str = "") -> None:
        self.slots = slots
        self.default_model = default_model
        self.description = description  # `hello`'s and `status`'s device line.
        self._session_at: OrderedDict[str, int] = OrderedDict()
        self._content_at: OrderedDict[str, int] = OrderedDict()

    def target(self, ask: Ask) -> Slot | None:
        """Where a job belongs (busy or not): its session's actor, its content's actor, else
        the least-loaded actor with its model loaded, else the least-loaded actor; None while
        every actor is restarting."""
        for key, routes in ((ask.session, self._session_at), (ask.content, self._content_at)):
            if key is not None and key in routes:
                return self.slots[routes[key]]
        up = [s for s in self.slots if s.up]
        holders = [s for s in up if ask.model in s.models] or up
        if not holders:
            return None
        return min(holders, key=lambda s: (s.busy, len(s.sessions), s.jobs_done, s.index))

    def where(self, session: str) -> int | None:
        """The actor index holding `session`, if known."""
        return self._session_at.get(session)

    def placed(self, slot: Slot, ask: Ask) -> None:
        """A job started on `slot`: the same content goes there too from now on."""
        if ask.content is not None:
            self._route(self._content_at, ask.content, slot, slot.contents)

    def finished(self, slot: Slot, model: str | None, session: str | None) -> None:
        slot.jobs_done += 1
        if model is not None:
            slot.models.add(model)
        if session is not None:
            self._route(self._session_at, session, slot, slot.sessions)

    def lost(self, slot: Slot) -> None:
        """`slot`'s actor died: forget what it held; Ray's restart loads the default model."""
        for routes, held in ((self._session_at, slot.sessions), (self._content_at, slot.contents)):
            for key in held:
                if routes.get(key) == slot.index:
                    del routes[key]
            held.clear()
        slot.layers.clear()
        slot.models = {self.default_model} if self.default_model else set()
        slot.up = False

    def _route(self, routes: OrderedDict[str, int], key: str, slot: Slot, held: set[str]) -> None:
        before = routes.pop(key, None)
        if before is not None and before != slot.index:
            self.slots[before].sessions.discard(key)
            self.slots[before].contents.discard(key)
        routes[key] = slot.index
        held.add(key)
        while len(routes) > MAX_ROUTES:
            old, index = routes.popitem(last=False)
            self.slots[index].sessions.discard(old)
            self.slots[index].contents.discard(old)

    def dispatcher(
        self, ctx: zmq.Context, events: str, queue: JobQueue, executor: Executor
    ) -> Dispatcher:
        """The server's runner factory (`Server(..., runner=pool.dispatcher)`)."""
        return Dispatcher(self, ctx, events, queue)


class Dispatcher(threading.Thread):
    """Replaces the worker thread: starts queued jobs on idle actors and relays their output
    (START / MSG / DONE over the inproc PAIR, exactly as `Worker` does)."""

    def __init__(self, pool: ActorPool, ctx: zmq.Context, events: str, queue: JobQueue) -> None:
        super().__init__(name="gimp-draggan-dispatcher", daemon=True)
        self.pool = pool
        self._ctx = ctx
        self._events = events
        self._queue = queue
        self._asks: dict[bytes, Ask] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        sock = self._ctx.socket(zmq.PAIR)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self._events)
        try:
            while not self.stopping.is_set():
                self._probe()
                self._start_jobs(sock)
                if not self._relay(sock) and not any(s.up for s in self.pool.slots):
                    self.stopping.wait(POLL_S)  # Every actor restarts: nothing to do yet.
                self._send_cancels()
        except Exception:
            log.exception("the dispatcher failed")
            raise
        finally:
            for slot in self.pool.slots:
                if slot.running is not None:
                    slot.handle.cancel.remote(slot.running.job.key.decode())
            sock.close(linger=0)

    # ---- starting -----------------------------------------------------------------------------
    def _start_jobs(self, sock: zmq.Socket) -> None:
        while any(s.up and not s.busy for s in self.pool.slots):
            self._asks = {
                job.key: self._asks.get(job.key) or ask_of(job) for job in self._queue.waiting()
            }
            running = any(s.busy for s in self.pool.slots)
            taken = self._queue.take_first(self._idle_target, 0.0 if running else 0.2)
            if taken is None:
                return
            job, slot = taken
            ask = self._asks.pop(job.key)
            sock.send_multipart([START, job.key])
            slot.running = Running(job, ask, None)
            sent = self._send(slot)
            self.pool.placed(slot, ask)
            log.info(
                "job %s (%s) on actor %d (%s, pid %d), %d layer bytes sent",
                job.id,
                job.op,
                slot.index,
                slot.info.node,
                slot.info.pid,
                sent,
            )

    def _send(self, slot: Slot, full: bool = False) -> int:
        """Start `slot`'s job on its actor, its layer left out where the actor holds it (sent
        with `full`); the layer bytes sent."""
        import ray

        assert slot.running is not None
        job = slot.running.job
        parcel = pack(
            JobSpec(job.id, job.op, job.request, job.args),
            slot.running.ask.layer,
            slot.layers,
            full,
        )
        ref = ray.put(parcel)  # In the object store once, fetched by this actor only.
        slot.running.stream = slot.handle.run.options(num_returns="streaming").remote(
            job.key.decode(), ref
        )
        slot.sent_bytes += parcel.nbytes
        return parcel.nbytes

    def _resend(self, slot: Slot) -> None:
        """The actor lost a layer it was thought to hold: the same job again, with it."""
        assert slot.running is not None
        slot.resends += 1
        sent = self._send(slot, full=True)
        log.info(
            "actor %d did not hold job %s's layer: sent again with it (%d bytes)",
            slot.index,
            slot.running.job.id,
            sent,
        )

    def _idle_target(self, job: Job) -> Slot | None:
        ask = self._asks.get(job.key)
        if ask is None:
            return None  # Arrived just now: its digest is computed on the next turn.
        slot = self.pool.target(ask)
        return None if slot is None or slot.busy else slot

    def _probe(self) -> None:
        """Ask restarting actors whether they are back; place jobs on them once they are."""
        import ray
        from ray.exceptions import RayActorError

        now = time.monotonic()
        for slot in self.pool.slots:
            if slot.up:
                continue
            if slot.probe is None:
                if now >= slot.probe_at:
                    slot.probe = slot.handle.describe.remote()
                continue
            if not ray.wait([slot.probe], timeout=0)[0]:
                continue
            try:
                slot.info = ray.get(slot.probe)
            except RayActorError:
                slot.probe_at = now + PROBE_EVERY_S
            else:
                slot.up = True
                log.info("actor %d is back (%s, pid %d)", slot.index, slot.info.node, slot.info.pid)
            slot.probe = None

    # ---- relaying -----------------------------------------------------------------------------
    def _relay(self, sock: zmq.Socket) -> bool:
        """Forward what the running jobs' actors sent (waits up to POLL_S); False when no job
        runs."""
        import ray

        slots = [s for s in self.pool.slots if s.running is not None]
        if not slots:
            return False
        ready, _ = ray.wait(
            [s.running.stream for s in slots if s.running], num_returns=1, timeout=POLL_S
        )
        for slot in slots:
            if slot.running is not None and any(r is slot.running.stream for r in ready):
                self._drain(sock, slot)
        return True

    def _drain(self, sock: zmq.Socket, slot: Slot) -> None:
        """Forward what `slot`'s stream has ready; end the job on its final reply or death."""
        import ray
        from ray.exceptions import RayActorError

        assert slot.running is not None
        run = slot.running
        while True:
            try:
                reply: ActorReply = ray.get(next(run.stream))
            except RayActorError as exc:
                self._lost(sock, slot, exc)
                return
            except StopIteration:
                self._finish(
                    sock,
                    slot,
                    P.error_frames(
                        run.job.id, P.ErrorCode.INTERNAL, "the actor ended the job without a reply"
                    ),
                    None,
                )
                return
            except Exception as exc:
                log.exception("job %s failed on actor %d", run.job.id, slot.index)
                self._finish(
                    sock,
                    slot,
                    P.error_frames(
                        run.job.id, P.ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"
                    ),
                    None,
                )
                return
            if reply.missing:
                self._resend(slot)
                return
            if reply.final:
                self._finish(sock, slot, reply.frames, reply.session)
                return
            run.job.progress = reply.progress
            if not run.job.cancelled.is_set():
                sock.send_multipart([MSG, run.job.key, *reply.frames])
            if not ray.wait([run.stream], timeout=0)[0]:
                return

    def _finish(
        self, sock: zmq.Socket, slot: Slot, frames: list[bytes], session: str | None
    ) -> None:
        assert slot.running is not None
        job = slot.running.job
        slot.running = None
        self._queue.finish(job)
        loaded = job.request.model if job.request and session is not None else None
        self.pool.finished(slot, loaded, session)
        sock.send_multipart([DONE, job.key, *frames], copy=False)

    def _lost(self, sock: zmq.Socket, slot: Slot, exc: Exception) -> None:
        assert slot.running is not None
        job = slot.running.job
        log.warning(
            "actor %d (%s, pid %d) died running job %s: %s; forgetting its %d session(s)",
            slot.index,
            slot.info.node,
            slot.info.pid,
            job.id,
            type(exc).__name__,
            len(slot.sessions),
        )
        self.pool.lost(slot)
        slot.running = None
        self._queue.finish(job)
        sock.send_multipart(
            [
                DONE,
                job.key,
                *P.error_frames(
                    job.id,
                    P.ErrorCode.WORKER_LOST,
                    f"the cluster's actor {slot.index} ({slot.info.device} on "
                    f"{slot.info.node}) died while running this job; its sessions are "
                    "forgotten and are inverted anew on the next job",
                ),
            ]
        )

    def _send_cancels(self) -> None:
        for slot in self.pool.slots:
            run = slot.running
            if run is not None and not run.cancel_sent and run.job.cancelled.is_set():
                run.cancel_sent = True
                slot.handle.cancel.remote(run.job.key.decode())


# ---- joining a cluster and starting the actors ------------------------------------------------
@dataclass(frozen=True)
class ClusterConfig:
    """`serve --cluster ADDRESS [--actors N] [--threads-per-actor K] [--device D]`."""

    address: str  # "local", "auto", "ray://HOST:PORT", HOST:PORT
    actors: int | None = None  # CPU actors (default 1); with GPUs: one per GPU.
    threads_per_actor: int | None = None  # Default: the cluster's CPUs / actors.
    device: str | None = None  # "cpu" forces CPU actors; None: GPUs if any.


def join(address: str, **init: Any) -> None:
    """Start a private Ray (`local`) or join a running cluster; extra `ray.init` arguments
    (tests: num_cpus, object_store_memory) go to a local start."""
    try:
        import ray
    except ImportError:
        raise ClusterError("--cluster needs Ray: pip install 'gimp-draggan[cluster]'") from None

    try:
        if address == "local":
            ray.init(address="local", include_dashboard=False, **init)
        else:
            ray.init(address=address)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ClusterError(
            f"cannot join the Ray cluster at {address}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__} "
            "(start one with `ray start --head`, or use --cluster local)"
        ) from None


def start_actors(
    config: ClusterConfig, default_model: str | None, files: dict[str, Path], cache: str | None
) -> ActorPool:
    """Start the actors on the joined cluster and wait until each is up."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    on_gpus = gpus > 0 and (config.device or "auto") != "cpu"
    if config.device not in (None, "auto", "cpu", "cuda"):
        raise ClusterError(
            f"--device {config.device} with --cluster: use cpu or cuda "
            "(each GPU actor sees only its own GPU)"
        )
    if config.device == "cuda" and not on_gpus:
        raise ClusterError("--device cuda, but the Ray cluster has no GPUs")
    count = gpus if on_gpus and config.actors is None else (config.actors or 1)
    if count < 1:
        raise ClusterError("--actors must be at least 1")
    threads = config.threads_per_actor or max(1, cpus // count)
    spec = ActorSpec("cuda" if on_gpus else "cpu", threads, default_model, files, cache)
    remote = ray.remote(DragActor).options(
        num_gpus=1 if on_gpus else 0,
        num_cpus=0 if on_gpus else threads,
        max_concurrency=4,
        max_restarts=-1,
    )
    handles: list[Any] = [remote.remote(spec) for _ in range(count)]
    try:
        infos = ray.get([h.describe.remote() for h in handles], timeout=READY_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise ClusterError(
            f"{count} actor(s) with {'1 GPU' if on_gpus else f'{threads} CPUs'} each did not "
            f"start within {READY_TIMEOUT_S:.0f} s: the cluster has {gpus} GPUs and {cpus} CPUs "
            "(fewer --actors or --threads-per-actor?)"
        ) from None
    models = {default_model} if default_model else set()
    slots = [
        Slot(i, h, info, set(models), layers=LayerCache(spec.layer_budget))
        for i, (h, info) in enumerate(zip(handles, infos, strict=True))
    ]
    kinds = ", ".join(f"{info.device}@{info.node}" for info in infos)
    pool = ActorPool(slots, default_model, f"ray {config.address}: {count} actor(s) ({kinds})")
    log.info("%s; %d torch thread(s) each", pool.description, threads)
    return pool


def leave() -> None:
    """Stop the actors (they belong to this daemon) and disconnect, or stop a private Ray."""
    import ray

    ray.shutdown()
