"""`serve --cluster` on this machine: does a second actor double the work done, and does a repeat
drag skip the inversion through the cluster?

- jobs_per_s_1 / jobs_per_s_2: photo drags on independent sessions (each inverts anew: the demo
  photo, brightened by one level per job so no two share a session) from --jobs concurrent
  clients, through the real daemon (ZeroMQ front, dispatcher, Ray actors of --threads torch
  threads each) with 1, then 2 CPU actors; `speedup` = their ratio (goal >= 1.6 with 1 thread
  per actor on 2 cores).
- first_s / repeat_s: the same drag twice on one photo (the second names the first's session,
  lands on the same actor and does not invert); `repeat_speedup` = first / repeat (goal >= 10);
  `*_timings` are the pipeline's own phases, `repeat_overhead_s` what the round trip through
  client, daemon, dispatcher and actor adds to the repeat's `total`; `first_bytes` /
  `repeat_bytes` the layer bytes (pixels, mask) the head sent to actors for each (the repeat's
  actor holds the layer: 0).

The embedded 64 px model and the demo scene (photo, two pairs, selection), --steps drag steps.

    python tests/bench/bench_cluster.py [--jobs 4] [--steps 10] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

import numpy as np

from gimp_draggan.headless.demo import SCENE, load_sample, selection_mask
from gimp_draggan.service import cluster
from gimp_draggan.service.executor import PipelineExecutor
from gimp_draggan.service.server import Server, ServerConfig
from gimp_draggan_plugin import protocol as P
from gimp_draggan_plugin.client import Client
from gimp_draggan_plugin.protocol import JobRequest, Params

MODEL = "embedded"


def drag(address: str, photo: np.ndarray, steps: int, session: str | None = None) -> P.JobResult:
    h, w = photo.shape[:2]
    with Client(address, timeout_s=600) as client:
        return client.drag(
            JobRequest.photo(
                pairs=[(a, b) for a, b in SCENE.pairs],
                pixels=photo.tobytes(),
                width=w,
                height=h,
                mask=selection_mask(w, h, SCENE.ellipse),
                model=MODEL,
                params=Params(steps=steps),
                session=session,
            )
        )


def daemon(actors: int, threads: int) -> tuple[Server, cluster.ActorPool]:
    pool = cluster.start_actors(
        cluster.ClusterConfig("local", actors, threads, "cpu"), MODEL, {}, None
    )
    executor = PipelineExecutor(pool.description, MODEL)
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*"), executor, runner=pool.dispatcher)
    server.start()
    return server, pool


def jobs_per_s(address: str, photos: list[np.ndarray], steps: int) -> float:
    """All photos' drags at once, one client each; jobs per second until the last is done."""
    errors: list[BaseException] = []

    def one(photo: np.ndarray) -> None:
        try:
            drag(address, photo, steps)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(p,)) for p in photos]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    if errors:
        raise errors[0]
    return len(photos) / took


def stop(server: Server, pool: cluster.ActorPool) -> None:
    import ray

    server.stop()
    for slot in pool.slots:
        ray.kill(slot.handle)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=4, help="independent sessions per run")
    ap.add_argument("--steps", type=int, default=10, help="drag steps per job")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per actor")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    base = np.asarray(load_sample())
    # Brightened by 1..N levels: the same scene, a new session each (the content key differs).
    photos = [
        np.clip(base.astype(np.int16) + np.array([i, i, i, 0]), 0, 255).astype(np.uint8)
        for i in range(1, 2 * args.jobs + 3)
    ]
    cluster.join("local", num_cpus=2 * args.threads, log_to_driver=False)
    out: dict[str, Any] = {"jobs": args.jobs, "steps": args.steps, "threads": args.threads}
    try:
        for actors in (1, 2):
            server, pool = daemon(actors, args.threads)
            try:
                drag(server.address, photos[-actors], args.steps)  # Warm-up, one per actor count.
                batch = photos[(actors - 1) * args.jobs : actors * args.jobs]
                out[f"jobs_per_s_{actors}"] = round(
                    jobs_per_s(server.address, batch, args.steps), 3
                )
                if actors == 2:
                    sent = sum(s.sent_bytes for s in pool.slots)
                    start = time.perf_counter()
                    first = drag(server.address, base, args.steps)
                    out["first_s"] = round(time.perf_counter() - start, 3)
                    out["first_bytes"] = sum(s.sent_bytes for s in pool.slots) - sent
                    sent = sum(s.sent_bytes for s in pool.slots)
                    start = time.perf_counter()
                    again = drag(server.address, base, args.steps, session=first.session)
                    out["repeat_s"] = round(time.perf_counter() - start, 3)
                    out["repeat_bytes"] = sum(s.sent_bytes for s in pool.slots) - sent
                    assert "invert" not in again.timings, "the repeat inverted again"
                    out["first_timings"] = {k: round(v, 3) for k, v in first.timings.items()}
                    out["repeat_timings"] = {k: round(v, 3) for k, v in again.timings.items()}
                    assert pool.where(first.session) is not None
            finally:
                stop(server, pool)
    finally:
        cluster.leave()
    out["speedup"] = round(out["jobs_per_s_2"] / out["jobs_per_s_1"], 2)
    out["repeat_speedup"] = round(out["first_s"] / out["repeat_s"], 1)
    out["repeat_overhead_s"] = round(out["repeat_s"] - out["repeat_timings"]["total"], 3)
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:>16}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
