"""The photo edit's request, progress and result: the wire's own types.

One request travels unchanged from the plug-in (or the CLI) through the daemon's queue to
`gimp_draggan.edit.pipeline.run_edit`, which reports `ProgressEvent`s and returns a `JobResult`;
all three are plain data in `gimp_draggan_plugin.protocol` (stdlib only, shared with GIMP's
Python). Coordinates are layer pixels, (x, y) = (column, row).
"""

from __future__ import annotations

from collections.abc import Callable

from gimp_draggan_plugin.protocol import (
    BLENDS,
    DEPTHS,
    PRESETS,
    JobRequest,
    JobResult,
    Pair,
    Params,
    Point,
    ProgressEvent,
)

__all__ = [
    "BLENDS",
    "DEPTHS",
    "PRESETS",
    "JobRequest",
    "JobResult",
    "Pair",
    "Params",
    "Point",
    "ProgressEvent",
    "ProgressFn",
    "StopFn",
]

ProgressFn = Callable[[ProgressEvent], None]
StopFn = Callable[[], bool]
