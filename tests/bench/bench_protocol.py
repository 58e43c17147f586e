"""Service overhead: what the daemon's protocol costs on top of the work itself.

- roundtrip_4k_ms: a 4096x4096 RGBA 8-bit layer (64 MiB) sent as a `drag`, validated, handed to
  an executor that returns the whole layer as the patch at once, and received back; median ms
  over --repeats (pyzmq; `roundtrip_4k_zmtp_ms` is the same through the plug-in's stdlib ZMTP
  client).
  Yardsticks timed in the same run: the frame bounced by bare ZeroMQ sockets (`raw_zmq_4k_ms`) and
  one 64 MiB memcpy (`memcpy_64mib_ms`).
- tiny_jobs_per_s: seed-form drags of 1 step on a tiny random generator (32 px), real executor,
  from --clients concurrent clients; `null_jobs_per_s` is the same traffic with an executor that
  does nothing (the protocol's own ceiling).

    python tests/bench/bench_protocol.py [--repeats 5] [--jobs 200] [--clients 4] [--threads 1]
        [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from gimp_draggan.service.executor import PipelineExecutor
from gimp_draggan.service.server import Server, ServerConfig
from gimp_draggan_plugin import protocol as P
from gimp_draggan_plugin.client import Client
from gimp_draggan_plugin.protocol import JobRequest, Params

SIDE = 4096


class EchoExecutor:
    """Returns the request's layer as the patch, no work: only the service is timed."""

    def info(self) -> dict[str, Any]:
        return {
            "device": "none",
            "default_model": "echo",
            "models": [{"name": "echo", "cached": True}],
        }

    def check_model(self, name: str | None) -> str:
        return name or "echo"

    def run(self, request: P.JobRequest, on_progress: Any, should_stop: Any) -> P.JobResult:
        if request.seed is not None or request.image is None or request.pixels is None:
            return P.JobResult(session="echo", steps=0)
        spec = request.image
        return P.JobResult(
            session="echo",
            width=spec.width,
            height=spec.height,
            depth=spec.depth,
            patch=request.pixels,
            steps=0,
        )

    def download(self, name: str, on_progress: Any, should_stop: Any) -> None:
        raise RuntimeError("no downloads here")

    def recover(self) -> None:
        pass

    def warm(self) -> None:
        pass


def memcpy_ms(repeats: int) -> float:
    """One 64 MiB copy on this machine now: the yardstick for the round trip (shared machines
    are busy; compare the ratio)."""
    layer = bytes(SIDE * SIDE * 4)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        bytearray(layer)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def raw_zmq_ms(repeats: int) -> float:
    """The same 64 MiB frame bounced DEALER -> ROUTER -> DEALER over loopback TCP with zero-copy
    sends and receives: what ZeroMQ and the kernel cost before the protocol adds anything."""
    import zmq

    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    layer = bytes(SIDE * SIDE * 4)

    def echo() -> None:
        for _ in range(repeats + 1):
            router.send_multipart(router.recv_multipart(copy=False), copy=False)

    thread = threading.Thread(target=echo)
    thread.start()
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        dealer.send(layer, copy=False)
        dealer.recv(copy=False)
        times.append(time.perf_counter() - start)
    thread.join()
    dealer.close(linger=0)
    router.close(linger=0)
    return 1000 * statistics.median(times[1:])


def roundtrip_ms(address: str, repeats: int, prefer: str) -> float:
    layer = bytes(range(256)) * (SIDE * SIDE * 4 // 256)
    times = []
    with Client(address, prefer=prefer, timeout_s=30) as client:
        for _ in range(repeats + 1):
            start = time.perf_counter()
            r = client.drag(
                JobRequest.photo(pixels=layer, width=SIDE, height=SIDE, pairs=[((1, 1), (9, 9))])
            )
            times.append(time.perf_counter() - start)
            if r.patch != layer:  # Checked outside the timed part.
                raise SystemExit("the echoed layer differs from the one sent")
    return 1000 * statistics.median(times[1:])  # The first warms buffers up.


def jobs_per_s(address: str, jobs: int, clients: int, model: str) -> float:
    per_client = max(1, jobs // clients)
    errors: list[BaseException] = []

    def work(c: int) -> None:
        try:
            with Client(address, timeout_s=30) as client:
                for j in range(per_client):
                    client.drag(
                        JobRequest.seeded(
                            seed=c * 100000 + j,
                            model=model,
                            pairs=[((8, 8), (20, 8))],
                            params=Params(steps=1),
                        )
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"a job failed: {errors[0]}")
    return per_client * clients / (time.perf_counter() - start)


def serve(executor: Any, max_queue: int) -> Server:
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*", max_queue=max_queue), executor)
    server.start()
    return server


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for the tiny jobs (default 1: a 32 px model gains nothing "
        "from more, and on a busy machine extra threads only wait for each other)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
    from service_helpers import save_tiny_model

    copy_ms = memcpy_ms(args.repeats)
    raw_ms = raw_zmq_ms(args.repeats)
    echo = serve(EchoExecutor(), args.clients + 1)
    try:
        rt = roundtrip_ms(echo.address, args.repeats, "pyzmq")
        rt_zmtp = roundtrip_ms(echo.address, args.repeats, "zmtp")
        null_rate = jobs_per_s(echo.address, args.jobs, args.clients, "echo")
    finally:
        echo.stop()
    with tempfile.TemporaryDirectory() as tmp:
        model = save_tiny_model(Path(tmp))
        real = serve(PipelineExecutor("cpu", files={"tiny": model}), args.clients + 1)
        try:
            jobs_per_s(real.address, args.clients * 2, args.clients, "tiny")  # Warm-up.
            tiny_rate = jobs_per_s(real.address, args.jobs, args.clients, "tiny")
        finally:
            real.stop()
    figures = {
        "roundtrip_4k_ms": round(rt, 1),
        "roundtrip_4k_zmtp_ms": round(rt_zmtp, 1),
        "tiny_jobs_per_s": round(tiny_rate, 1),
        "null_jobs_per_s": round(null_rate, 1),
        "raw_zmq_4k_ms": round(raw_ms, 1),
        "memcpy_64mib_ms": round(copy_ms, 1),
        "roundtrip_in_memcpys": round(rt / copy_ms, 1),
        "layer_mib": SIDE * SIDE * 4 / 2**20,
        "clients": args.clients,
        "jobs": args.jobs,
        "torch_threads": args.threads,
    }
    print(
        f"4096x4096 RGBA round trip: {rt:.1f} ms (pyzmq), {rt_zmtp:.1f} ms (stdlib ZMTP); "
        f"bare ZeroMQ echo of the frame: {raw_ms:.1f} ms; one 64 MiB memcpy: {copy_ms:.1f} ms"
    )
    print(f"tiny jobs: {tiny_rate:.1f}/s (real executor, 1 step), {null_rate:.1f}/s (no work)")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
