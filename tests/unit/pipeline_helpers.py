"""Shared set-up of the photo-pipeline tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from gimp_draggan.draggan import pti
from gimp_draggan.faces import FaceLandmarks


def small_counted_inversion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[int]:
    """Few PTI steps for the "fast" preset, an empty model cache, and a list that gets one entry
    per inversion run (to count them, not time them)."""
    monkeypatch.setenv("GIMP_DRAGGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(
        pti.PRESETS,
        "fast",
        pti.InvertParams(projection_steps=3, tuning_steps=2, w_avg_samples=64),
    )
    calls: list[int] = []
    real = pti.invert

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pti, "invert", counting)
    return calls


def shifted_face(face: FaceLandmarks, dx: float) -> FaceLandmarks:
    """``face`` moved ``dx`` pixels to the right (a neighbour in a group photo)."""

    def move(p: tuple[float, float] | None) -> tuple[float, float] | None:
        return None if p is None else (p[0] + dx, p[1])

    x0, y0, x1, y1 = face.box
    return FaceLandmarks(
        eye_left=(face.eye_left[0] + dx, face.eye_left[1]),
        eye_right=(face.eye_right[0] + dx, face.eye_right[1]),
        nose=(face.nose[0] + dx, face.nose[1]),
        mouth=(face.mouth[0] + dx, face.mouth[1]),
        mouth_left=move(face.mouth_left),
        mouth_right=move(face.mouth_right),
        score=face.score,
        box=(x0 + dx, y0, x1 + dx, y1),
    )
