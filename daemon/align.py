"""How the crop is framed for a model: the seam where face alignment plugs in.

Face models (FFHQ) were trained on faces placed by landmarks (eyes and mouth at fixed spots); a
landmark-based `Aligner` would return the square those landmarks call for. None ships yet (see
docs/ENGINE.md): every model, and the embedded cartoon-face model in particular, gets
`SquareFraming`, the square around the selection ∪ the points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gimp_draggan.crop import CropBox, Rect, choose_box


class Aligner(Protocol):
    def frame(self, layer: np.ndarray, needed: Rect, resolution: int) -> CropBox:
        """The square of ``layer`` ([H, W, 4]) to show the model; it must hold ``needed``."""
        ...


@dataclass(frozen=True)
class SquareFraming:
    """No alignment: the square around ``needed``, padded by ``margin`` (see `choose_box`)."""

    margin: float = 0.25

    def frame(self, layer: np.ndarray, needed: Rect, resolution: int) -> CropBox:
        h, w = layer.shape[:2]
        return choose_box(needed, w, h, resolution, margin=self.margin)

