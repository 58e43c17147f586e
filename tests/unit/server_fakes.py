"""A small executor for service tests that need no model: it "drags" by inverting the colour
of the pixels, one step at a time, and honours cancel like the real pipeline."""

from __future__ import annotations

import threading
import time
from typing import Any

from gimp_draggan_plugin import protocol as P


class FakeExecutor:
    def __init__(
        self,
        step_s: float = 0.0,
        models: tuple[str, ...] = ("tiny",),
        cached: tuple[str, ...] = ("tiny",),
        name: str = "fake",
    ) -> None:
        self.name = name
        self.step_s = step_s
        self.models = models
        self.cached = cached
        self.runs = 0
        self.recovered = 0
        self.running = threading.Event()  # Set while a job runs (tests wait on it).
        self.fail_next: Exception | None = None
        self.short_by: float = 0.0  # > 0: photo drags end this far from their targets.

    def info(self) -> dict[str, Any]:
        return {
            "device": self.name,
            "default_model": self.models[0],
            "models": [{"name": m, "cached": m in self.cached} for m in self.models],
        }

    def check_model(self, name: str | None) -> str:
        name = name or self.models[0]
        if name not in self.models:
            raise P.ProtocolError(P.ErrorCode.UNKNOWN_MODEL, f"no model named {name!r}")
        if name not in self.cached:
            raise P.ProtocolError(P.ErrorCode.MODEL_NOT_CACHED, f"model {name!r} is not downloaded")
        return name

    def run(self, request: P.JobRequest, on_progress: Any, should_stop: Any) -> P.JobResult:
        self.runs += 1
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        self.running.set()
        try:
            steps = request.params.steps
            points = [h for h, _ in request.pairs]
            for step in range(1, steps + 1):
                if should_stop():
                    break
                time.sleep(self.step_s)
                on_progress(P.ProgressEvent("drag", step, steps, points, [1.0] * len(points)))
        finally:
            self.running.clear()
        if request.seed is not None:
            return P.JobResult(
                session=f"seed-{request.seed}",
                width=2,
                height=1,
                patch=bytes([request.seed % 256] * 8),
                points=points,
                distances=[0.0] * len(points),
                steps=steps,
            )
        assert request.image is not None and request.pixels is not None
        spec = request.image
        patch = bytes(255 - b for b in request.pixels) if request.op == "drag" else b""
        size = (spec.width, spec.height) if patch else (0, 0)
        return P.JobResult(
            session=f"{self.name}-{len(request.pixels)}",
            x=0,
            y=0,
            width=size[0],
            height=size[1],
            depth=spec.depth,
            patch=patch,
            points=points,
            distances=[self.short_by] * len(points),
            steps=steps,
            timings={"drag": 0.001},
            converged=self.short_by == 0.0,
            worse=[0] if self.short_by > 0 else [],
        )

    def download(self, name: str, on_progress: Any, should_stop: Any) -> None:
        on_progress(P.ProgressEvent("download", 1, 1))
        self.cached = (*self.cached, name)

    def recover(self) -> None:
        self.recovered += 1

    def warm(self) -> None:
        """Nothing to load."""
