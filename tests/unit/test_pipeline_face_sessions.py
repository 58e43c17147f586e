"""Inverting the same photo again finds the session the first inversion made."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from pipeline_helpers import shifted_face

from gimp_draggan.draggan.checkpoint import save_generator
from gimp_draggan.draggan.networks import Generator, GeneratorConfig
from gimp_draggan.edit.align import FaceAligner, ffhq_box
from gimp_draggan.edit.pipeline import run_edit, run_invert
from gimp_draggan.edit.sessions import SessionCache
from gimp_draggan.faces import FaceLandmarks
from gimp_draggan.models.store import ModelStore
from gimp_draggan_plugin.protocol import JobRequest, Params

pytestmark = pytest.mark.timeout(300)
MODELS = ModelStore(any_file=True)  # Names or files, as the command line takes them.

TINY = GeneratorConfig(
    img_resolution=32, z_dim=32, w_dim=32, channel_base=256, channel_max=32, mapping_layers=2
)
FACE = FaceLandmarks(  # The astronaut's eyes and mouth, roughly.
    eye_left=(215.0, 95.0),
    eye_right=(262.0, 95.0),
    nose=(240.0, 125.0),
    mouth=(238.5, 160.0),
    mouth_left=None,
    mouth_right=None,
    score=0.9,
    box=(180.0, 50.0, 300.0, 200.0),
)


def test_a_second_invert_without_points_reuses_the_face_session(
    small: list[int], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = str(save_generator(Generator(TINY), tmp_path / "tiny.safetensors"))
    rgba = np.dstack([skimage.data.astronaut(), np.full((512, 512), 255, np.uint8)])
    req = JobRequest.photo(
        rgba.tobytes(), 512, 512, [], depth="u8", model=model, params=Params(steps=1)
    )
    sessions = SessionCache()
    ids = []
    for hint in (None, None, "stale-or-unknown"):
        r = run_invert(
            JobRequest.photo(
                req.pixels, 512, 512, [], depth="u8", model=model, params=req.params, session=hint
            ),
            device="cpu",
            sessions=sessions,
            models=MODELS,
            on_progress=lambda e: None,
            should_stop=lambda: False,
            aligner=FaceAligner(lambda read, w, h, around: [FACE]),
        )
        ids.append(r.session)
    assert sessions.get(ids[0]).box == ffhq_box(FACE, 512, 512, 32)
    assert ids[0] == ids[1] == ids[2]
    assert len(small) == 1  # inverted once


def test_a_drag_on_one_face_uses_its_own_crop_not_a_neighbours_that_holds_it(
    small: list[int], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = str(save_generator(Generator(TINY), tmp_path / "tiny.safetensors"))
    rgba = np.dstack([skimage.data.astronaut(), np.full((512, 512), 255, np.uint8)])
    left, right = FACE, shifted_face(FACE, 100.0)
    on_right = (right.nose, (right.nose[0] + 10.0, right.nose[1] + 5.0))
    on_left = (left.nose, (left.nose[0] + 10.0, left.nose[1] + 5.0))
    boxes = {name: ffhq_box(f, 512, 512, 32) for name, f in (("left", left), ("right", right))}
    assert boxes["left"].holds(list(on_right))  # the left square holds it too

    def aligner() -> FaceAligner:
        return FaceAligner(lambda read, w, h, around: [left, right])

    sessions = SessionCache()
    prepared = run_invert(
        JobRequest.photo(
            rgba.tobytes(),
            512,
            512,
            [on_right, on_left],
            depth="u8",
            model=model,
            params=Params(steps=1),
        ),
        device="cpu",
        sessions=sessions,
        models=MODELS,
        on_progress=lambda e: None,
        should_stop=lambda: False,
        aligner=aligner(),
    )
    assert sessions.get(prepared.session).box == boxes["right"]
    assert {s.box for s in sessions.kept()} == {boxes["right"], boxes["left"]}
    assert len(small) == 2  # each face its own crop
    r = run_edit(
        JobRequest.photo(
            rgba.tobytes(),
            512,
            512,
            [on_right],
            depth="u8",
            model=model,
            params=Params(steps=1, lr=0.05),
        ),
        device="cpu",
        sessions=sessions,
        models=MODELS,
        on_progress=lambda e: None,
        should_stop=lambda: False,
        aligner=aligner(),
    )
    assert len(small) == 2  # prepared: no new inversion
    assert sessions.get(r.session).box == boxes["right"]


def test_a_plain_square_made_before_does_not_serve_a_face_found_now(
    small: list[int], tmp_path: Path
) -> None:
    """A selection over the whole portrait was framed as a plain square (no face square holds
    it); a later drag on the face without a selection gets the face's aligned crop, although
    the old square holds its points."""
    torch.manual_seed(0)
    model = str(save_generator(Generator(TINY), tmp_path / "tiny.safetensors"))
    rgba = np.dstack([skimage.data.astronaut(), np.full((512, 512), 255, np.uint8)])
    mask = np.zeros((512, 512), np.uint8)
    mask[20:300, 120:360] = 255
    on_nose = (FACE.nose, (FACE.nose[0] + 30.0, FACE.nose[1] + 15.0))
    sessions = SessionCache()

    def aligner() -> FaceAligner:
        return FaceAligner(lambda read, w, h, around: [FACE])

    first = run_edit(
        JobRequest.photo(
            rgba.tobytes(),
            512,
            512,
            [on_nose],
            depth="u8",
            model=model,
            mask=mask.tobytes(),
            params=Params(steps=1),
        ),
        device="cpu",
        sessions=sessions,
        models=MODELS,
        on_progress=lambda e: None,
        should_stop=lambda: False,
        aligner=aligner(),
    )
    square = sessions.get(first.session)
    face_box = ffhq_box(FACE, 512, 512, 32)
    assert square.info["framing"] == "square" and square.box.holds(list(on_nose))
    assert square.box.side <= 2 * face_box.side  # a cache hit, size-wise
    for hint in (first.session, None):
        r = run_edit(
            JobRequest.photo(
                rgba.tobytes(),
                512,
                512,
                [on_nose],
                depth="u8",
                model=model,
                params=Params(steps=1),
                session=hint,
            ),
            device="cpu",
            sessions=sessions,
            models=MODELS,
            on_progress=lambda e: None,
            should_stop=lambda: False,
            aligner=aligner(),
        )
        assert sessions.get(r.session).box == face_box
    assert len(small) == 2  # the face inverted once
