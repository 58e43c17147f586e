"""Cheap reads of big layer windows for the face detector, from averaged copies of the layer.

The detector sees a window at its own small input size (128 px), but `crop.model_view` averages
every layer pixel under the window: on a 6000 x 4000 layer the windows `faces.find_faces` scans
cost over a second, nearly all of it reading. `LayerPyramid` averages the layer by 2, 4, 8, ...
once (each level from the one before, only the levels a window needs) and reads a big window
from the coarsest level that still has two pixels per model pixel. Positions are then exact to
a level pixel, well inside what a detector resolves; the crop the model inverts is still read
from the layer itself.
"""

from __future__ import annotations

import numpy as np

from gimp_draggan.edit.geometry import CropBox
from gimp_draggan.edit.pixels import to_float
from gimp_draggan.edit.sampling import block_mean, flatten, layer_to_model, model_view


class LayerPyramid:
    """Windows of one ``[H, W, 4]`` layer (``depth``'s dtype) as the model would see them."""

    def __init__(self, layer: np.ndarray, depth: str) -> None:
        if layer.ndim != 3 or layer.shape[2] != 4:
            raise ValueError(f"layer must be [H, W, 4], got {list(layer.shape)}")
        self.layer = layer
        self.depth = depth
        self.levels: dict[int, np.ndarray] = {}  # k -> flattened RGB float32, averaged k x k.

    def read(self, box: CropBox) -> np.ndarray:
        """``box`` at ``box.resolution``: float32 ``[R, R, 3]`` in [0, 1] (see `model_view`)."""
        k = 1
        while box.side >= 4 * k * box.resolution:
            k *= 2
        if k == 1:
            return model_view(self.layer, self.depth, box)
        level = self._level(k)
        h, w = level.shape[:2]
        small = CropBox(
            x0=round(box.x0 / k),
            y0=round(box.y0 / k),
            side=max(1, round(box.side / k)),
            layer_width=w,
            layer_height=h,
            resolution=box.resolution,
            angle=box.angle,
        )
        return np.clip(layer_to_model(level, small, lambda a: a), 0.0, 1.0)

    def _level(self, k: int) -> np.ndarray:
        if k not in self.levels:
            if k > 2:
                self.levels[k] = block_mean(self._level(k // 2), 2, lambda a: a)
            elif self.layer.dtype == np.uint8 and bool((self.layer[..., 3] == 255).all()):
                self.levels[k] = _halve_opaque_u8(self.layer)
            else:
                depth = self.depth
                self.levels[k] = block_mean(self.layer, 2, lambda a: flatten(to_float(a, depth)))
        return self.levels[k]


def _halve_opaque_u8(layer: np.ndarray) -> np.ndarray:
    """`block_mean(layer, 2, ...)` of an opaque 8-bit layer's RGB (nothing to flatten), summed in
    integers: a photo's first level without a float copy of the whole layer."""
    h, w = layer.shape[:2]
    he, we = h - h % 2, w - w % 2
    rgb = layer[..., :3]
    total = rgb[0:he:2, 0:we:2].astype(np.uint16)
    for dy, dx in ((1, 0), (0, 1), (1, 1)):
        total += rgb[dy:he:2, dx:we:2]
    out = total.astype(np.float32) * np.float32(1.0 / (4 * 255))
    if w % 2:  # A last partial block repeats its edge pixels: the mean of the ones there.
        col = rgb[0:he:2, -1].astype(np.float32) + rgb[1:he:2, -1]
        out = np.concatenate([out, col[:, None] * np.float32(1.0 / (2 * 255))], axis=1)
    if h % 2:
        row = rgb[-1, 0:we:2].astype(np.float32) + rgb[-1, 1:we:2]
        row *= np.float32(1.0 / (2 * 255))
        if w % 2:
            row = np.concatenate([row, rgb[-1, -1:].astype(np.float32) / 255.0])
        out = np.concatenate([out, row[None]], axis=0)
    return out
