"""How many CPU threads torch may use: the cores actually free, not all of them.

PyTorch's CPU kernels (OpenMP) run one thread per core and wait for each other at every op. When
another program keeps a core busy, the thread scheduled beside it stalls the rest: measured on a
2-core machine with one busy process, an inversion took 27 s with 2 threads and 5.6 s with 1
(docs/PERFORMANCE.md). So before each job the daemon (and the in-process CLI before its work)
samples how busy the machine is and uses the free cores only; ``--threads N`` or
``$GIMP_DRAGGAN_THREADS`` fixes the count instead.
"""

from __future__ import annotations

import os
import time

THREADS_ENV = "GIMP_DRAGGAN_THREADS"
SAMPLE_S = 0.1  # How long the machine's idle time is sampled.
REUSE_S = 5.0  # A sample this recent is reused (repeat drags come seconds apart).

_last: tuple[float, int] | None = None  # (when, free cores) of the latest sample.


def usable_cores() -> int:
    """Cores this process may run on (its affinity where the OS says, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _cpu_times() -> tuple[int, int] | None:
    """(total, idle) jiffies of all CPUs from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields), idle


def free_cores(sample_s: float = SAMPLE_S) -> int:
    """Cores no other program is using now: the idle share of all CPUs over ``sample_s`` (this
    process sleeps meanwhile) on Linux, else the cores minus the 1-minute load average; at
    least 1, at most `usable_cores`."""
    cores = usable_cores()
    before = _cpu_times()
    if before is not None:
        time.sleep(sample_s)
        after = _cpu_times()
        if after is not None and after[0] > before[0]:
            idle = (after[1] - before[1]) / (after[0] - before[0])
            total = os.cpu_count() or cores
            busy = round((1.0 - idle) * total - 0.25)  # A little background is not a core.
            return max(1, min(cores, total - max(0, busy)))
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores
    return max(1, min(cores, cores - round(load)))


def parse_threads(value: str | int | None) -> int | None:
    """A thread count from ``--threads`` / the environment; None = choose; ValueError naming it."""
    if value is None or value == "":
        return None
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"threads must be a whole number >= 1, got {value!r}") from None
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    return n


def choose(requested: int | None = None) -> int:
    """``requested``, else ``$GIMP_DRAGGAN_THREADS``, else `free_cores` (sampled at most every
    `REUSE_S` seconds: the sample costs `SAMPLE_S` of every job's time)."""
    global _last
    if requested is not None:
        return requested
    fixed = parse_threads(os.environ.get(THREADS_ENV))
    if fixed is not None:
        return fixed
    now = time.monotonic()
    if _last is None or now - _last[0] > REUSE_S:
        _last = (now, free_cores())
    return _last[1]


def apply(requested: int | None = None) -> int:
    """Set torch's intra-op thread count for the work about to start; returns it."""
    import torch

    n = choose(requested)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
