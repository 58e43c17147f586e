"""Shared set-up of the photo-pipeline tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from gimp_draggan.draggan import pti


def small_counted_inversion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[int]:
    """Few PTI steps for the "fast" preset, an empty model cache, and a list that gets one entry
    per inversion run (to count them, not time them)."""
    monkeypatch.setenv("GIMP_DRAGGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(
        pti.PRESETS, "fast",
        pti.InvertParams(projection_steps=3, tuning_steps=2, w_avg_samples=64),
    )
    calls: list[int] = []
    real = pti.invert

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pti, "invert", counting)
    return calls
