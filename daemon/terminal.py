"""What the command line writes while it waits: the progress bar and the drag's step lines.

One look for `models download`, `demo` and `drag IN.png` (in-process or with --daemon). Lines go
to a stream given by the caller; nothing here reads the terminal beyond asking whether it is one.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import TextIO

from gimp_draggan_plugin import protocol as P
from gimp_draggan_plugin.texts import StepClock, time_left

PHASE_LABELS = {"invert": "inverting the photo", "drag": "dragging", "download": "downloading"}


class ProgressBar:
    """One line per phase (stderr unless told): redrawn in place on a terminal, at most every
    `interval` s; else a line per quarter and the phase's last, so a log shows where it ended.

    `count` writes the step and total (e.g. as bytes); a total of None shows the step alone."""

    def __init__(
        self,
        stream: TextIO | None = None,
        width: int = 30,
        interval: float = 0.0,
        count: Callable[[float], str] = str,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.interval = interval
        self.count = count
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.phase = ""
        self.last_quarter = -1
        self.drawn = -float("inf")  # When the terminal line was last redrawn (monotonic s).
        self.shown = 0  # Length of the line on the terminal (a shorter one pads over it).
        self.pending = ""  # Latest line not yet written.

    def update(self, phase: str, step: float, total: float | None, note: str = "") -> None:
        if phase != self.phase:
            self.end()
            self.phase, self.last_quarter = phase, -1
        frac = min(1.0, step / total) if total else 0.0
        filled = int(frac * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        counts = f"{self.count(step)}/{self.count(total)}" if total else self.count(step)
        label = PHASE_LABELS.get(phase, phase)
        line = f"{label:<20} [{bar}] {counts} {note}".rstrip()
        self.pending = line
        if self.tty:
            now = time.monotonic()
            if now - self.drawn >= self.interval:
                self.drawn = now
                self._redraw(line)
        elif total and int(frac * 4) != self.last_quarter:
            self.last_quarter = int(frac * 4)
            self.stream.write(line + "\n")
            self.pending = ""
        self.stream.flush()

    def _redraw(self, line: str) -> None:
        self.stream.write("\r" + line.ljust(self.shown))
        self.shown = len(line)
        self.pending = ""

    def end(self) -> None:
        """Close the phase's line (its latest state, if that was not written yet)."""
        if self.tty and self.phase:
            if self.pending:
                self._redraw(self.pending)
            self.stream.write("\n")
        elif self.pending:
            self.stream.write(self.pending + "\n")
        self.stream.flush()
        self.phase, self.pending, self.shown, self.drawn = "", "", 0, -float("inf")

    def say(self, text: str) -> None:
        self.end()
        self.stream.write(text + "\n")
        self.stream.flush()


class StepPrinter:
    """The progress lines of `drag IN.png`, in-process or through --daemon: each drag step with
    its handles and distances, every 10th inversion tick, with the time left; keeps the drag
    steps' times for the --json summary."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.last = time.perf_counter()
        self.step_seconds: list[float] = []
        self.clock = StepClock(time.perf_counter)

    def __call__(self, p: P.ProgressEvent) -> None:
        now = time.perf_counter()
        left = self.clock.update(p.phase, p.step, p.total)
        eta = "" if left is None else f"  {time_left(left)}"
        if p.phase == "drag":
            self.step_seconds.append(now - self.last)
            dist = " ".join(f"{d:.1f}" for d in p.distances)
            pts = " ".join(f"({x:.1f},{y:.1f})" for x, y in p.points)
            print(
                f"drag {p.step:4d}/{p.total}  handles {pts}  dist {dist}{eta}",
                file=self.stream,
                flush=True,
            )
        elif p.step == 1 or p.step == p.total or p.step % 10 == 0:
            print(f"{p.phase} {p.step:4d}/{p.total}{eta}", file=self.stream, flush=True)
        self.last = now

    def sec_per_step(self) -> float | None:
        return median_step_seconds(self.step_seconds)


def median_step_seconds(times: list[float]) -> float | None:
    """Median seconds per drag step, the first two (warm-up) excluded when there are more."""
    times = times[2:] if len(times) > 2 else times
    return statistics.median(times) if times else None
