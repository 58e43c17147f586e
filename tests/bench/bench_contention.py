"""An edit on a shared machine: all cores' threads vs the free cores only (`gimp_draggan.threads`).

Runs `gimp-draggan drag` on the demo photo (embedded model, in-process) three times and prints one
JSON line: ``idle`` (nothing else running, threads chosen), ``busy_all`` (one busy process on the
machine, torch on every core as before) and ``busy_free`` (the same, threads chosen from the free
cores), each with the edit's seconds (total, invert, drag) and threads used; plus ``slowdown``
= busy_free / idle and ``oversubscribed`` = busy_all / busy_free. The goal: an edit slows at most
in proportion to the cores lost (slowdown <= cores / (cores - 1)).

Run: ``python tests/bench/bench_contention.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

from gimp_draggan import threads

PAIRS = ["109,147:104,140", "149,147:154,140"]


def edit(photo: Path, out: Path, n_threads: int | None) -> dict[str, float]:
    argv = [
        sys.executable,
        "-m",
        "gimp_draggan",
        "drag",
        str(photo),
        "--model",
        "embedded",
        "--device",
        "cpu",
        "-o",
        str(out),
        "--json",
    ]
    for p in PAIRS:
        argv += ["-p", p]
    if n_threads is not None:
        argv += ["--threads", str(n_threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", threads.THREADS_ENV)}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    t = json.loads(done.stdout.strip().splitlines()[-1])["timings"]
    return {k: round(t[k], 2) for k in ("total", "invert", "drag")}


def main() -> int:
    cores = threads.usable_cores()
    data = resources.files("gimp_draggan").joinpath("assets/demo_photo.png").read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        photo, out = Path(tmp, "in.png"), Path(tmp, "out.png")
        photo.write_bytes(data)
        report: dict[str, object] = {"cores": cores}
        report["idle"] = {**edit(photo, out, None), "threads": threads.free_cores()}
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            report["busy_all"] = {**edit(photo, out, cores), "threads": cores}
            report["busy_free"] = {**edit(photo, out, None), "threads": threads.free_cores()}
        finally:
            hog.kill()
            hog.wait()
    idle, all_, free = (report[k] for k in ("idle", "busy_all", "busy_free"))
    assert isinstance(idle, dict) and isinstance(all_, dict) and isinstance(free, dict)
    report["slowdown"] = round(free["total"] / idle["total"], 2)
    report["oversubscribed"] = round(all_["total"] / free["total"], 2)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
