"""Which handle -> target pairs share a crop.

Pairs far apart (two faces of a group photo) are edited one after another, each in its own crop,
so the model sees each at its best scale instead of one crop around both. A group's crop must
hold its points and, with a selection, the selected part(s) its points lie on (a part = a
connected region of the selection). Pairs framed on the same face share one crop (one drag); two
different faces stay apart even when their FFHQ squares overlap, as neighbours in a group photo
do (the pipeline then edits the second on the layer the first edit left). Other groups whose
crops would overlap are merged into one (one crop, one drag).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gimp_draggan.edit.align import Framing
from gimp_draggan.edit.geometry import CropBox, Rect, box_iou, point_pixel, points_rect
from gimp_draggan.edit.types import Point

_MAX_GRID = 512  # Selection parts are found on a grid at most this many cells a side.
_SAME_FACE_IOU = 0.5  # Face boxes overlapping this much (intersection / union) are one face.


@dataclass(frozen=True)
class Group:
    pairs: tuple[int, ...]  # Indices into the request's pairs, ascending.
    needed: Rect  # What the crop must hold.
    box: CropBox


def selection_parts(selection: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the connected parts of ``selection > 0`` (4-neighbours) on a grid of cells
    ``cell`` pixels wide (a cell is on if any of its pixels is selected). Returns the labels
    ``[gh, gw]`` (0 = unselected, parts 1, 2, ... numbered in row-major order of their first
    cell) and ``cell``.

    Works on horizontal runs of cells rather than cells (a cell-by-cell flood fill in Python
    took 50 ms of every repeat drag on a 320 px layer): runs of one row are found with numpy,
    runs of neighbouring rows that overlap are joined (union-find), and each run is painted."""
    h, w = selection.shape
    cell = max(1, math.ceil(max(h, w) / _MAX_GRID))
    gh, gw = -(-h // cell), -(-w // cell)
    padded = np.pad(selection > 0, [(0, gh * cell - h), (0, gw * cell - w)])
    on = np.asarray(padded.reshape(gh, cell, gw, cell).any(axis=(1, 3)))
    rows, x0, x1 = _runs(on)
    parent = list(range(len(rows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_start = np.searchsorted(rows, np.arange(gh + 1))
    for r in range(gh - 1):
        a, a_end, b, b_end = row_start[r], row_start[r + 1], row_start[r + 1], row_start[r + 2]
        while a < a_end and b < b_end:  # Runs of rows r and r + 1 in order: join overlaps.
            if x0[a] < x1[b] and x0[b] < x1[a]:
                ra, rb = root(a), root(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
            if x1[a] <= x1[b]:
                a += 1
            else:
                b += 1
    labels = np.zeros((gh, gw), np.int32)
    number: dict[int, int] = {}
    for i in range(len(rows)):
        label = number.setdefault(root(i), len(number) + 1)
        labels[rows[i], x0[i] : x1[i]] = label
    return labels, cell


def _runs(on: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The horizontal runs of ``on`` in row-major order: row, first column, end column."""
    edges = np.diff(np.pad(on, [(0, 0), (1, 1)]).astype(np.int8), axis=1)
    start_rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    return start_rows, starts, ends


def _part_rect(labels: np.ndarray, cell: int, label: int, width: int, height: int) -> Rect:
    ys, xs = np.nonzero(labels == label)
    return Rect(
        int(xs.min()) * cell,
        int(ys.min()) * cell,
        min(width, (int(xs.max()) + 1) * cell),
        min(height, (int(ys.max()) + 1) * cell),
    )


def plan_groups(
    handles: Sequence[Point],
    targets: Sequence[Point],
    selection: np.ndarray | None,
    layer_size: tuple[int, int],
    frame: Callable[[Rect], Framing],
) -> list[Group]:
    """Split the pairs into groups (see the module text). ``frame`` turns what a crop must hold
    into its framing (the pipeline's aligner)."""
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
        framings = [frame(need) for _, need in needs]
        for a in range(len(needs)):
            for b in range(a + 1, len(needs)):
                if _share_crop(framings[a], framings[b]):
                    needs[a] = (needs[a][0] | needs[b][0], needs[a][1].union(needs[b][1]))
                    del needs[b]
                    merged = True
                    break
            if merged:
                break
    groups = [Group(tuple(sorted(idx)), need, frame(need).box) for idx, need in needs]
    return sorted(groups, key=lambda g: g.pairs[0])


def _share_crop(a: Framing, b: Framing) -> bool:
    """Two faces are edited apart, the same face together; other crops merge if they overlap."""
    if a.face is not None and b.face is not None:
        return box_iou(a.face.box, b.face.box) >= _SAME_FACE_IOU
    return not a.box.rect.intersect(b.box.rect).empty
