"""run_edit end to end with a tiny generator: crop -> (cached) PTI -> drag -> composite.

The inversion preset is shrunk to a few steps (what is tested is the plumbing, not PTI's
quality); the model cache points at an empty folder, so the perceptual loss is the
download-free fallback and nothing is fetched.
"""

from __future__ import annotations

import io
import math
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from pipeline_helpers import small_counted_inversion

from gimp_draggan.draggan.checkpoint import save_generator
from gimp_draggan.draggan.networks import Generator, GeneratorConfig
from gimp_draggan.edit.pipeline import EditCancelled, run_edit, run_invert
from gimp_draggan.edit.pixels import from_float, to_float
from gimp_draggan.edit.sessions import SessionCache
from gimp_draggan.models.store import ModelStore
from gimp_draggan_plugin.protocol import JobRequest, JobResult, Params, ProgressEvent

pytestmark = pytest.mark.timeout(300)
MODELS = ModelStore(any_file=True)  # Names or files, as the command line takes them.

TINY = GeneratorConfig(
    img_resolution=32, z_dim=32, w_dim=32, channel_base=256, channel_max=32, mapping_layers=2
)
PAIR = ((200.0, 150.0), (215.0, 152.0))


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny convolutions run fastest on one thread (and far faster on a shared, busy CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    return str(save_generator(Generator(TINY), tmp_path_factory.mktemp("m") / "tiny.safetensors"))


@pytest.fixture(autouse=True)
def small_inversion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[int]:
    """Few PTI steps, an empty model cache, and a count of inversions run."""
    return small_counted_inversion(monkeypatch, tmp_path)


def _astronaut() -> np.ndarray:
    img = skimage.data.astronaut()
    return np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])


def _request(model: str, rgba: np.ndarray, depth: str = "u8", **kw) -> JobRequest:
    h, w = rgba.shape[:2]
    pairs = kw.pop("pairs", [PAIR])
    kw.setdefault("params", Params(steps=3))
    return JobRequest.photo(rgba.tobytes(), w, h, pairs, depth=depth, model=model, **kw)


def _run(
    req: JobRequest,
    sessions: SessionCache,
    events: list[ProgressEvent] | None = None,
    stop: Callable[[], bool] = lambda: False,
    invert: bool = False,
) -> JobResult:
    fn = run_invert if invert else run_edit
    on = events.append if events is not None else (lambda p: None)
    return fn(req, device="cpu", sessions=sessions, models=MODELS, on_progress=on, should_stop=stop)


def _apply(rgba: np.ndarray, r: JobResult) -> np.ndarray:
    patch = np.frombuffer(r.patch, rgba.dtype).reshape(r.height, r.width, 4)
    out = rgba.copy()
    out[r.y : r.y + r.height, r.x : r.x + r.width] = patch
    return out


def test_edit_of_a_real_photo_changes_only_the_selection(model: str) -> None:
    rgba = _astronaut()
    yy, xx = np.mgrid[0:512, 0:512]
    sel = (((xx - 205) / 60) ** 2 + ((yy - 150) / 45) ** 2 <= 1).astype(np.uint8) * 255
    events: list[ProgressEvent] = []
    params = Params(steps=3, lr=0.05, preview_every=1, preview_size=16)  # big steps
    r = _run(_request(model, rgba, mask=sel.tobytes(), params=params), SessionCache(), events)
    assert r.depth == "u8" and len(r.patch) == r.width * r.height * 4
    assert (r.x, r.y, r.width, r.height) == (145, 105, 121, 91)  # the selection's bbox
    out = _apply(rgba, r)
    assert np.array_equal(out[sel == 0], rgba[sel == 0])
    assert np.array_equal(out[:, :, 3], rgba[:, :, 3])
    assert not np.array_equal(out[150, 205], rgba[150, 205])
    assert 1 <= r.steps <= 3 and len(r.points) == 1 and len(r.distances) == 1
    assert r.distances[0] == pytest.approx(math.dist(r.points[0], PAIR[1]), rel=1e-6)
    phases = [e.phase for e in events]
    assert phases[0] == "invert" and phases[-1] == "drag" and phases.count("invert") == 5
    first = next(e for e in events if e.phase == "drag")
    # Progress is in layer pixels: the first tracked handle is the handle, up to rounding.
    assert math.dist(first.points[0], PAIR[0]) < 12
    assert set(r.timings) >= {"load", "crop", "invert", "drag", "composite", "total"}
    previews = [e for e in events if e.preview is not None]
    assert len(previews) == r.steps >= 1  # one per optimiser step
    with Image.open(io.BytesIO(previews[0].preview)) as im:
        assert im.format == "JPEG" and max(im.size) <= 16
    x, y, w, h = previews[0].crop  # where it lies in the layer
    assert w == h and x <= 145 and y <= 105 and x + w >= 266 and y + h >= 196


def test_second_drag_on_the_same_photo_does_no_inversion(
    model: str, small_inversion: list[int]
) -> None:
    rgba = _astronaut()
    sessions = SessionCache()
    first = _run(_request(model, rgba), sessions)
    assert len(small_inversion) == 1
    other_pair = [((203.0, 151.0), (210.0, 146.0))]  # inside the first crop
    second = _run(_request(model, rgba, pairs=other_pair), sessions)
    hinted = _run(_request(model, rgba, pairs=other_pair, session=first.session), sessions)
    assert len(small_inversion) == 1
    assert first.session == second.session == hinted.session
    changed = rgba.copy()
    changed[150, 205, 0] ^= 0xFF  # one pixel in the crop differs
    _run(_request(model, changed, session=first.session), sessions)
    assert len(small_inversion) == 2
    sessions.clear()
    _run(_request(model, rgba), sessions)
    assert len(small_inversion) == 3


def test_invert_then_drag_inverts_once(model: str, small_inversion: list[int]) -> None:
    rgba = _astronaut()
    sessions = SessionCache()
    prepared = _run(_request(model, rgba), sessions, invert=True)
    assert prepared.patch == b"" and prepared.steps == 0
    dragged = _run(_request(model, rgba), sessions)
    assert dragged.session == prepared.session and len(small_inversion) == 1
    whole = _run(_request(model, rgba, pairs=[]), sessions, invert=True)  # no points: whole layer
    assert whole.session != prepared.session and len(small_inversion) == 2
    far = [((200.0, 150.0), (260.0, 170.0))]  # > 1 model px in a 512 px crop
    _run(_request(model, rgba, pairs=far, session=whole.session), sessions)  # hint followed
    assert len(small_inversion) == 2
    sessions.clear()
    _run(_request(model, rgba, pairs=[]), sessions, invert=True)
    _run(_request(model, rgba), sessions)  # a 512 px crop for a 24 px need: inverted anew
    assert len(small_inversion) == 4


def test_colours_hidden_under_alpha_zero_do_not_reach_the_model(model: str) -> None:
    rgba = _astronaut()
    rgba[140:170, 190:230, 3] = 0  # a transparent hole at the points
    hidden_black, hidden_noise = rgba.copy(), rgba.copy()
    hidden_black[140:170, 190:230, :3] = 0
    hidden_noise[140:170, 190:230, :3] = np.random.default_rng(0).integers(0, 256, (30, 40, 3))
    sessions = SessionCache()
    a = _run(_request(model, hidden_black), sessions, invert=True)
    b = _run(_request(model, hidden_noise), sessions, invert=True)
    assert a.session != b.session  # other bytes, other crop digest
    assert np.array_equal(sessions.get(a.session).target, sessions.get(b.session).target)


@pytest.mark.parametrize("depth", ["u16", "f32"])
def test_high_bit_depth_requests_come_back_in_their_depth(model: str, depth: str) -> None:
    rgba = from_float(to_float(_astronaut()[100:260, 120:300], "u8"), depth)
    sel = np.zeros(rgba.shape[:2], np.uint8)
    sel[30:90, 60:120] = 255
    pairs = [((80.0, 50.0), (95.0, 55.0))]
    r = _run(_request(model, rgba, depth, pairs=pairs, mask=sel.tobytes()), SessionCache())
    assert r.depth == depth and len(r.patch) == r.width * r.height * 4 * rgba.itemsize
    out = _apply(rgba, r)
    assert out[sel == 0].tobytes() == rgba[sel == 0].tobytes()


def test_cancel_during_inversion_keeps_nothing(model: str) -> None:
    sessions = SessionCache()
    with pytest.raises(EditCancelled, match="inversion"):
        _run(_request(model, _astronaut()), sessions, stop=lambda: True)
    assert len(sessions) == 0


def test_cancel_during_the_drag_keeps_the_inversion(model: str) -> None:
    sessions = SessionCache()
    phases: list[ProgressEvent] = []

    def stop() -> bool:
        return any(e.phase == "drag" for e in phases)

    with pytest.raises(EditCancelled, match="drag"):
        _run(_request(model, _astronaut(), params=Params(steps=50)), sessions, phases, stop)
    assert len(sessions) == 1


def test_a_big_layer_is_edited_without_touching_more_than_the_crop(model: str) -> None:
    rgba = np.zeros((6000, 8000, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[2900:3100, 3900:4100, :3] = 180
    req = _request(model, rgba, pairs=[((4000.0, 3000.0), (4012.0, 3003.0))])
    tracemalloc.start()
    try:
        r = _run(req, SessionCache())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.width * r.height < 100 * 100
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MB"  # the layer is 192 MB


def test_a_drag_shorter_than_a_model_pixel_lands_on_its_target(model: str) -> None:
    """3 px in a 600 px crop is 0.16 model px: within the stop distance from the start, so the
    drag takes no step and the photo-true warp alone places the handle's content."""
    rgba = _astronaut()
    sel = np.zeros((512, 512), np.uint8)
    sel[50:450, 50:450] = 255
    pairs = [((200.0, 200.0), (203.0, 200.0))]
    r = _run(_request(model, rgba, pairs=pairs, mask=sel.tobytes()), SessionCache())
    assert r.steps == 0 and r.converged and r.worse == []
    assert r.points == [(203.0, 200.0)] and r.distances == [0.0]
    out = np.frombuffer(r.patch, np.uint8).reshape(r.height, r.width, 4)
    moved = out[200 - r.y, 203 - r.x, :3].astype(int)
    assert np.abs(moved - rgba[200, 200, :3]).max() <= 2  # the handle's pixel arrived


def test_pixels_that_do_not_match_the_layer_size_are_refused() -> None:
    """The wire checks requests (test_protocol); the pixel views still state their size."""
    with pytest.raises(ValueError, match="expected 1048576 bytes"):
        _run(JobRequest.photo(b"\0" * 10, 512, 512, [PAIR], model="m"), SessionCache())


def _detail(img: np.ndarray, where: np.ndarray) -> float:
    grey = img[..., :3].astype(np.float64).mean(axis=2)
    hp = grey - 0.25 * (
        np.roll(grey, 1, 0) + np.roll(grey, -1, 0) + np.roll(grey, 1, 1) + np.roll(grey, -1, 1)
    )
    return float(np.mean(hp[where] ** 2))


def test_the_photo_blend_keeps_the_photos_detail(model: str) -> None:
    """Whatever the (here random) generator draws, the photo blend only moves the photo's own
    pixels: the changed region keeps its fine detail; the generator blend is another image."""
    rgba = _astronaut()
    sel = np.zeros((512, 512), np.uint8)
    sel[90:220, 160:290] = 255
    pairs = [((205.0, 147.0), (199.0, 141.0))]
    outs = {}
    for blend in ("photo", "generator"):
        r = _run(
            _request(
                model,
                rgba,
                pairs=pairs,
                mask=sel.tobytes(),
                params=Params(steps=20, blend=blend),
            ),
            SessionCache(),
        )
        outs[blend] = _apply(rgba, r)
    for blend, out in outs.items():
        changed = np.any(out != rgba, axis=2)
        assert changed.any() and not changed[sel == 0].any(), blend
    changed = np.any(outs["photo"] != rgba, axis=2)
    ratio = _detail(outs["photo"], changed) / _detail(rgba, changed)
    assert ratio > 0.9
    assert not np.array_equal(outs["photo"], outs["generator"])


def test_the_drag_step_size_is_the_models_unless_the_request_names_one() -> None:
    from gimp_draggan.service.executor import PipelineExecutor
    from gimp_draggan_plugin import protocol as P

    executor = PipelineExecutor("cpu", default_model="embedded")
    request = P.JobRequest(
        op="drag",
        id="j",
        model="embedded",
        pairs=[((1.0, 1.0), (4.0, 4.0))],
        params=P.check_params({}),
        image=None,
        pixels=None,
        mask=None,
        session=None,
        seed=None,
    )
    assert executor._with_lr(request).params.lr == 0.005
    named = replace(request, params=P.check_params({"lr": 0.01}))
    assert executor._with_lr(named).params.lr == 0.01
