"""The photo edit as the pipeline, the daemon's worker and the CLI exchange it.

Plain data only (no torch, no numpy): the server builds an `EditRequest` from wire frames, the CLI
from files; `gimp_draggan.edit.pipeline.run_edit` turns it into an `EditResult`, reporting
`Progress`.
Coordinates are layer pixels, (x, y) = (column, row).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

DEPTHS = {"u8": 1, "u16": 2, "f32": 4}  # bytes per channel of RGBA pixels
PRESETS = ("fast", "quality")
BLENDS = ("photo", "generator")  # Photo-true warp of the layer's pixels | the generator's image.

Point = tuple[float, float]


@dataclass(frozen=True)
class EditParams:
    steps: int = 200  # Max drag steps (the stop rule may end earlier).
    lr: float | None = None  # Adam learning rate on the latent; None = the model's.
    mask_lambda: float = 20.0  # Weight of the fixed-region term (GUI default).
    preset: str = "fast"  # Inversion quality preset: "fast" | "quality".
    preview_every: int = 0  # Send a preview every N drag steps, 0 = never.
    preview_size: int = 256  # Longest side of a preview JPEG.
    blend: str = "photo"  # What fills the edit: one of BLENDS.


@dataclass(frozen=True)
class EditRequest:
    width: int
    height: int
    pixels: bytes  # RGBA, row-major, DEPTHS[depth] bytes per channel.
    depth: str  # "u8" | "u16" | "f32"
    pairs: list[tuple[Point, Point]]  # ((handle_x, handle_y), (target_x, target_y)), layer px.
    model: str  # Registry name (the daemon accepts names only) or a file (CLI).
    mask: bytes | None = None  # width*height u8, 255 = may move; None = all may move.
    params: EditParams = field(default_factory=EditParams)
    session: str | None = None  # Re-use an inverted crop (see gimp_draggan.edit.sessions).


@dataclass(frozen=True)
class Progress:
    phase: str  # "invert" | "drag"
    step: int
    total: int
    points: list[Point] = field(default_factory=list)  # Current handles, layer pixels.
    distances: list[float] = field(default_factory=list)  # Handle-target, layer pixels.
    preview: bytes | None = None  # Small JPEG of the crop, when due.
    crop: tuple[int, int, int, int] | None = None  # Where the preview lies: x, y, w, h (layer px).


@dataclass(frozen=True)
class EditResult:
    patch: bytes  # RGBA, same depth as the request, `width` x `height`.
    x: int  # Patch offset in the layer.
    y: int
    width: int
    height: int
    depth: str
    points: list[Point]  # Where each handle's content lies in the result, layer px.
    distances: list[float]  # Its distance to the target, layer pixels.
    steps: int  # Drag steps run.
    session: str  # Id of the cached inversion (send it back to drag again).
    timings: dict[str, float] = field(default_factory=dict)  # Seconds per phase.
    converged: bool = True  # Every handle reached the stop distance of its target.
    worse: list[int] = field(default_factory=list)  # Pairs that ended farther than they began.


ProgressFn = Callable[[Progress], None]
StopFn = Callable[[], bool]
