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
With --res N, a random-weight StyleGAN2 generator of N px in the FFHQ configuration DragGAN's
checkpoints use at that size (z = w = 512, 8 mapping layers, channel base 16384 at 256 px, 32768
above), saved to a temporary folder and served as an operator's file (square framing), and the
demo scene scaled by N / 256 so that its square crop (255 px at 1x) is about N px: the figures of
a real N px model, since the inversion's and a drag step's time depend on the architecture, not on
the weights' values (the drag is the same --steps steps). `model` names the model served.

    python tests/bench/bench_cluster.py [--res N] [--jobs 4] [--steps 10] [--threads 1]
        [--preset fast|quality] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gimp_draggan.draggan.checkpoint import save_generator
from gimp_draggan.draggan.networks import Generator, GeneratorConfig
from gimp_draggan.headless.demo import SCENE, load_sample, selection_mask
from gimp_draggan.service import cluster
from gimp_draggan.service.executor import PipelineExecutor
from gimp_draggan.service.server import Server, ServerConfig
from gimp_draggan_plugin import protocol as P
from gimp_draggan_plugin.client import Client
from gimp_draggan_plugin.protocol import PRESETS, JobRequest, Params, Point

MODEL = "embedded"
# The channel base of the official StyleGAN2 configurations at each size (as bench_drag.py).
OFFICIAL_CHANNEL_BASE = {256: 16384, 512: 32768, 1024: 32768}
SCENE_SIDE = 256  # The demo scene's square crop (255 px) shown to a file model of this size.


@dataclass(frozen=True)
class Bench:
    """The model served (its name; the operator's files, if any) and the scene drawn for it."""

    model: str
    files: dict[str, Path]
    photo: np.ndarray  # [H, W, 4] u8
    pairs: tuple[tuple[Point, Point], ...]
    ellipse: tuple[float, float, float, float]


def embedded_bench() -> Bench:
    return Bench(MODEL, {}, np.asarray(load_sample()), SCENE.pairs, SCENE.ellipse)


def random_bench(res: int, folder: Path) -> Bench:
    """A random-weight FFHQ-configured generator of ``res`` px saved in ``folder``, and the demo
    scene scaled by ``res`` / 256 (its square crop then about ``res`` px)."""
    config = GeneratorConfig(img_resolution=res, channel_base=OFFICIAL_CHANNEL_BASE.get(res, 32768))
    torch.manual_seed(0)
    name = f"random-{res}"
    path = save_generator(Generator(config).eval(), folder / f"{name}.safetensors")
    s = res / SCENE_SIDE
    sample = load_sample()
    photo = sample.resize(
        (round(sample.width * s), round(sample.height * s)), Image.Resampling.LANCZOS
    )
    pairs = tuple(((a[0] * s, a[1] * s), (b[0] * s, b[1] * s)) for a, b in SCENE.pairs)
    cx, cy, rx, ry = SCENE.ellipse
    return Bench(name, {name: path}, np.asarray(photo), pairs, (cx * s, cy * s, rx * s, ry * s))


def drag(
    address: str, bench: Bench, photo: np.ndarray, params: Params, session: str | None = None
) -> P.JobResult:
    h, w = photo.shape[:2]
    with Client(address, timeout_s=3600) as client:
        return client.drag(
            JobRequest.photo(
                pairs=list(bench.pairs),
                pixels=photo.tobytes(),
                width=w,
                height=h,
                mask=selection_mask(w, h, bench.ellipse),
                model=bench.model,
                params=params,
                session=session,
            )
        )


def daemon(bench: Bench, actors: int, threads: int) -> tuple[Server, cluster.ActorPool]:
    pool = cluster.start_actors(
        cluster.ClusterConfig("local", actors, threads, "cpu"), bench.model, bench.files, None
    )
    executor = PipelineExecutor(pool.description, bench.model, bench.files)
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*"), executor, runner=pool.dispatcher)
    server.start()
    return server, pool


def jobs_per_s(address: str, bench: Bench, photos: list[np.ndarray], params: Params) -> float:
    """All photos' drags at once, one client each; jobs per second until the last is done."""
    errors: list[BaseException] = []

    def one(photo: np.ndarray) -> None:
        try:
            drag(address, bench, photo, params)
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


def measure(bench: Bench, jobs: int, params: Params, threads: int) -> dict[str, Any]:
    """Both actor counts' jobs per second, then the first and the repeat drag (2 actors)."""
    base = bench.photo
    # Brightened by 1..N levels: the same scene, a new session each (the content key differs).
    photos = [
        np.clip(base.astype(np.int16) + np.array([i, i, i, 0]), 0, 255).astype(np.uint8)
        for i in range(1, 2 * jobs + 3)
    ]
    out: dict[str, Any] = {}
    for actors in (1, 2):
        server, pool = daemon(bench, actors, threads)
        try:
            drag(server.address, bench, photos[-actors], params)  # Warm-up, one per actor count.
            batch = photos[(actors - 1) * jobs : actors * jobs]
            out[f"jobs_per_s_{actors}"] = round(jobs_per_s(server.address, bench, batch, params), 3)
            if actors == 2:
                sent = sum(s.sent_bytes for s in pool.slots)
                start = time.perf_counter()
                first = drag(server.address, bench, base, params)
                out["first_s"] = round(time.perf_counter() - start, 3)
                out["first_bytes"] = sum(s.sent_bytes for s in pool.slots) - sent
                sent = sum(s.sent_bytes for s in pool.slots)
                start = time.perf_counter()
                again = drag(server.address, bench, base, params, session=first.session)
                out["repeat_s"] = round(time.perf_counter() - start, 3)
                out["repeat_bytes"] = sum(s.sent_bytes for s in pool.slots) - sent
                assert "invert" not in again.timings, "the repeat inverted again"
                out["first_timings"] = {k: round(v, 3) for k, v in first.timings.items()}
                out["repeat_timings"] = {k: round(v, 3) for k, v in again.timings.items()}
                assert pool.where(first.session) is not None
        finally:
            stop(server, pool)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", type=int, help="a random-weight N px generator (default: embedded)")
    ap.add_argument("--jobs", type=int, default=4, help="independent sessions per run")
    ap.add_argument("--steps", type=int, default=10, help="drag steps per job")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per actor")
    ap.add_argument("--preset", choices=PRESETS, default="fast", help="inversion preset")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out: dict[str, Any] = {
        "jobs": args.jobs,
        "steps": args.steps,
        "threads": args.threads,
        "preset": args.preset,
    }
    with tempfile.TemporaryDirectory(prefix="bench_cluster-") as folder:
        bench = embedded_bench() if args.res is None else random_bench(args.res, Path(folder))
        out["model"] = bench.model
        cluster.join("local", num_cpus=2 * args.threads, log_to_driver=False)
        try:
            out.update(
                measure(
                    bench, args.jobs, Params(steps=args.steps, preset=args.preset), args.threads
                )
            )
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
