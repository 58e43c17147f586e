"""`gimp-draggan demo`: the whole product, headless, on the embedded model and the CPU.

The end-to-end test runs the real command (daemon on loopback, plug-in client, pipeline) and
checks what it wrote: the edit changed the selected head, nothing outside the selection, the
handles moved towards their targets, and the progress pictures and reports exist.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gimp_draggan.headless import demo


def test_selection_mask_is_the_ellipse() -> None:
    w, h = 40, 30
    mask = np.frombuffer(demo.selection_mask(w, h, (20.0, 15.0, 10.0, 6.0)), np.uint8)
    mask = mask.reshape(h, w)
    assert mask[15, 20] == 255 and mask[15, 29] == 255 and mask[15, 31] == 0
    assert mask[0, 0] == 0 and mask[15, 9] == 0
    assert abs(int((mask > 0).sum()) - math.pi * 10 * 6) < 12
    assert set(np.unique(mask)) <= {0, 255}


def test_scene_fits_the_sample() -> None:
    photo = demo.load_sample()
    w, h = photo.size
    mask = np.frombuffer(demo.selection_mask(w, h, demo.SCENE.ellipse), np.uint8).reshape(h, w)
    for handle, target in demo.SCENE.pairs:
        for x, y in (handle, target):
            assert 0 <= x < w and 0 <= y < h
            assert mask[int(y), int(x)] == 255, (x, y)
        assert math.dist(handle, target) >= 8  # far enough to see


def test_sample_is_made_by_its_recipe() -> None:
    shipped = np.asarray(demo.load_sample().convert("RGB"))
    again = np.asarray(demo.make_sample())
    assert shipped.shape == again.shape == (320, 320, 3)
    assert np.array_equal(shipped, again)  # a lossless crop of the photo


def test_progress_bar_without_a_terminal_prints_quarters() -> None:
    out = io.StringIO()
    bar = demo.ProgressBar(out)
    for step in range(1, 41):
        bar.update("invert", step, 40)
    for step in range(1, 8):  # the drag stops early, at step 7 of 10
        bar.update("drag", step, 10, f"— {10 - step:.1f} px to go")
    bar.end()
    lines = out.getvalue().splitlines()
    assert [ln.split("]")[1].split()[0] for ln in lines] == [
        "1/40",
        "10/40",
        "20/40",
        "30/40",
        "40/40",
        "1/10",
        "3/10",
        "5/10",
        "7/10",
    ]
    assert lines[-1].startswith("dragging") and lines[-1].endswith("3.0 px to go")


@pytest.fixture()
def quiet_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fresh user folders: no cached models or LPIPS weights, logs kept out of the real HOME."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIMP_DRAGGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GIMP_DRAGGAN_LOG_DIR", str(tmp_path / "logs"))
    return tmp_path


def test_demo_runs_offline_and_edits_only_the_selection(quiet_home: Path, capsys) -> None:
    from gimp_draggan.cli import main

    out = quiet_home / "draggan-demo"
    assert main(["demo", "-o", str(out)]) == 0
    printed = capsys.readouterr()
    assert "dragging" in printed.err and "inverting the photo" in printed.err
    assert f"look at {out / 'demo.png'}" in printed.out

    report = json.loads((out / "report.json").read_text())
    for name in report["files"]:
        assert (out / name).is_file(), name
    assert {"before.png", "after.png", "demo.png", "progress.gif", "report.md"} <= set(
        report["files"]
    )
    assert report["model"] == "embedded" and report["device"] == "cpu"
    assert 1 <= report["steps"] <= report["max_steps"]

    before = np.asarray(Image.open(out / "before.png").convert("RGBA"), np.int16)
    after = np.asarray(Image.open(out / "after.png").convert("RGBA"), np.int16)
    assert (before == np.asarray(demo.load_sample(), np.int16)).all()
    h, w = before.shape[:2]
    inside = np.frombuffer(demo.selection_mask(w, h, demo.SCENE.ellipse), np.uint8)
    inside = inside.reshape(h, w) > 0
    diff = np.abs(after - before).max(axis=2)
    assert (diff[~inside] == 0).all()  # byte-identical outside the selection
    assert (diff[inside] > 0).mean() > 0.05  # the face moved
    assert report["changed_pixels_outside"] == 0
    for pair in report["pairs"]:  # every handle got nearer its target
        assert pair["final_distance"] < pair["start_distance"]

    # Photo-true: the photo's own texture, not the generator's 64 px image, fills the edit.
    def detail(img: np.ndarray) -> float:
        grey = img[..., :3].mean(axis=2)
        return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())

    x0, y0, x1, y1 = demo.ZOOM_BOX
    assert detail(after[y0:y1, x0:x1]) > 0.85 * detail(before[y0:y1, x0:x1])

    gif = Image.open(out / "progress.gif")
    assert gif.n_frames == report["frames"] >= 2
    sheet = Image.open(out / "demo.png")
    assert sheet.width > 2 * w and sheet.height > h + 2 * (y1 - y0)
    assert "| phase | seconds |" in (out / "report.md").read_text()
