"""The image selection -> the drag mask of one layer (pure; GIMP-free).

The mask has the layer's size, one byte per pixel, 255 = may move, 0 = keep; the selection's soft
edges pass through as values in between. Parts of the layer outside the canvas are never selected.
"""

from __future__ import annotations

from gimp_draggan_plugin.rect import Rect


class MaskError(ValueError):
    """The selection cannot be used as a mask; the message says what to do."""


def selection_region(bounds: Rect, layer: Rect) -> Rect:
    """The part of the selection's bounding box that lies on the layer (image pixels)."""
    region = bounds.intersect(layer)
    if region.empty:
        raise MaskError(
            "the selection does not touch the selected layer: select the part of the "
            "layer that may move (or Select \u2192 None to let the whole layer move)"
        )
    return region


def place_mask(region_bytes: bytes, region: Rect, layer: Rect) -> bytes:
    """Put the selection values read over `region` into a layer-sized mask, zeros elsewhere."""
    if len(region_bytes) != region.width * region.height:
        raise ValueError(
            f"selection bytes: {len(region_bytes)}, expected {region.width}x{region.height}"
        )
    inside = region.intersect(layer)
    if inside != region:
        raise ValueError(f"region {region} is not inside layer {layer}")
    mask = bytearray(layer.width * layer.height)
    col = region.x0 - layer.x0
    for row in range(region.height):
        start = (region.y0 - layer.y0 + row) * layer.width + col
        mask[start : start + region.width] = region_bytes[
            row * region.width : (row + 1) * region.width
        ]
    if not any(mask):
        raise MaskError(
            "the selection is empty on the selected layer: select the part that may "
            "move (or Select \u2192 None to let the whole layer move)"
        )
    return bytes(mask)


def handles_fixed(mask: bytes, layer_width: int, points: list[tuple[float, float]]) -> list[int]:
    """Indices of handles that sit where the mask forbids any change."""
    fixed = []
    for index, (x, y) in enumerate(points):
        if mask[int(y) * layer_width + int(x)] == 0:
            fixed.append(index)
    return fixed


def crop(mask: bytes, layer_width: int, box: tuple[int, int, int, int]) -> bytes:
    """The part of a layer-sized mask under `box` (x, y, width, height on the layer)."""
    x, y, width, height = box
    return b"".join(
        mask[(y + row) * layer_width + x : (y + row) * layer_width + x + width]
        for row in range(height)
    )


def soft_edges(width: int, height: int) -> bytes:
    """A mask that fades to 0 over the outer eighth of a width x height box: a live preview without
    a selection shows the daemon's feathered edit, not the seam of its resampled square."""
    feather = max(1, min(width, height) // 8)

    def ramp(i: int, n: int) -> float:
        return min(1.0, (min(i, n - 1 - i) + 0.5) / feather)

    cols = [ramp(i, width) for i in range(width)]
    return b"".join(
        bytes(round(255 * min(r, c)) for c in cols)
        for r in (ramp(j, height) for j in range(height))
    )
