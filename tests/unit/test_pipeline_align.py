"""The pipeline frames crops as the model calls for: FFHQ-aligned (turned) crops for face models.

A tiny generator stands in for the model and a fake ``find_faces`` returns landmarks placed on
the photo by the test (a turned face), so the aligned box is known; the edit must then change
nothing outside the turned square, send previews on its bounding square, and reuse the session.
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from pipeline_helpers import shifted_face

from gimp_draggan.draggan.checkpoint import save_generator
from gimp_draggan.draggan.networks import Generator, GeneratorConfig
from gimp_draggan.edit.align import FaceAligner, SquareFraming, ffhq_box
from gimp_draggan.edit.align_embedded import KeypointAligner
from gimp_draggan.edit.geometry import Rect
from gimp_draggan.edit.pipeline import run_edit, run_invert
from gimp_draggan.edit.sampling import model_view
from gimp_draggan.edit.sessions import SessionCache
from gimp_draggan.faces import FaceLandmarks
from gimp_draggan.models.store import ModelStore
from gimp_draggan_plugin.protocol import JobRequest, Params, ProgressEvent

pytestmark = pytest.mark.timeout(300)
MODELS = ModelStore(any_file=True)  # Names or files, as the command line takes them.

TINY = GeneratorConfig(
    img_resolution=32, z_dim=32, w_dim=32, channel_base=256, channel_max=32, mapping_layers=2
)
ANGLE = 0.45


def _turn(p: tuple[float, float], angle: float) -> tuple[float, float]:
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = p[0] - 256.0, p[1] - 256.0
    return (256.0 + c * dx - s * dy, 256.0 + s * dx + c * dy)


# The astronaut's eyes and mouth (roughly), turned by ANGLE about the image centre.
FACE = FaceLandmarks(
    eye_left=_turn((215.0, 95.0), ANGLE),
    eye_right=_turn((262.0, 95.0), ANGLE),
    nose=_turn((240.0, 125.0), ANGLE),
    mouth=_turn((238.5, 160.0), ANGLE),
    mouth_left=None,
    mouth_right=None,
    score=0.95,
    box=(180.0, 50.0, 300.0, 200.0),
)


@pytest.fixture
def model(tmp_path: Path) -> str:
    torch.manual_seed(0)
    return str(save_generator(Generator(TINY), tmp_path / "tiny.safetensors"))


def _photo() -> np.ndarray:
    img = Image.fromarray(skimage.data.astronaut()).rotate(
        -math.degrees(ANGLE), resample=Image.Resampling.BICUBIC
    )  # Pillow turns counter-clockwise
    return np.dstack([np.asarray(img), np.full((512, 512), 255, np.uint8)])


def _finder(calls: list[Rect]):
    def find_faces(read, width, height, around):
        calls.append(around)
        assert read(ffhq_box(FACE, width, height, 32)).shape == (32, 32, 3)
        return [FACE]

    return find_faces


def test_models_say_which_framing_they_need(model: str) -> None:
    from gimp_draggan import faces

    for name in ("stylegan2-ffhq-512x512", "stylegan2-ada-ffhq-1024"):
        aligner = MODELS.aligner(name)
        assert isinstance(aligner, FaceAligner) and aligner.find_faces is faces.find_faces
    assert isinstance(MODELS.aligner("embedded"), KeypointAligner)  # its own keypoints
    assert isinstance(MODELS.aligner("stylegan2-afhqcat-512x512"), SquareFraming)
    assert isinstance(MODELS.aligner(model), SquareFraming)  # a file: no alignment


def test_an_ffhq_framed_edit_changes_only_the_turned_square(
    small: list[int], model: str, caplog: pytest.LogCaptureFixture
) -> None:
    rgba = _photo()
    pair = (_turn((240.0, 125.0), ANGLE), _turn((270.0, 140.0), ANGLE))  # nose, 4.6 model px
    req = JobRequest.photo(
        rgba.tobytes(),
        512,
        512,
        [pair],
        depth="u8",
        model=model,
        params=Params(steps=2, lr=0.05, preview_every=1, preview_size=24),
    )
    sessions = SessionCache()
    events: list[ProgressEvent] = []
    calls: list[Rect] = []
    with caplog.at_level(logging.INFO, logger="gimp_draggan.edit.pipeline"):
        r = run_edit(
            req,
            device="cpu",
            sessions=sessions,
            models=MODELS,
            on_progress=events.append,
            should_stop=lambda: False,
            aligner=FaceAligner(_finder(calls)),
        )
    session = sessions.get(r.session)
    box = session.box
    assert box == ffhq_box(FACE, 512, 512, 32)
    assert box.angle == pytest.approx(ANGLE, abs=1e-9)
    assert session.info["framing"] == "ffhq" and "framing ffhq" in caplog.text
    assert len(small) == 1 and calls  # find_faces was asked
    out = rgba.copy()
    out[r.y : r.y + r.height, r.x : r.x + r.width] = np.frombuffer(r.patch, np.uint8).reshape(
        r.height, r.width, 4
    )
    ys, xs = np.mgrid[0:512, 0:512] + 0.5
    u, v = box.local(xs, ys)
    square = np.maximum(np.abs(u), np.abs(v)) < box.side / 2
    assert np.array_equal(out[~square], rgba[~square])
    assert np.any(out[square] != rgba[square])
    inside, rect = box.inside, box.rect
    assert (r.x, r.y, r.x + r.width, r.y + r.height) == (
        inside.x0,
        inside.y0,
        inside.x1,
        inside.y1,
    )  # no selection: all
    previews = [e for e in events if e.preview is not None]
    assert previews and all(e.crop == (rect.x0, rect.y0, rect.width, rect.height) for e in previews)
    with Image.open(io.BytesIO(previews[0].preview)) as im:
        assert im.format == "JPEG" and im.size == (24, 24)
        shown = np.asarray(im.convert("RGB"), np.float32)
    # The bottom-left corner of the bounding square lies outside the turned square and on
    # the layer: the preview shows the layer's own pixels there.
    corner = np.asarray(
        Image.fromarray(rgba[rect.y1 - 10 : rect.y1, rect.x0 : rect.x0 + 10, :3]).resize(
            (1, 1), Image.Resampling.BOX
        ),
        np.float32,
    )[0, 0]
    assert rect.y1 <= 512 and not box.holds([(rect.x0 + 5.0, rect.y1 - 5.0)])
    assert np.abs(shown[-1, 0] - corner).max() < 40
    assert list(session.backdrops) == [24]  # made once, kept
    again = run_edit(
        req,
        device="cpu",
        sessions=sessions,
        models=MODELS,
        on_progress=lambda e: None,
        should_stop=lambda: False,
        aligner=FaceAligner(_finder([])),
    )
    assert again.session == r.session and len(small) == 1  # the turned box holds it


def test_points_off_the_face_fall_back_to_the_square(small: list[int], model: str) -> None:
    rgba = _photo()
    pair = ((60.0, 450.0), (75.0, 455.0))  # far from the face
    req = JobRequest.photo(
        rgba.tobytes(), 512, 512, [pair], depth="u8", model=model, params=Params(steps=1)
    )
    sessions = SessionCache()
    r = run_invert(
        req,
        device="cpu",
        sessions=sessions,
        models=MODELS,
        on_progress=lambda e: None,
        should_stop=lambda: False,
        aligner=FaceAligner(_finder([])),
    )
    session = sessions.get(r.session)
    assert session.info["framing"] == "square" and session.box.angle == 0.0
    assert session.box == SquareFraming().frame(rgba, Rect(60, 450, 76, 456), 32)


def test_an_invert_without_points_frames_the_largest_face(small: list[int], model: str) -> None:
    small_face = FaceLandmarks(
        eye_left=(400.0, 400.0),
        eye_right=(420.0, 400.0),
        nose=(410.0, 410.0),
        mouth=(410.0, 422.0),
        mouth_left=None,
        mouth_right=None,
        score=0.99,
        box=(390.0, 385.0, 430.0, 430.0),
    )
    asked: list[Rect] = []

    def find_faces(read, width, height, around):
        asked.append(around)
        return [small_face, FACE]  # the bigger face second: size decides

    rgba = _photo()
    req = JobRequest.photo(
        rgba.tobytes(), 512, 512, [], depth="u8", model=model, params=Params(steps=1)
    )
    sessions = SessionCache()
    r = run_invert(
        req,
        device="cpu",
        sessions=sessions,
        models=MODELS,
        on_progress=lambda e: None,
        should_stop=lambda: False,
        aligner=FaceAligner(find_faces),
    )
    session = sessions.get(r.session)
    assert asked == [Rect(0, 0, 512, 512)]
    assert session.info["framing"] == "ffhq" and session.box == ffhq_box(FACE, 512, 512, 32)

    r = run_invert(
        req,
        device="cpu",
        sessions=sessions,
        models=MODELS,
        on_progress=lambda e: None,
        should_stop=lambda: False,
        aligner=FaceAligner(lambda *a: []),
    )
    session = sessions.get(r.session)  # no face: the whole layer, as before
    assert session.info["framing"] == "square"
    assert session.box == SquareFraming(0).frame(rgba, Rect(0, 0, 512, 512), 32)


def test_neighbouring_faces_are_edited_one_after_another(small: list[int], model: str) -> None:
    """Two faces whose FFHQ squares overlap (a group photo) keep their own aligned crops; the
    second crop is taken from the layer as the first edit left it."""
    second = shifted_face(FACE, 130.0)
    rgba = _photo()
    pairs = [
        (FACE.nose, (FACE.nose[0] + 40.0, FACE.nose[1] + 20.0)),
        (second.nose, (second.nose[0] + 40.0, second.nose[1] + 20.0)),
    ]
    req = JobRequest.photo(
        rgba.tobytes(), 512, 512, pairs, depth="u8", model=model, params=Params(steps=3, lr=0.1)
    )
    boxes = [ffhq_box(f, 512, 512, 32) for f in (FACE, second)]
    assert not boxes[0].rect.intersect(boxes[1].rect).empty  # the squares overlap
    sessions = SessionCache()
    r = run_edit(
        req,
        device="cpu",
        sessions=sessions,
        models=MODELS,
        on_progress=lambda e: None,
        should_stop=lambda: False,
        aligner=FaceAligner(lambda read, w, h, around: [FACE, second]),
    )
    assert len(small) == 2 and len(sessions) == 2
    first, later = sessions.kept()
    assert first.box == boxes[0] and later.box == boxes[1]
    assert first.info["framing"] == later.info["framing"] == "ffhq"
    # The second inversion saw the first edit where the squares overlap.
    assert not np.allclose(later.target, model_view(rgba, "u8", later.box), atol=1e-3)
    out = rgba.copy()
    out[r.y : r.y + r.height, r.x : r.x + r.width] = np.frombuffer(r.patch, np.uint8).reshape(
        r.height, r.width, 4
    )
    ys, xs = np.mgrid[0:512, 0:512] + 0.5
    outside = np.ones((512, 512), bool)
    for box in boxes:
        u, v = box.local(xs, ys)
        outside &= np.maximum(np.abs(u), np.abs(v)) >= box.side / 2
    assert np.array_equal(out[outside], rgba[outside])
