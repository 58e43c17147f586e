"""Paths drawn in GIMP -> handle/target pairs in layer pixels (pure; GIMP-free).

A path holds strokes; each stroke is one drag: its first anchor is the handle (the part of the
picture to move), its last anchor the target (where it should go). GIMP gives a stroke's points as
control/anchor/control triples, 6 doubles per anchor, with the anchor at indices i+2, i+3.
"""

from __future__ import annotations

from dataclasses import dataclass

from gimp_draggan_plugin.protocol import MAX_POINTS, Pair, Point

HOW_TO_DRAW = (
    "Mark the points with the Paths tool (B): click once on the part to move (the handle), then "
    "click where it should go (the target). Each stroke is one handle \u2192 target pair; to add "
    "another pair, Shift+click to start a new stroke in the same path. Then run Filters \u2192 "
    "Distorts \u2192 DragGAN Drag again."
)


class PointsError(ValueError):
    """The path cannot be turned into pairs; the message says what to do."""


@dataclass(frozen=True)
class PathInfo:
    name: str
    selected: bool
    visible: bool
    strokes: list[list[float]]  # One flat coordinate list per stroke (image pixels).


def anchors(coords: list[float]) -> list[Point]:
    """The anchor points of one stroke (image pixels)."""
    if len(coords) % 6:
        raise PointsError(
            f"a stroke has {len(coords)} coordinates, not a multiple of 6 "
            "(control/anchor/control per point); redraw it with the Paths tool"
        )
    return [(float(coords[i + 2]), float(coords[i + 3])) for i in range(0, len(coords), 6)]


def choose_path(paths: list[PathInfo]) -> PathInfo:
    """The selected path, else the most recent visible one (GIMP lists the newest first)."""
    selected = [p for p in paths if p.selected]
    if len(selected) > 1:
        names = ", ".join(repr(p.name) for p in selected)
        raise PointsError(
            f"{len(selected)} paths are selected ({names}); select only the one "
            "with the drag points in the Paths dialog"
        )
    if selected:
        return selected[0]
    visible = [p for p in paths if p.visible]
    if visible:
        return visible[0]
    if paths:
        raise PointsError(
            "the image has paths, but none is selected or visible: select the path "
            "with the drag points in the Paths dialog (or make it visible). " + HOW_TO_DRAW
        )
    raise PointsError("the image has no path with drag points. " + HOW_TO_DRAW)


def pairs_from_path(path: PathInfo) -> list[Pair]:
    """One (handle, target) pair per stroke, image pixels."""
    pairs: list[Pair] = []
    for number, coords in enumerate(path.strokes, start=1):
        points = anchors(coords)
        if len(points) < 2:
            raise PointsError(
                f"stroke {number} of path {path.name!r} has only one point; it "
                "needs a handle and a target. " + HOW_TO_DRAW
            )
        pairs.append((points[0], points[-1]))
    if not pairs:
        raise PointsError(f"path {path.name!r} has no strokes. " + HOW_TO_DRAW)
    if len(pairs) > MAX_POINTS:
        raise PointsError(
            f"path {path.name!r} has {len(pairs)} strokes; at most {MAX_POINTS} "
            "handle → target pairs fit in one drag: delete some strokes"
        )
    return pairs


def to_layer(
    pairs: list[Pair], offset_x: int, offset_y: int, width: int, height: int
) -> list[Pair]:
    """Image pixels -> layer pixels; every point must lie on the layer."""
    if width <= 0 or height <= 0:
        raise ValueError(f"layer size {width}x{height} is empty")
    out: list[Pair] = []
    outside: list[str] = []
    for number, pair in enumerate(pairs, start=1):
        moved = tuple((x - offset_x, y - offset_y) for x, y in pair)
        for role, (x, y), (ix, iy) in zip(("handle", "target"), moved, pair, strict=True):
            if not (0 <= x < width and 0 <= y < height):
                outside.append(f"the {role} of pair {number} at ({ix:g}, {iy:g})")
        out.append((moved[0], moved[1]))
    if outside:
        box = f"x {offset_x}..{offset_x + width - 1}, y {offset_y}..{offset_y + height - 1}"
        raise PointsError(
            f"{'; '.join(outside)} {'lies' if len(outside) == 1 else 'lie'} outside "
            f"the layer ({box}): move the path's points onto the layer, or select "
            "the layer that holds them"
        )
    return out
