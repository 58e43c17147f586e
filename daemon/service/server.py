"""The daemon's socket loop: a ROUTER front, one worker thread (or, with `serve --cluster`, a
dispatcher over Ray actors: `cluster`), a bounded queue, heartbeats.

One thread owns the client socket and never blocks on work: it validates requests, answers
hello/status/models/cancel at once, queues jobs (telling waiting clients their position),
forwards the worker's progress and final replies, and notices vanished clients (a client
killed mid-drag: its running job is cancelled within one step, its queued jobs are dropped).

Vanished clients are found three ways: the ROUTER is ROUTER_MANDATORY, so a send to a gone
peer fails (EHOSTUNREACH); a socket monitor's DISCONNECTED event starts a burst of such probes,
so a killed client is noticed within milliseconds; and a client silent for
HEARTBEAT_TIMEOUT_S while it has open jobs is dropped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import zmq

from gimp_draggan.service.jobs import Job, JobQueue
from gimp_draggan.service.keys import serve_curve
from gimp_draggan.service.lifecycle import ServiceThread
from gimp_draggan.service.logs import RefusalLog
from gimp_draggan.service.worker import DONE, MSG, START, Executor, Runner, RunnerFactory, Worker
from gimp_draggan_plugin import protocol as P

log = logging.getLogger("gimp_draggan.service.server")

PROBE_BURST_S = 0.5  # After a disconnect event, probe clients with open jobs this long...
PROBE_EVERY_S = 0.05  # ...this often.
REFUSALS = (
    P.ErrorCode.TOO_LARGE,
    P.ErrorCode.QUEUE_FULL,
    P.ErrorCode.NOT_YOUR_DAEMON,
)  # Logged (rate-limited) when sent.
# Failed handshakes worth a log line. A connection that closes before its greeting is done
# (EVENT_HANDSHAKE_FAILED_NO_DETAIL) is not logged: every client's own probe for a foreign
# program on the port (`client.not_zeromq`) ends that way, once per request.
HANDSHAKE_FAILED: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "its CURVE key is not in allowed_clients",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "it broke the ZeroMQ handshake",
}


def daemon_version() -> str:
    try:
        return metadata.version("gimp-draggan")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class ServerError(RuntimeError):
    """The daemon cannot start as configured; the message says how to fix it."""


@dataclass(frozen=True)
class ServerConfig:
    bind: str = P.DEFAULT_ADDRESS  # ROUTER address.
    max_queue: int = P.MAX_QUEUE_DEFAULT
    keys: Path | None = None  # CURVE key dir; required for a non-loopback bind.
    heartbeat_s: float = P.HEARTBEAT_INTERVAL_S
    silence_s: float = P.HEARTBEAT_TIMEOUT_S
    max_message_bytes: int = P.MAX_MESSAGE_BYTES  # Per frame; a larger one drops the connection.
    secret: str | None = None  # Owner's loopback secret every request must carry
    #                                      (`serve` sets it without CURVE; None = not checked).


class Server(ServiceThread):
    """Run with `start()` (background thread, for tests) or `serve_forever()` (the CLI)."""

    kind = "daemon"

    def __init__(
        self,
        config: ServerConfig,
        executor: Executor,
        ctx: zmq.Context | None = None,
        runner: RunnerFactory = Worker,
    ) -> None:
        super().__init__()
        self.config = config
        self.executor = executor
        self.runner = runner  # Worker thread, or the cluster's dispatcher.
        self.ctx = ctx or zmq.Context.instance()
        self.queue = JobQueue(config.max_queue)
        self.address = ""
        self._worker: Runner | None = None
        self._auth: Any = None
        self._events_addr = f"inproc://gimp-draggan-events-{uuid.uuid4().hex}"
        self._jobs: dict[bytes, Job] = {}  # key -> job
        self._by_client: dict[bytes, dict[str, Job]] = {}  # client -> id -> job
        self._last_seen: dict[bytes, float] = {}
        self._outbox: list[tuple[list[bytes], list[Any]]] = []  # Final replies, pipe full.
        self._probe_until = 0.0
        self._next_beat = 0.0
        self._started = time.monotonic()
        self.refusals = RefusalLog(log)

    # ---- life cycle ---------------------------------------------------------------------------
    def start(self) -> str:
        """Serve in a background thread; return the bound address once listening."""
        self._start_thread()
        return self.address

    def serve_forever(self) -> None:
        front, events, monitor = self._open_or_report(self._open)
        self._worker = self.runner(self.ctx, self._events_addr, self.queue, self.executor)
        self._worker.start()
        self._ready.set()
        try:
            self._loop(front, events, monitor)
        finally:
            self._worker.stopping.set()
            for job in list(self._jobs.values()):
                job.cancelled.set()
            self._worker.join(10)
            for sock in (front, events, monitor):
                if sock is not None:
                    sock.close(linger=0)
            if self._auth is not None:
                self._auth.stop()
            log.info("daemon stopped")

    def _open(self) -> tuple[zmq.Socket, zmq.Socket, zmq.Socket | None]:
        cfg = self.config
        events = self.ctx.socket(zmq.PAIR)
        events.bind(self._events_addr)
        bind = P.check_address(cfg.bind)
        if not P.is_loopback(bind) and cfg.keys is None:
            raise ServerError(
                f"refusing to listen on {bind} without encryption: a non-loopback address "
                "needs CURVE keys. Run `gimp-draggan keys`, then `gimp-draggan serve --bind "
                f"{bind} --keys DIR` (or bind {P.DEFAULT_ADDRESS} for this machine only)"
            )
        front = self.ctx.socket(zmq.ROUTER)
        self._common_options(front)
        front.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if cfg.keys is not None:
            self._auth = serve_curve(self.ctx, front, cfg.keys)
        try:
            front.bind(bind)
        except zmq.ZMQError as exc:
            front.close(linger=0)
            raise ServerError(
                f"cannot listen on {bind}: {exc.strerror}. Is another daemon running there? "
                f"(`gimp-draggan ping --daemon {bind}`)"
            ) from None
        self.address = front.getsockopt_string(zmq.LAST_ENDPOINT)
        events_mask = zmq.EVENT_DISCONNECTED
        for event in HANDSHAKE_FAILED:
            events_mask |= event
        monitor = front.get_monitor_socket(events_mask)
        log.info(
            "listening on %s (protocol %d)%s",
            self.address,
            P.PROTOCOL_VERSION,
            " with CURVE"
            if cfg.keys
            else " for its owner only (loopback secret)"
            if cfg.secret
            else "",
        )
        return front, events, monitor

    def _common_options(self, sock: zmq.Socket) -> None:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes)
        sock.setsockopt(zmq.SNDHWM, 10000)

    # ---- the loop -----------------------------------------------------------------------------
    def _loop(self, front: zmq.Socket, events: zmq.Socket, monitor: zmq.Socket | None) -> None:
        self._front = front
        poller = zmq.Poller()
        poller.register(front, zmq.POLLIN)
        poller.register(events, zmq.POLLIN)
        if monitor is not None:
            poller.register(monitor, zmq.POLLIN)
        self._next_beat = time.monotonic() + self.config.heartbeat_s
        while not self._stop.is_set():
            try:
                self._turn(poller, front, events, monitor)
            except Exception:  # A bug must not take the daemon down; it is logged.
                log.exception("error in the daemon's loop; serving on")

    def _turn(
        self, poller: zmq.Poller, front: zmq.Socket, events: zmq.Socket, monitor: zmq.Socket | None
    ) -> None:
        """One poll: worker events, client messages, disconnects, heartbeats."""
        probing = time.monotonic() < self._probe_until
        ready = dict(poller.poll(int(1000 * (PROBE_EVERY_S if probing else 0.2))))
        if events in ready:
            self._drain(events, self._on_worker, copy=False)
        if front in ready:
            self._drain(front, self._on_front)
        if monitor is not None and monitor in ready:
            self._drain(monitor, self._on_monitor)
        now = time.monotonic()
        if probing:
            self._probe_clients()
        if now >= self._next_beat:
            self._next_beat = now + self.config.heartbeat_s
            self._heartbeat(now)
            self.refusals.flush()
        if self._outbox:
            self._flush_outbox()

    @staticmethod
    def _drain(sock: zmq.Socket, handle: Any, limit: int = 256, copy: bool = True) -> None:
        for _ in range(limit):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=copy)
            except zmq.Again:
                return
            handle(frames)

    # ---- sending ------------------------------------------------------------------------------
    def _send(self, envelope: list[bytes], frames: list[Any], final: bool = True) -> bool:
        """Send to a client; False if it is gone. Interim messages may be dropped when full."""
        big = any(len(f) > 65536 for f in frames)
        try:
            self._front.send_multipart([*envelope, *frames], zmq.NOBLOCK, copy=not big)
        except zmq.Again:
            if final:
                self._outbox.append((envelope, frames))
            return True
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                if envelope:
                    self._client_gone(envelope[0], "unreachable")
                return False
            raise
        return True

    def _flush_outbox(self) -> None:
        pending, self._outbox = self._outbox, []
        for envelope, frames in pending:
            self._send(envelope, frames)

    def _error(self, envelope: list[bytes], msg_id: str, exc: P.ProtocolError) -> None:
        if exc.code in REFUSALS:
            self.refusals.refused(exc.code, envelope[0].hex() if envelope else "?", exc.message)
        else:
            log.debug("error to %s: %s %s", msg_id or "?", exc.code, exc.message)
        self._send(envelope, P.exception_frames(msg_id or "-", exc))

    def _on_monitor(self, frames: list[bytes]) -> None:
        """A dropped connection starts a probe burst; a failed handshake is a refusal."""
        from zmq.utils.monitor import parse_monitor_message  # Brings asyncio (~30 ms): here.

        event = parse_monitor_message(frames)["event"]
        if event == zmq.EVENT_DISCONNECTED:
            self._probe_until = time.monotonic() + PROBE_BURST_S
        elif event in HANDSHAKE_FAILED:
            self.refusals.refused("handshake", "(before a routing id)", HANDSHAKE_FAILED[event])

    # ---- from clients -------------------------------------------------------------------------
    def _on_front(self, parts: list[bytes]) -> None:
        if len(parts) < 2:
            return  # A routing id with no message: nothing to answer.
        envelope, frames = parts[:1], parts[1:]
        client = envelope[0]
        if client in self._by_client:
            self._last_seen[client] = time.monotonic()
        try:
            msg = P.decode(frames)
        except P.ProtocolError as exc:
            self._error(envelope, P.peek_id(frames), exc)
            return
        if not P.authorized(msg.header, self.config.secret):
            what = "no secret" if P.TOKEN_FIELD not in msg.header else "a wrong secret"
            self._error(
                envelope,
                msg.id,
                P.ProtocolError(
                    P.ErrorCode.NOT_YOUR_DAEMON,
                    f"this daemon at {self.address} "
                    f"belongs to another user: the {msg.op} request carried {what}",
                ),
            )
            return
        log.debug("%s %s from %s", msg.op, msg.id, client.hex())
        try:
            self._dispatch(envelope, msg)
        except P.ProtocolError as exc:
            self._error(envelope, msg.id, exc)
        except Exception as exc:
            log.exception("request %s (%s) failed", msg.id, msg.op)
            self._error(
                envelope,
                msg.id,
                P.ProtocolError(P.ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"),
            )

    def _dispatch(self, envelope: list[bytes], msg: P.Message) -> None:
        op = msg.op
        if op == "heartbeat":
            self._send(envelope, P.encode("heartbeat", msg.id), final=False)
        elif op == "hello":
            self._send(envelope, P.encode("hello", msg.id, self._hello()))
        elif op == "status":
            self._send(envelope, P.encode("status", msg.id, self._status()))
        elif op == "cancel":
            self._cancel(envelope, msg)
        elif op in ("drag", "invert"):
            req = P.check_job(msg)  # The one check; past here the request is trusted.
            req = dataclasses.replace(req, model=self.executor.check_model(req.model))
            self._enqueue(Job(envelope, msg.id, op, request=req))
        elif op == "models":
            self._models(envelope, msg)
        else:
            raise P.ProtocolError(
                P.ErrorCode.UNKNOWN_OP, f"unknown op {op!r}; known: {P.REQUEST_OPS}"
            )

    def _hello(self) -> dict[str, Any]:
        info = self.executor.info()
        return {
            "server": daemon_version(),
            "protocol": P.PROTOCOL_VERSION,
            "device": info.get("device", "?"),
            "default_model": info.get("default_model"),
            "models": info.get("models", []),
            "heartbeat_s": self.config.heartbeat_s,
            "limits": {
                "max_side": P.MAX_SIDE,
                "max_pixels": P.MAX_PIXELS,
                "max_frame_bytes": P.MAX_FRAME_BYTES,
                "max_points": P.MAX_POINTS,
                "max_queue": self.queue.max_queue,
                "params": {
                    s.name: {
                        "default": s.default,
                        "min": s.lo,
                        "max": s.hi,
                        "choices": list(s.choices),
                    }
                    for s in P.PARAMS
                },
            },
        }

    def _status(self) -> dict[str, Any]:
        running = self.queue.running
        current = None
        if running is not None:
            ev = running.progress
            current = {
                "op": running.op,
                "phase": ev.phase if ev else "",
                "step": ev.step if ev else 0,
                "total": ev.total if ev else 0,
            }
        return {
            "device": self.executor.info().get("device", "?"),
            "running": current,
            "waiting": len(self.queue.waiting()),
            "max_queue": self.queue.max_queue,
            "jobs_done": self.queue.done,
            "clients": len(self._by_client),
            "uptime_s": round(time.monotonic() - self._started, 3),
        }

    def _models(self, envelope: list[bytes], msg: P.Message) -> None:
        action = msg.header.get("action", "list")
        if action == "list":
            self._send(
                envelope,
                P.encode("models", msg.id, {"models": self.executor.info().get("models", [])}),
            )
        elif action == "download":
            name = P.check_name(msg.header.get("name"))
            known = {m.get("name") for m in self.executor.info().get("models", [])}
            if name not in known:
                raise P.ProtocolError(
                    P.ErrorCode.UNKNOWN_MODEL, f"no model named {name!r} in the registry"
                )
            self._enqueue(Job(envelope, msg.id, "models", args={"name": name}))
        else:
            raise P.ProtocolError(
                P.ErrorCode.BAD_REQUEST, f"models action must be list or download, got {action!r}"
            )

    def _enqueue(self, job: Job) -> None:
        if job.id in self._by_client.get(job.client, {}):
            raise P.ProtocolError(
                P.ErrorCode.BAD_REQUEST, f"a job with id {job.id!r} is already open"
            )
        position = self.queue.put(job)
        self._by_client.setdefault(job.client, {})[job.id] = job
        self._jobs[job.key] = job
        self._last_seen[job.client] = time.monotonic()
        job.sent_position = position
        self._send(job.envelope, P.encode("queued", job.id, {"position": position}), final=False)
        log.info("job %s (%s) queued at %d", job.id, job.op, position)

    def _cancel(self, envelope: list[bytes], msg: P.Message) -> None:
        target = msg.header.get("job")
        job = self._by_client.get(envelope[0], {}).get(target) if isinstance(target, str) else None
        if job is not None:
            if self.queue.remove(job):
                self._forget(job)
                self._send(
                    job.envelope,
                    P.error_frames(
                        job.id, P.ErrorCode.CANCELLED, "cancelled while waiting in the queue"
                    ),
                )
                self._update_positions()
            else:
                job.cancelled.set()
            log.info("job %s cancelled by its client", job.id)
        self._send(envelope, P.encode("cancel", msg.id, {"job": target, "found": job is not None}))

    # ---- from the worker ----------------------------------------------------------------------
    def _on_worker(self, parts: list[zmq.Frame]) -> None:
        """Worker events arrive as zmq.Frames and are forwarded without copying the patch."""
        kind, key, frames = parts[0].bytes, parts[1].bytes, parts[2:]
        job = self._jobs.get(key)
        if kind == START:
            self._update_positions()
            return
        if job is None:
            return
        if kind == MSG:
            if not job.cancelled.is_set():
                self._send(job.envelope, frames, final=False)
        elif kind == DONE:
            self._forget(job)
            if not job.abandoned:
                self._send(job.envelope, frames)
            log.info("job %s finished: %s", job.id, _op_of(frames[0].bytes))

    def _forget(self, job: Job) -> None:
        self._jobs.pop(job.key, None)
        open_jobs = self._by_client.get(job.client)
        if open_jobs is not None:
            open_jobs.pop(job.id, None)
            if not open_jobs:
                del self._by_client[job.client]
                self._last_seen.pop(job.client, None)

    def _update_positions(self) -> None:
        for position, job in enumerate(self.queue.waiting(), 1):
            if job.sent_position != position:
                job.sent_position = position
                self._send(
                    job.envelope, P.encode("queued", job.id, {"position": position}), final=False
                )

    # ---- liveness -----------------------------------------------------------------------------
    def _client_gone(self, client: bytes, why: str) -> None:
        open_jobs = self._by_client.pop(client, {})
        self._last_seen.pop(client, None)
        for job in open_jobs.values():
            job.abandoned = True
            job.cancelled.set()
            if self.queue.remove(job):
                self._jobs.pop(job.key, None)
        if open_jobs:
            log.info("client %s %s: cancelled %d job(s)", client.hex(), why, len(open_jobs))
            self._update_positions()

    def _probe_clients(self) -> None:
        beat = P.encode("heartbeat", "daemon")
        for client in list(self._by_client):
            self._send([client], beat, final=False)

    def _heartbeat(self, now: float) -> None:
        for client, seen in list(self._last_seen.items()):
            if now - seen > self.config.silence_s:
                self._client_gone(client, f"silent for {now - seen:.1f} s")
        self._probe_clients()


def _op_of(header: bytes) -> str:
    """`result`, or the error code, of an encoded final reply (for the log)."""
    try:
        fields = json.loads(header)
    except ValueError:
        return "?"
    return str(fields.get("code") or fields.get("op"))
