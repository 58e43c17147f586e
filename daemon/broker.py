"""Load-balancing broker: many daemons (one GPU each) behind one address.

Clients connect to the front ROUTER exactly as to a daemon; daemons started with
`serve --broker BACK` connect a DEALER to the back ROUTER and announce themselves (`ready`,
then a heartbeat a second). A job goes to the daemon that holds its session (the tuned
generator lives there), else to the daemon with the fewest open requests. The broker answers
heartbeats itself, notices vanished clients as the daemon does (ROUTER_MANDATORY probes after a
disconnect, silence) and tells the daemons holding their jobs (`gone`); a daemon that falls
silent has its open requests answered with `worker_lost`.

Wire between broker and daemon: [client id, header, blobs...] both ways; control messages
(ready, heartbeat, gone) use an empty client id, except `gone`, which names the client.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from gimp_draggan_plugin import protocol as P

from .keys import serve_curve
from .logs import RefusalLog
from .service_thread import ServiceThread

log = logging.getLogger("gimp_draggan.broker")

MAX_SESSIONS = 10000     # Remembered session -> daemon routes (LRU).
PROBE_BURST_S = 0.5
PROBE_EVERY_S = 0.05


@dataclass
class WorkerState:
    id: bytes
    last_seen: float
    open: set[tuple[bytes, str]] = field(default_factory=set)   # (client, request id)


@dataclass(frozen=True)
class BrokerConfig:
    front: str
    back: str
    keys: Path | None = None            # CURVE on both sockets (required off loopback).
    secret: str | None = None           # Owner's loopback secret clients must send (no CURVE).
    heartbeat_s: float = P.HEARTBEAT_INTERVAL_S
    silence_s: float = P.HEARTBEAT_TIMEOUT_S


class Broker(ServiceThread):
    kind = "broker"

    def __init__(self, config: BrokerConfig, ctx: zmq.Context | None = None) -> None:
        super().__init__()
        self.config = config
        self.ctx = ctx or zmq.Context.instance()
        self.front_address = ""
        self.back_address = ""
        self.workers: dict[bytes, WorkerState] = {}
        self.routes: dict[tuple[bytes, str], bytes] = {}          # open request -> worker
        self.sessions: OrderedDict[str, bytes] = OrderedDict()   # session -> worker
        self._client_seen: dict[bytes, float] = {}
        self._probe_until = 0.0
        self._auth: Any = None
        self.refusals = RefusalLog(log)

    # ---- life cycle ---------------------------------------------------------------------------
    def start(self) -> tuple[str, str]:
        self._start_thread()
        return self.front_address, self.back_address

    def serve_forever(self) -> None:
        front, back, monitor = self._open_or_report(self._open)
        self._ready.set()
        try:
            self._loop(front, back, monitor)
        finally:
            for sock in (front, back, monitor):
                sock.close(linger=0)
            if self._auth is not None:
                self._auth.stop()

    def _open(self) -> tuple[zmq.Socket, zmq.Socket, zmq.Socket]:
        from .server import ServerError

        cfg = self.config
        addresses = [P.check_address(cfg.front), P.check_address(cfg.back)]
        if cfg.keys is None and not all(P.is_loopback(a) for a in addresses):
            raise ServerError(
                "refusing to listen on a non-loopback address without encryption: run "
                "`gimp-draggan keys`, then pass --keys DIR to the broker and its daemons"
            )
        socks: list[zmq.Socket] = []
        for address in addresses:
            sock = self.ctx.socket(zmq.ROUTER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sock.setsockopt(zmq.MAXMSGSIZE, P.MAX_MESSAGE_BYTES)
            sock.setsockopt(zmq.SNDHWM, 10000)
            if cfg.keys is not None:
                self._auth = serve_curve(self.ctx, sock, cfg.keys, self._auth)
            try:
                sock.bind(address)
            except zmq.ZMQError as exc:
                for s in [*socks, sock]:
                    s.close(linger=0)
                raise ServerError(f"cannot listen on {address}: {exc.strerror}") from None
            socks.append(sock)
        front, back = socks
        self.front_address = front.getsockopt_string(zmq.LAST_ENDPOINT)
        self.back_address = back.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("broker: clients on %s, daemons on %s", self.front_address, self.back_address)
        return front, back, front.get_monitor_socket(zmq.EVENT_DISCONNECTED)

    # ---- loop ---------------------------------------------------------------------------------
    def _loop(self, front: zmq.Socket, back: zmq.Socket, monitor: zmq.Socket) -> None:
        self._front, self._back = front, back
        poller = zmq.Poller()
        for sock in (front, back, monitor):
            poller.register(sock, zmq.POLLIN)
        next_beat = time.monotonic() + self.config.heartbeat_s
        while not self._stop.is_set():
            try:
                probing = time.monotonic() < self._probe_until
                ready = dict(poller.poll(int(1000 * (PROBE_EVERY_S if probing else 0.2))))
                if back in ready:
                    self._drain(back, self._on_back)
                if front in ready:
                    self._drain(front, self._on_front)
                if monitor in ready:
                    self._drain(monitor, lambda _f: None)
                    self._probe_until = time.monotonic() + PROBE_BURST_S
                now = time.monotonic()
                if probing:
                    self._probe_clients()
                if now >= next_beat:
                    next_beat = now + self.config.heartbeat_s
                    self._check_liveness(now)
                    self.refusals.flush()
            except Exception:  # A bug must not take the broker down; it is logged.
                log.exception("error in the broker's loop; serving on")

    @staticmethod
    def _drain(sock: zmq.Socket, handle: Any, limit: int = 256) -> None:
        """Messages as zmq.Frames: pixels pass through the broker without being copied."""
        for _ in range(limit):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            handle(frames)

    def _to_client(self, client: bytes, frames: list[bytes]) -> None:
        big = any(len(f) > 65536 for f in frames)
        try:
            self._front.send_multipart([client, *frames], zmq.NOBLOCK, copy=not big)
        except zmq.Again:
            log.warning("client %s is not reading; dropped a message", client.hex())
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self._client_gone(client, "unreachable")

    def _to_worker(self, worker: bytes, client: bytes, frames: list[bytes]) -> bool:
        big = any(len(f) > 65536 for f in frames)
        try:
            self._back.send_multipart([worker, client, *frames], zmq.NOBLOCK, copy=not big)
        except zmq.ZMQError as exc:
            if exc.errno not in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                raise
            self._worker_lost(worker, "unreachable")
            return False
        return True

    # ---- clients ------------------------------------------------------------------------------
    def _on_front(self, parts: list[Any]) -> None:
        if len(parts) < 2:
            return
        client, frames = parts[0].bytes, parts[1:]
        if client in self._client_seen:
            self._client_seen[client] = time.monotonic()
        try:
            msg = P.decode(frames)
        except P.ProtocolError as exc:
            self._to_client(client, P.error_frames(P.peek_id(frames) or "-", exc.code,
                                                   exc.message))
            return
        if not P.authorized(msg.header, self.config.secret):
            self.refusals.refused("not_your_daemon", client.hex(),
                                  f"the {msg.op} request carried no or a wrong secret")
            self._to_client(client, P.error_frames(msg.id, "not_your_daemon", "this broker at "
                                                   f"{self.front_address} belongs to another "
                                                   "user"))
            return
        if msg.op == "heartbeat":
            self._to_client(client, P.encode("heartbeat", msg.id))
            return
        if msg.op == "cancel":
            target = msg.header.get("job")
            worker = self.routes.get((client, target)) if isinstance(target, str) else None
            if worker is None:
                self._to_client(client, P.encode("cancel", msg.id, {"job": target,
                                                                    "found": False}))
                return
        else:
            worker = self._choose(msg)
        if worker is None:
            self._to_client(client, P.error_frames(msg.id, "no_worker", "no daemon is "
                                                   "connected to this broker"))
            return
        key = (client, msg.id)
        if key in self.routes:
            self._to_client(client, P.error_frames(msg.id, "bad_request", f"a request with id "
                                                   f"{msg.id!r} is already open"))
            return
        if self._to_worker(worker, client, frames):
            self.routes[key] = worker
            self.workers[worker].open.add(key)
            self._client_seen[client] = time.monotonic()

    def _choose(self, msg: P.Message) -> bytes | None:
        """The daemon holding the request's session, else the least busy one."""
        session = msg.header.get("session")
        if isinstance(session, str):
            worker = self.sessions.get(session)
            if worker in self.workers:
                return worker
        if not self.workers:
            return None
        return min(self.workers.values(), key=lambda w: (len(w.open), w.last_seen)).id

    def _client_gone(self, client: bytes, why: str) -> None:
        self._client_seen.pop(client, None)
        keys = [k for k in self.routes if k[0] == client]
        holders = {self.routes.pop(k) for k in keys}
        for k in keys:
            for w in self.workers.values():
                w.open.discard(k)
        for worker in holders:
            if worker in self.workers:
                self._to_worker(worker, client, P.encode("gone", "broker"))
        if keys:
            log.info("client %s %s: %d open request(s) dropped", client.hex(), why, len(keys))

    def _probe_clients(self) -> None:
        beat = P.encode("heartbeat", "broker")
        for client in {k[0] for k in self.routes}:
            self._to_client(client, beat)

    def _check_liveness(self, now: float) -> None:
        for worker in [w.id for w in self.workers.values()
                       if now - w.last_seen > self.config.silence_s]:
            self._worker_lost(worker, "silent")
        for client, seen in list(self._client_seen.items()):
            if now - seen > self.config.silence_s:
                self._client_gone(client, "silent")
        self._probe_clients()

    # ---- daemons ------------------------------------------------------------------------------
    def _on_back(self, parts: list[Any]) -> None:
        if len(parts) < 3:
            return
        worker, client, frames = parts[0].bytes, parts[1].bytes, parts[2:]
        state = self.workers.get(worker)
        if state is None:
            state = self.workers[worker] = WorkerState(worker, time.monotonic())
            log.info("daemon %s joined (%d connected)", worker.hex(), len(self.workers))
        state.last_seen = time.monotonic()
        if client == b"":
            return  # ready / heartbeat: being alive is all it says.
        try:
            msg = P.decode(frames)
        except P.ProtocolError as exc:
            log.warning("daemon %s sent a bad message: %s", worker.hex(), exc.message)
            return
        if msg.op in P.FINAL_OPS:
            key = (client, msg.id)
            self.routes.pop(key, None)
            state.open.discard(key)
            session = msg.header.get("session")
            if msg.op == "result" and isinstance(session, str):
                self.sessions[session] = worker
                self.sessions.move_to_end(session)
                while len(self.sessions) > MAX_SESSIONS:
                    self.sessions.popitem(last=False)
        self._to_client(client, frames)

    def _worker_lost(self, worker: bytes, why: str) -> None:
        state = self.workers.pop(worker, None)
        if state is None:
            return
        for client, msg_id in state.open:
            self.routes.pop((client, msg_id), None)
            self._to_client(client, P.error_frames(msg_id, "worker_lost", f"the daemon running "
                                                   f"this request was lost ({why})"))
        for session in [s for s, w in self.sessions.items() if w == worker]:
            del self.sessions[session]
        log.warning("daemon %s %s: %d open request(s) failed", worker.hex(), why,
                    len(state.open))
