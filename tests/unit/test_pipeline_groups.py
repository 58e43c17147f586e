"""Pairs far apart are edited one after another, each in its own crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch

from gimp_draggan.draggan.checkpoint import save_generator
from gimp_draggan.draggan.networks import Generator, GeneratorConfig
from gimp_draggan.edit.align import SQUARE, Framing
from gimp_draggan.edit.geometry import Rect, choose_box
from gimp_draggan.edit.groups import plan_groups, selection_parts
from gimp_draggan.edit.pipeline import run_edit
from gimp_draggan.edit.sessions import SessionCache
from gimp_draggan.models.store import ModelStore
from gimp_draggan_plugin.protocol import JobRequest, Params

pytestmark = pytest.mark.timeout(300)
MODELS = ModelStore(any_file=True)  # Names or files, as the command line takes them.


def _frame(need: Rect) -> Framing:
    return Framing(choose_box(need, 512, 512, resolution=32), SQUARE)


def test_far_pairs_get_their_own_crops_and_near_ones_share() -> None:
    handles = [(100.0, 100.0), (400.0, 380.0), (108.0, 104.0)]
    targets = [(110.0, 100.0), (410.0, 390.0), (115.0, 110.0)]
    groups = plan_groups(handles, targets, None, (512, 512), _frame)
    assert [g.pairs for g in groups] == [(0, 2), (1,)]
    assert groups[0].box.rect.intersect(groups[1].box.rect).empty
    assert groups[0].needed.contains(Rect(100, 100, 116, 111))


def test_groups_whose_crops_overlap_are_merged() -> None:
    handles = [(100.0, 100.0), (150.0, 100.0)]  # 16 px crops 50 px apart: apart
    targets = [(110.0, 100.0), (160.0, 100.0)]
    assert len(plan_groups(handles, targets, None, (512, 512), _frame)) == 2
    near = [(100.0, 100.0), (112.0, 100.0)]  # their crops would overlap
    near_t = [(110.0, 100.0), (122.0, 100.0)]
    assert [g.pairs for g in plan_groups(near, near_t, None, (512, 512), _frame)] == [(0, 1)]


def test_a_group_crop_holds_the_selected_part_its_points_lie_on() -> None:
    sel = np.zeros((512, 512), np.uint8)
    sel[60:160, 50:170] = 255  # face 1
    sel[330:450, 350:470] = 255  # face 2
    labels, cell = selection_parts(sel)
    assert cell == 1 and labels.max() == 2
    groups = plan_groups(
        [(100.0, 100.0), (400.0, 400.0)], [(110.0, 100.0), (410.0, 400.0)], sel, (512, 512), _frame
    )
    assert [g.pairs for g in groups] == [(0,), (1,)]
    assert groups[0].needed == Rect(50, 60, 170, 160)
    assert groups[1].needed == Rect(350, 330, 470, 450)
    sel[150:340, 160:360] = 255  # now one connected part
    joined = plan_groups(
        [(100.0, 100.0), (400.0, 400.0)], [(110.0, 100.0), (410.0, 400.0)], sel, (512, 512), _frame
    )
    assert [g.pairs for g in joined] == [(0, 1)]


def test_selection_parts_join_through_any_path_and_not_across_corners() -> None:
    u = np.array(
        [
            [1, 0, 1, 0, 0],
            [1, 0, 1, 0, 1],
            [1, 1, 1, 0, 0],
            [0, 0, 0, 1, 0],
        ],
        np.uint8,
    )
    labels, cell = selection_parts(u * 255)
    # The U's two arms meet only in its bottom row; the lone cells touch it at corners only.
    expected = np.array(
        [
            [1, 0, 1, 0, 0],
            [1, 0, 1, 0, 2],
            [1, 1, 1, 0, 0],
            [0, 0, 0, 3, 0],
        ],
        np.int32,
    )
    assert cell == 1
    np.testing.assert_array_equal(labels, expected)


def test_selection_parts_number_parts_by_their_first_cell() -> None:
    sel = np.zeros((6, 8), np.uint8)
    sel[3:6, 0:2] = 255  # starts lower but reaches further left
    sel[0:2, 5:8] = 255
    labels, _ = selection_parts(sel)
    assert labels[0, 5] == 1 and labels[3, 0] == 2 and labels.max() == 2


def test_selection_parts_of_a_big_selection_use_a_coarse_grid() -> None:
    sel = np.zeros((3000, 4000), np.uint8)
    sel[100:200, 100:200] = 1
    sel[2000:2100, 3000:3100] = 1
    labels, cell = selection_parts(sel)
    assert cell == 8 and labels.shape == (375, 500) and labels.max() == 2


def test_two_faces_in_one_drag_are_edited_one_after_another(
    small: list[int], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    cfg = GeneratorConfig(
        img_resolution=32, z_dim=32, w_dim=32, channel_base=256, channel_max=32, mapping_layers=2
    )
    model = str(save_generator(Generator(cfg), tmp_path / "tiny.safetensors"))
    img = skimage.data.astronaut()
    rgba = np.dstack([img, np.full((512, 512), 255, np.uint8)])
    pairs = [((100.0, 100.0), (112.0, 104.0)), ((400.0, 380.0), (410.0, 392.0))]
    req = JobRequest.photo(
        rgba.tobytes(), 512, 512, pairs, depth="u8", model=model, params=Params(steps=2, lr=0.05)
    )
    sessions = SessionCache()
    events = []
    r = run_edit(
        req,
        device="cpu",
        sessions=sessions,
        models=MODELS,
        on_progress=events.append,
        should_stop=lambda: False,
    )
    assert len(small) == 2 and len(sessions) == 2
    boxes = [
        choose_box(Rect(100, 100, 113, 105), 512, 512, 32),
        choose_box(Rect(400, 380, 411, 393), 512, 512, 32),
    ]
    assert (r.x, r.y) == (boxes[0].x0, boxes[0].y0)
    assert (r.x + r.width, r.y + r.height) == (boxes[1].rect.x1, boxes[1].rect.y1)
    out = rgba.copy()
    out[r.y : r.y + r.height, r.x : r.x + r.width] = np.frombuffer(r.patch, np.uint8).reshape(
        r.height, r.width, 4
    )
    outside = np.ones((512, 512), bool)
    for b in boxes:
        outside[b.y0 : b.y0 + b.side, b.x0 : b.x0 + b.side] = False
    assert np.array_equal(out[outside], rgba[outside])  # between the faces: untouched
    assert len(r.points) == 2 and r.points[1][0] > 300  # in the request's order
    assert all(len(e.points) == 2 for e in events)  # progress shows every handle
    run_edit(
        req,
        device="cpu",
        sessions=sessions,
        models=MODELS,
        on_progress=lambda e: None,
        should_stop=lambda: False,
    )
    assert len(small) == 2  # both crops were cached
