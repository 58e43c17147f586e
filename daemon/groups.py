"""Which handle -> target pairs share a crop.

Pairs far apart (two faces of a group photo) are edited one after another, each in its own crop,
so the model sees each at its best scale instead of one crop around both. A group's crop must
hold its points and, with a selection, the selected part(s) its points lie on (a part = a
connected region of the selection). Groups whose crops would overlap are merged into one (one
crop, one drag), so no edit ever touches pixels another edit owns. For turned (face-aligned)
crops the test is on their bounding rectangles: it may merge two groups that could have stayed
apart, never the reverse.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gimp_draggan.crop import CropBox, Rect, point_pixel, points_rect
from gimp_draggan.edit import Point

_MAX_GRID = 512  # Selection parts are found on a grid at most this many cells a side.


@dataclass(frozen=True)
class Group:
    pairs: tuple[int, ...]          # Indices into the request's pairs, ascending.
    needed: Rect                    # What the crop must hold.
    box: CropBox


def selection_parts(selection: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the connected parts of ``selection > 0`` (4-neighbours) on a grid of cells
    ``cell`` pixels wide (a cell is on if any of its pixels is selected). Returns the labels
    ``[gh, gw]`` (0 = unselected, parts 1, 2, ...) and ``cell``."""
    h, w = selection.shape
    cell = max(1, math.ceil(max(h, w) / _MAX_GRID))
    gh, gw = -(-h // cell), -(-w // cell)
    padded = np.pad(selection > 0, [(0, gh * cell - h), (0, gw * cell - w)])
    on = np.asarray(padded.reshape(gh, cell, gw, cell).any(axis=(1, 3)))
    labels = np.zeros((gh, gw), np.int32)
    count = 0
    for start in zip(*np.nonzero(on), strict=True):
        if labels[start]:
            continue
        count += 1
        labels[start] = count
        queue = deque([start])
        while queue:
            y, x = queue.popleft()
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < gh and 0 <= nx < gw and on[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = count
                    queue.append((ny, nx))
    return labels, cell


def _part_rect(labels: np.ndarray, cell: int, label: int, width: int, height: int) -> Rect:
    ys, xs = np.nonzero(labels == label)
    return Rect(
        int(xs.min()) * cell, int(ys.min()) * cell,
        min(width, (int(xs.max()) + 1) * cell), min(height, (int(ys.max()) + 1) * cell),
    )


def plan_groups(
    handles: Sequence[Point],
    targets: Sequence[Point],
    selection: np.ndarray | None,
    layer_size: tuple[int, int],
    frame: Callable[[Rect], CropBox],
) -> list[Group]:
    """Split the pairs into groups with crops that do not overlap (see the module text).
    ``frame`` turns what a crop must hold into its box (the pipeline's framing)."""
    if not handles or len(handles) != len(targets):
        raise ValueError("plan_groups needs as many targets as handles, at least one")
    width, height = layer_size
    parts = None if selection is None else selection_parts(selection)
    needs: list[tuple[set[int], Rect]] = []
    for i, (hp, tp) in enumerate(zip(handles, targets, strict=True)):
        need = points_rect([hp, tp], width, height)
        if parts is not None:
            labels, cell = parts
            for p in (hp, tp):
                px, py = point_pixel(p, width, height)
                label = int(labels[py // cell, px // cell])
                if label:
                    need = need.union(_part_rect(labels, cell, label, width, height))
        needs.append(({i}, need))
    merged = True
    while merged:
        merged = False
        boxes = [frame(need) for _, need in needs]
        for a in range(len(needs)):
            for b in range(a + 1, len(needs)):
                if not boxes[a].rect.intersect(boxes[b].rect).empty:
                    needs[a] = (needs[a][0] | needs[b][0], needs[a][1].union(needs[b][1]))
                    del needs[b]
                    merged = True
                    break
            if merged:
                break
    groups = [Group(tuple(sorted(idx)), need, frame(need)) for idx, need in needs]
    return sorted(groups, key=lambda g: g.pairs[0])
