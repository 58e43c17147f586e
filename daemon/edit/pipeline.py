"""The photo edit: layer -> crop -> (cached) PTI inversion -> drag -> composite -> patch.

`run_edit` is what the daemon's worker and the in-process CLI call with a `JobRequest` (the
wire's own type, gimp_draggan.edit.types), checked once where it entered (`protocol.check_job`
or `protocol.checked`: points on the layer and the selection, parameters in range); here it is
trusted. Points arrive and leave in layer pixels; inside, they live in the model's pixels
through the crop box. Progress is reported in layer pixels too. Errors a user can fix that only
the edit finds raise ValueError with a sentence saying what to do; `should_stop()` returning
True raises
`EditCancelled` and leaves nothing half-done (an inversion that finished stays cached).

Behaviour worth knowing:
- With a selection, every handle and target must lie on a selected pixel: nothing outside the
  selection may change, so a handle or target outside it is an error, not a silent no-op.
- A request's `session` id is a hint: the session is used when it still holds the same model,
  preset and pixels over a box that holds the points; otherwise the crop a fresh framing makes
  is looked up by its id, then the cache is searched (for a crop that holds the points and is
  at most twice as wide as the fresh one), and on a miss the crop is inverted anew (the photo
  form always carries its pixels).
  A crop serves only points framed the same way now: an aligned crop only its own face, and a
  plain square not where a face is now found (as hint or as cache hit).
- Photo-true (the default ``blend="photo"``): the drag yields a motion field read from the
  generator's features (`gimp_draggan.draggan.motion`), and the composite moves the layer's own
  full-resolution pixels along it (`gimp_draggan.edit.warp`); the generator's pixels fill in only
  where the field has no source (content the drag revealed). Previews show that warp too.
- Precision in layer pixels: handles are tracked to 1/8 model pixel, and the drag stops when
  each is within `STOP_LAYER_PX` layer pixels of its target (never looser than the paper's
  rule, never tighter than `STOP_FLOOR` model pixels, what tracking resolves). The warp then
  places each handle that got there exactly on its target; a handle that did not is left where
  the drag brought it, and the result says so (``converged``, ``worse``).
- ``blend="generator"`` keeps the earlier composite for comparison: the dragged image where it
  differs from the reconstruction, with the blurred inversion error (crop - reconstruction)
  added back so its tone matches the photo.
- Pairs far apart (two faces of a group photo) are edited one after another, each group in its
  own crop and session (`gimp_draggan.edit.groups`); the result has one patch over all of them. When
  a crop overlaps what an earlier group changed (neighbouring faces' FFHQ squares), it is made
  from the layer as that edit left it.
- Framing: models.json's ``"alignment"`` picks the aligner (`ModelStore.aligner`):
  FFHQ models get the face holding the points framed as FFHQ framed it (a turned crop), the
  embedded model its head framed by keypoints (`gimp_draggan.edit.align_embedded`), both with the
  plain square as fallback; a model given as a file gets the square. The framing a session was
  made with is logged and kept in its ``info["framing"]``. Previews of a turned crop are drawn
  upright onto its bounding square over the layer's own pixels, so the protocol's (x, y, w, h)
  still says where they lie.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from gimp_draggan.draggan import pti
from gimp_draggan.draggan.drag import DragParams, DragResult, DragSession, StepReport, pixel_radii
from gimp_draggan.draggan.motion import MotionField, estimate_motion
from gimp_draggan.edit.align import (
    SQUARE,
    Aligner,
    FaceAligner,
    Framing,
    SquareFraming,
    SubjectFraming,
)
from gimp_draggan.edit.composite import Patch, change_weight, composite, match_low_frequencies
from gimp_draggan.edit.geometry import CropBox, Rect, mask_rect
from gimp_draggan.edit.groups import Group, plan_groups
from gimp_draggan.edit.pixels import mask_view, preview_jpeg, rgba_view, to_bytes
from gimp_draggan.edit.sampling import layer_to_model, model_view, preview_on_rect
from gimp_draggan.edit.sessions import (
    Session,
    SessionCache,
    UnknownSession,
    crop_digest,
    session_id,
)
from gimp_draggan.edit.types import (
    JobRequest,
    JobResult,
    Params,
    Point,
    ProgressEvent,
    ProgressFn,
    StopFn,
)
from gimp_draggan.edit.warp import LayerField, warp_composite
from gimp_draggan.models.store import ModelStore

FEATHER = 1.0 / 16.0  # Blend ramp width, fraction of the crop side.
COLOR_RADIUS = 1.0 / 16.0  # Colour-matching blur radius, fraction of the model resolution.
CHANGE_THRESHOLD = 0.04  # A channel moving this much (of full scale) counts as changed.
CHANGE_RADIUS = 1.0 / 32.0  # Spread of the change map, fraction of the model resolution.
STOP_LAYER_PX = 2.0  # A handle this close to its target (layer pixels) is there.
STOP_FLOOR = 0.5  # ...but the drag never aims closer than this many model pixels.

log = logging.getLogger("gimp_draggan.edit.pipeline")


class EditCancelled(RuntimeError):
    """`should_stop()` ended the edit; the layer is to stay as it was."""


@dataclass(frozen=True)
class _LayerView:
    """The request's pixels and selection as read-only views, plus its points."""

    rgba: np.ndarray  # [H, W, 4] in the request's dtype.
    depth: str
    selection: np.ndarray | None  # [H, W] u8.
    handles: list[Point]
    targets: list[Point]

    @property
    def size(self) -> tuple[int, int]:
        return int(self.rgba.shape[1]), int(self.rgba.shape[0])


def _read(request: JobRequest) -> _LayerView:
    """The request's layer as views; its values were checked where it entered (the wire's
    `check_job`, or `checked` in the CLI)."""
    image = request.layer
    assert request.pixels is not None  # A photo request (`layer` says so).
    rgba = rgba_view(request.pixels, image.width, image.height, image.depth)
    selection = None if request.mask is None else mask_view(request.mask, image.width, image.height)
    handles = [(float(h[0]), float(h[1])) for h, _ in request.pairs]
    targets = [(float(t[0]), float(t[1])) for _, t in request.pairs]
    return _LayerView(rgba, image.depth, selection, handles, targets)


def _model_ref(request: JobRequest) -> str:
    """The model file or registry name the request names (the daemon and the CLI fill it)."""
    assert request.model is not None, "the daemon or the CLI names the model"
    return request.model


def _whole(layer: _LayerView) -> Rect:
    """Without points, the crop holds the selection (the whole layer without one)."""
    w, h = layer.size
    return Rect(0, 0, w, h) if layer.selection is None else mask_rect(layer.selection)


# ----------------------------------------------------------------------------------------------
# Models, inversion, sessions.


def _to_tensor(img: np.ndarray, device: str) -> torch.Tensor:
    """[R, R, 3] in [0, 1] -> [1, 3, R, R] in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
    return (t * 2.0 - 1.0).to(device)


def _to_image(t: torch.Tensor) -> np.ndarray:
    """[1, 3, R, R] in [-1, 1] -> [R, R, 3] float32 in [0, 1]."""
    return ((t[0].detach().float().cpu().permute(1, 2, 0).numpy() + 1.0) / 2.0).clip(0.0, 1.0)


@dataclass(frozen=True)
class _Model:
    path: str  # The resolved model file.
    G: Any  # Loaded generator on the device.
    key: str  # What an inversion depends on: file, device, preset.
    device: str
    store: ModelStore  # Where the inversion's loss comes from, when one is needed.


def _model(
    request: JobRequest, device: str, models: ModelStore, timings: dict[str, float]
) -> _Model:
    preset = request.params.preset
    t0 = time.perf_counter()
    loaded = models.load(_model_ref(request), device)
    _add(timings, "load", time.perf_counter() - t0)
    path = str(loaded.path)
    return _Model(path, loaded.G, f"{path}@{device}|{preset}", device, models)


def _add(timings: dict[str, float], key: str, seconds: float) -> None:
    timings[key] = timings.get(key, 0.0) + seconds


def _session(
    request: JobRequest,
    layer: _LayerView,
    model: _Model,
    needed: Rect,
    framing: Aligner,
    sessions: SessionCache,
    report: Callable[[str, int, int], None],
    should_stop: StopFn,
    timings: dict[str, float],
) -> Session:
    """The session for a crop holding ``needed``: the one named by the request or found in the
    cache, else a new PTI inversion (stored in the cache)."""
    digests: dict[CropBox, str] = {}

    def digest(box: CropBox) -> str:
        if box not in digests:
            digests[box] = crop_digest(layer.rgba, layer.depth, box)
        return digests[box]

    located: list[Framing] = []

    def framed_here() -> Framing:
        if not located:
            t0 = time.perf_counter()
            located.append(framing.locate(layer.rgba, needed, model.G.img_resolution))
            _add(timings, "frame", time.perf_counter() - t0)
        return located[0]

    def accept(s: Session) -> bool:
        """A crop serves these points only if it was framed the way they are framed now: an
        aligned crop only for its own face (a neighbour's aligned square may hold these points
        too, but shows this face off-centre and unaligned), and a plain square not where a
        face is now found (an earlier edit's square around the area, unaligned)."""
        was = s.info.get("framing", SQUARE)
        if isinstance(framing, SquareFraming):  # A model without alignment: no detection.
            return was == SQUARE
        here = framed_here()
        return was == here.method and (was == SQUARE or _same_square(s.box, here.box))

    if request.session is not None:
        try:
            hinted = sessions.get(request.session)
        except UnknownSession:
            hinted = None
        if (
            hinted is not None
            and hinted.model_key == model.key
            and (hinted.box.layer_width, hinted.box.layer_height) == layer.size
            and hinted.box.holds(needed)
            and digest(hinted.box) == hinted.digest
            and accept(hinted)
        ):
            return hinted
    framed = framed_here()
    box = framed.box
    try:  # This very crop, inverted before (a subject's face box need not hold `needed`).
        return sessions.get(session_id(model.key, digest(box)))
    except UnknownSession:
        pass
    found = sessions.find(
        model.key, layer.size, needed, digest, max_side=2 * box.side, accept=accept
    )
    if found is not None:
        return found

    log.info("framing %s for %s: box %s", framed.method, needed, box)
    t0 = time.perf_counter()
    target = model_view(layer.rgba, layer.depth, box)
    _add(timings, "crop", time.perf_counter() - t0)

    t0 = time.perf_counter()
    try:
        inv = pti.invert(
            model.G,
            _to_tensor(target, model.device),
            model.store.loss(model.device),
            pti.preset(request.params.preset),
            on_step=report,
            should_stop=should_stop,
        )
    except pti.InversionCancelled as e:
        raise EditCancelled("cancelled during inversion; nothing was changed") from e
    with torch.no_grad():
        recon = inv.generator.synthesis.run(inv.ws, noise_mode="const").img
    _add(timings, "invert", time.perf_counter() - t0)
    d = digest(box)
    session = Session(
        id=session_id(model.key, d),
        model_key=model.key,
        box=box,
        digest=d,
        generator=inv.generator,
        pivot=inv.ws,
        target=target,
        recon=_to_image(recon),
        info={
            "psnr": inv.psnr,
            "distance": inv.distance,
            "loss": inv.loss_name,
            "steps": inv.steps,
            "framing": framed.method,
        },
    )
    sessions.put(session)
    return session


def _same_square(a: CropBox, b: CropBox) -> bool:
    """Whether two aligned boxes frame the same face (centres and sides within a quarter of
    a side; neighbouring faces' squares lie about a face apart)."""
    return math.dist(a.centre, b.centre) <= 0.25 * b.side and abs(a.side - b.side) <= 0.25 * b.side


def _distances(a: Sequence[Point], b: Sequence[Point]) -> list[float]:
    return [math.hypot(tx - x, ty - y) for (x, y), (tx, ty) in zip(a, b, strict=True)]


# ----------------------------------------------------------------------------------------------
# Drag and composite.


def _model_points(box: CropBox, points: Sequence[Point]) -> list[Point]:
    hi = box.resolution - 1
    return [(min(max(u, 0.0), hi), min(max(v, 0.0), hi)) for u, v in box.to_model(points)]


def _preview(
    session: Session,
    layer: _LayerView,
    img: torch.Tensor,
    size: int,
) -> tuple[bytes, tuple[int, int, int, int]]:
    """A generator-blend drag preview and where it lies in the layer (x, y, w, h). A turned
    crop's preview is drawn upright onto its bounding square, over the layer's own pixels there
    (made once per session and size, and kept with it)."""
    box = session.box
    pixels = img.numpy()
    if box.angle == 0.0:
        return preview_jpeg(pixels, size), (box.x0, box.y0, box.side, box.side)
    rect = box.rect
    n = max(1, min(size, math.ceil(rect.width * box.scale)))
    shown = preview_on_rect(
        pixels[:, :, :3].astype(np.float32) / 255.0, _backdrop(session, layer, n)[:, :, :3], box
    )
    rgb = np.clip(np.rint(shown * 255.0), 0, 255).astype(np.uint8)
    return preview_jpeg(rgb, size), (rect.x0, rect.y0, rect.width, rect.height)


def _backdrop(session: Session, layer: _LayerView, n: int) -> np.ndarray:
    """The layer over the box's bounding square at ``n`` pixels a side, float32 RGBA (alpha
    1: flattened over grey as the model sees it); made once per session and size."""
    backdrop = session.backdrops.get(n)
    if backdrop is None:
        rect = session.box.rect
        w, h = layer.size
        rgb = model_view(layer.rgba, layer.depth, CropBox(rect.x0, rect.y0, rect.width, w, h, n))
        backdrop = np.dstack([rgb, np.ones(rgb.shape[:2], np.float32)])
        session.backdrops[n] = backdrop
    return backdrop


def _photo_preview(
    session: Session,
    layer: _LayerView,
    image: torch.Tensor,
    field: MotionField,
    size: int,
) -> tuple[bytes, tuple[int, int, int, int]]:
    """What the photo-true result will look like now: the same warp as the final composite, run
    on the layer's bounding square of the box shrunk to the preview's size."""
    box = session.box
    rect = box.rect
    n = max(8, min(size, rect.width))
    k = n / rect.width
    small = _backdrop(session, layer, n)
    small_box = replace(
        box,
        x0=round((box.x0 - rect.x0) * k),
        y0=round((box.y0 - rect.y0) * k),
        side=max(1, round(box.side * k)),
        layer_width=n,
        layer_height=n,
    )
    small_sel = None
    if layer.selection is not None:
        w, h = layer.size
        sel = layer_to_model(
            layer.selection,
            CropBox(rect.x0, rect.y0, rect.width, w, h, n),
            lambda a: a.astype(np.float32),
            pad_mode="constant",
        )
        small_sel = np.clip(np.rint(sel), 0, 255).astype(np.uint8)
    shown = np.array(small)
    if small_sel is None or small_sel.any():
        patch = warp_composite(
            small,
            "f32",
            _layer_field(field, small_box),
            _toned(session, image),
            small_sel,
            feather=FEATHER,
        )
        shown[patch.y : patch.y + patch.height, patch.x : patch.x + patch.width] = patch.pixels
    rgb = np.clip(np.rint(shown[:, :, :3] * 255.0), 0, 255).astype(np.uint8)
    return preview_jpeg(rgb, size), (rect.x0, rect.y0, rect.width, rect.height)


class _Tracker:
    """All pairs' current handles and distances (layer pixels), for progress reports while
    the groups are edited one after another, and how each pair ended."""

    def __init__(self, layer: _LayerView, on_progress: ProgressFn, total: int) -> None:
        self.points = list(layer.handles)
        self.targets = layer.targets
        self.on_progress = on_progress
        self.total = total
        self.converged = True
        self.worse: list[int] = []

    def update(self, pairs: Sequence[int], points: Sequence[Point]) -> None:
        for i, p in zip(pairs, points, strict=True):
            self.points[i] = (float(p[0]), float(p[1]))

    @property
    def distances(self) -> list[float]:
        return _distances(self.points, self.targets)

    def invert_step(self, phase: str, step: int, total: int) -> None:
        self.on_progress(
            ProgressEvent(
                phase=phase,
                step=step,
                total=total,
                points=list(self.points),
                distances=self.distances,
            )
        )

    def drag_step(
        self,
        step: int,
        preview: bytes | None,
        crop: tuple[int, int, int, int] | None,
    ) -> None:
        self.on_progress(
            ProgressEvent(
                phase="drag",
                step=step,
                total=self.total,
                points=list(self.points),
                distances=self.distances,
                preview=preview,
                crop=crop,
            )
        )


@dataclass(frozen=True)
class _Dragged:
    """One group's drag, in model pixels: the engine's result and where each handle's content
    is to lie in the result (its target when the drag got there, else where it got)."""

    result: DragResult
    landing: list[Point]
    stop: float  # The stop distance the drag used, model pixels.


def stop_distance(box: CropBox) -> float:
    """The drag's stop distance in model pixels for this crop (see the module doc)."""
    paper = pixel_radii(DragParams(), box.resolution).stop
    return max(min(STOP_LAYER_PX * box.scale, paper), STOP_FLOOR)


def _drag(
    session: Session,
    layer: _LayerView,
    pairs: Sequence[int],
    params: Params,
    lr: float,
    tracker: _Tracker,
    should_stop: StopFn,
) -> _Dragged:
    box = session.box
    handles = _model_points(box, [layer.handles[i] for i in pairs])
    targets = _model_points(box, [layer.targets[i] for i in pairs])
    mask = None
    if layer.selection is not None:
        m = layer_to_model(
            layer.selection, box, lambda a: a.astype(np.float32) / 255.0, pad_mode="constant"
        )
        mask = torch.from_numpy(np.clip(m, 0.0, 1.0))
    stop = stop_distance(box)
    drag_params = DragParams(
        lr=lr,
        mask_lambda=params.mask_lambda,
        max_steps=params.steps,
        subpixel=True,
        stop_pixels=stop,
    )
    engine = DragSession(session.generator, session.pivot, handles, targets, mask, drag_params)
    photo = params.blend == "photo"

    def on_step(report: StepReport) -> None:
        preview, crop = None, None
        if report.preview is not None:
            if photo and report.preview_feature is not None:
                image = report.preview.permute(2, 0, 1)[None].float() / 127.5 - 1.0
                field = _field(
                    engine.start_feature,
                    report.preview_feature,
                    box,
                    list(zip(report.points, engine.start_points, strict=True)),
                )
                preview, crop = _photo_preview(session, layer, image, field, params.preview_size)
            else:
                preview, crop = _preview(session, layer, report.preview, params.preview_size)
        tracker.update(pairs, box.to_layer(report.points))
        tracker.drag_step(report.step, preview, crop)

    result = engine.run(
        max_steps=params.steps,
        on_step=on_step,
        should_stop=should_stop,
        preview_every=params.preview_every,
    )
    if result.cancelled:
        raise EditCancelled("cancelled during the drag; nothing was changed")
    landing = [
        t if photo and d <= stop else p
        for p, t, d in zip(result.points, targets, result.distances, strict=True)
    ]
    tracker.update(pairs, box.to_layer(landing))
    tracker.converged &= result.converged
    for i, start, end in zip(pairs, _distances(handles, targets), result.distances, strict=True):
        if end > start:
            tracker.worse.append(i)
    return _Dragged(result, landing, stop)


def _field(
    f0: torch.Tensor, f1: torch.Tensor, box: CropBox, anchors: list[tuple[Point, Point]]
) -> MotionField:
    return estimate_motion(f0, f1, box.resolution, anchors)


def _layer_field(field: MotionField, box: CropBox) -> LayerField:
    return LayerField(
        flow=field.flow.permute(1, 2, 0).float().cpu().numpy(),
        confidence=field.confidence.float().cpu().numpy(),
        box=box,
    )


def _toned(session: Session, image: torch.Tensor) -> np.ndarray:
    """The dragged image with the photo's tone: the blurred inversion error added back."""
    radius = max(1, round(COLOR_RADIUS * session.box.resolution))
    toned = match_low_frequencies(_to_image(image), session.target, session.recon, radius)
    return np.clip(toned, 0.0, 1.0)


def _composite(session: Session, layer: _LayerView, dragged: _Dragged, blend: str) -> Patch:
    box = session.box
    result = dragged.result
    if blend == "photo":
        assert result.start_feature is not None and result.feature is not None
        anchors = list(zip(dragged.landing, result.start_points, strict=True))
        field = _field(result.start_feature, result.feature, box, anchors)
        return warp_composite(
            layer.rgba,
            layer.depth,
            _layer_field(field, box),
            _toned(session, result.image),
            layer.selection,
            feather=FEATHER,
        )
    image = _to_image(result.image)
    res = box.resolution
    change = change_weight(
        image, session.recon, CHANGE_THRESHOLD, max(1, round(CHANGE_RADIUS * res))
    )
    return composite(
        layer.rgba,
        layer.depth,
        box,
        _toned(session, result.image),
        layer.selection,
        feather=FEATHER,
        change=change,
    )


def _touches(patch: Patch, box: CropBox) -> bool:
    """Whether a later crop would see pixels ``patch`` changed."""
    return not patch.rect.intersect(box.rect).empty


def _apply(work: _LayerView, layer: _LayerView, patch: Patch) -> _LayerView:
    """``work`` with ``patch`` pasted in: a copy of the request's pixels the first time."""
    rgba = np.array(work.rgba) if work.rgba is layer.rgba else work.rgba
    rgba[patch.y : patch.y + patch.height, patch.x : patch.x + patch.width] = patch.pixels
    return replace(work, rgba=rgba)


def _apply_all(
    work: _LayerView, layer: _LayerView, patches: list[Patch], framing: Aligner
) -> _LayerView:
    """``work`` with ``patches`` pasted in, in order. The working layer may change in place, so
    an aligner that remembers what it found on it (by the array's identity) must look again."""
    for p in patches:
        work = _apply(work, layer, p)
    framing.forget()
    return work


def _merge(layer: _LayerView, patches: list[Patch]) -> Patch:
    """One patch over the bounding box of ``patches``, pasted in order onto ``layer`` (each
    made on the layer the earlier ones left, so where two overlap the later one is right)."""
    if len(patches) == 1:
        return patches[0]
    rect = patches[0].rect
    for p in patches[1:]:
        rect = rect.union(p.rect)
    out = np.array(layer.rgba[rect.y0 : rect.y1, rect.x0 : rect.x1])
    for p in patches:
        out[p.y - rect.y0 : p.y - rect.y0 + p.height, p.x - rect.x0 : p.x - rect.x0 + p.width] = (
            p.pixels
        )
    return Patch(pixels=out, x=rect.x0, y=rect.y0)


def _groups(layer: _LayerView, model: _Model, framing: Aligner) -> list[Group]:
    res = model.G.img_resolution
    return plan_groups(
        layer.handles,
        layer.targets,
        layer.selection,
        layer.size,
        lambda need: framing.locate(layer.rgba, need, res),
    )


def run_edit(
    request: JobRequest,
    *,
    device: str,
    sessions: SessionCache,
    models: ModelStore,
    on_progress: ProgressFn,
    should_stop: StopFn,
    aligner: Aligner | None = None,
) -> JobResult:
    """Drag the request's handles to their targets on its layer; return the changed patch.

    Pairs far apart are edited one after another, each group in its own crop (see
    `gimp_draggan.edit.groups`); the result's session is the first group's. ``models`` turns the
    request's model into its generator; ``aligner`` frames the crops (default: what the model
    calls for, `ModelStore.aligner`)."""
    start = time.perf_counter()
    timings: dict[str, float] = {}
    layer = _read(request)
    model = _model(request, device, models, timings)
    framing = models.aligner(_model_ref(request)) if aligner is None else aligner
    tracker = _Tracker(layer, on_progress, request.params.steps)
    lr = models.drag_lr(_model_ref(request)) if request.params.lr is None else request.params.lr
    patches: list[Patch] = []
    session_ids: list[str] = []
    steps = 0
    t0 = time.perf_counter()
    groups = _groups(layer, model, framing)
    _add(timings, "frame", time.perf_counter() - t0)
    work = layer  # The layer as the edits so far left it (a copy only once crops overlap).
    pending: list[Patch] = []  # Patches not pasted into `work` yet.

    def session_for(group: Group, on: _LayerView) -> Session:
        return _session(
            request,
            on,
            model,
            group.needed,
            framing,
            sessions,
            tracker.invert_step,
            should_stop,
            timings,
        )

    for n, group in enumerate(groups):
        session = session_for(group, work)
        if any(_touches(p, session.box) for p in pending):
            # A hinted or cached crop, larger than planned, reaches over an earlier edit: look
            # again on the layer as that edit left it (else its patch would paste it away).
            work, pending = _apply_all(work, layer, pending, framing), []
            session = session_for(group, work)
        session_ids.append(session.id)
        t0 = time.perf_counter()
        dragged = _drag(session, work, group.pairs, request.params, lr, tracker, should_stop)
        steps += dragged.result.steps
        _add(timings, "drag", time.perf_counter() - t0)
        t0 = time.perf_counter()
        patches.append(_composite(session, work, dragged, request.params.blend))
        pending.append(patches[-1])
        if any(_touches(patches[-1], later.box) for later in groups[n + 1 :]):
            work, pending = _apply_all(work, layer, pending, framing), []
        _add(timings, "composite", time.perf_counter() - t0)
    patch = _merge(work, patches)
    timings["total"] = time.perf_counter() - start
    return JobResult(
        patch=to_bytes(patch.pixels),
        x=patch.x,
        y=patch.y,
        width=patch.width,
        height=patch.height,
        depth=request.layer.depth,
        points=list(tracker.points),
        distances=tracker.distances,
        steps=steps,
        session=session_ids[0],
        timings=timings,
        converged=tracker.converged,
        worse=sorted(tracker.worse),
    )


def run_invert(
    request: JobRequest,
    *,
    device: str,
    sessions: SessionCache,
    models: ModelStore,
    on_progress: ProgressFn,
    should_stop: StopFn,
    aligner: Aligner | None = None,
) -> JobResult:
    """Prepare the sessions a later drag on this layer will use (the daemon's `invert` op): the
    crops a drag of these pairs would use, or with no pairs one crop around the selection (the
    whole layer without one). The patch is empty; the session is the first crop's. ``aligner``
    as in `run_edit`; without points or a selection: the largest face framed as FFHQ for a face
    model, else the whole layer as one plain square."""
    start = time.perf_counter()
    timings: dict[str, float] = {}
    layer = _read(request)
    model = _model(request, device, models, timings)
    tracker = _Tracker(layer, on_progress, 0)
    framing = models.aligner(_model_ref(request)) if aligner is None else aligner
    if layer.handles:
        needs = [g.needed for g in _groups(layer, model, framing)]
    else:
        if layer.selection is None:
            whole = SquareFraming(0)
            framing = SubjectFraming(framing, whole) if isinstance(framing, FaceAligner) else whole
        needs = [_whole(layer)]
    ids = [
        _session(
            request,
            layer,
            model,
            need,
            framing,
            sessions,
            tracker.invert_step,
            should_stop,
            timings,
        ).id
        for need in needs
    ]
    timings["total"] = time.perf_counter() - start
    return JobResult(
        patch=b"",
        x=0,
        y=0,
        width=0,
        height=0,
        depth=request.layer.depth,
        points=list(layer.handles),
        distances=tracker.distances,
        steps=0,
        session=ids[0],
        timings=timings,
    )
