"""What the daemon's worker runs: the photo pipeline, the seed-form drag, model downloads.

The wire names models only; the executor's `ModelStore` (`gimp_draggan.models.store`) maps a name
to a file (a registry entry, or a file the operator named on the command line: `serve --model
FILE`, listed under its stem), to its loaded generator, and to the crop framing and drag step the
model calls for. A job never sees a path from the wire. All torch work happens here, in the worker
thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from gimp_draggan import threads
from gimp_draggan.draggan.checkpoint import CheckpointError
from gimp_draggan.draggan.drag import DragParams, DragSession
from gimp_draggan.draggan.networks import seed_ws, to_uint8
from gimp_draggan.edit.pipeline import EditCancelled, run_edit, run_invert
from gimp_draggan.edit.pixels import preview_jpeg
from gimp_draggan.edit.sessions import SessionCache, UnknownSession
from gimp_draggan.models import registry
from gimp_draggan.models.download import DownloadStopped, download
from gimp_draggan.models.store import ModelStore
from gimp_draggan.service.worker import ProgressFn, StopFn
from gimp_draggan_plugin import protocol as P

log = logging.getLogger("gimp_draggan.service.executor")


def operator_models(files: list[str]) -> dict[str, Path]:
    """`serve --model FILE` arguments that are files -> {stem name: path}."""
    out: dict[str, Path] = {}
    for text in files:
        path = Path(text).expanduser()
        if path.is_file():
            name = path.name.split(".")[0].lower()
            P.check_name(name, "model file stem")
            out[name] = path.resolve()
    return out


class PipelineExecutor:
    """Runs jobs on one device with a session cache (invert once, drag many)."""

    def __init__(
        self,
        device: str,
        default_model: str | None = None,
        files: dict[str, Path] | None = None,
        cache: str | None = None,
        table: str | None = None,
        threads: int | Literal["auto"] | None = None,
    ) -> None:
        """``threads``: torch threads for each job — a count, "auto" (the cores free when the
        job starts, `gimp_draggan.threads`), or None (leave torch's setting alone). ``files``,
        ``cache`` and ``table`` (None = the packaged models.json) make its `ModelStore`."""
        self.device = device
        self.threads = threads
        self.store = ModelStore(files, cache, table)
        self.sessions = SessionCache()
        first_file = next(iter(self.store.files), None)
        self.default_model = default_model or first_file or self.store.first_cached()

    # ---- models -------------------------------------------------------------------------------
    def _loaded_badly(self, name: str, exc: Exception) -> P.ProtocolError:
        """Remember that `name`'s file failed to load (until it changes); the job's error."""
        sentence = self.store.loaded_badly(name, exc)
        log.error("%s", sentence)
        return P.ProtocolError(P.ErrorCode.MODEL_DAMAGED, sentence)

    def models(self) -> list[dict[str, Any]]:
        return self.store.listing()

    def info(self) -> dict[str, Any]:
        return {"device": self.device, "default_model": self.default_model, "models": self.models()}

    def check_model(self, name: str | None) -> str:
        name = name or self.default_model
        if name is None:
            raise P.ProtocolError(
                P.ErrorCode.MODEL_NOT_CACHED, "no model is available on this daemon"
            )
        if not self.store.knows(name):
            raise P.ProtocolError(
                P.ErrorCode.UNKNOWN_MODEL,
                f"no model named {name!r}; this daemon has {', '.join(self.store.names())}",
            )
        broken = self.store.damage(name)
        if broken is not None:
            raise P.ProtocolError(P.ErrorCode.MODEL_DAMAGED, broken)
        if not self.store.cached(name):
            raise P.ProtocolError(
                P.ErrorCode.MODEL_NOT_CACHED,
                f"model {name!r} is not downloaded",
                P.hint_for(P.ErrorCode.MODEL_NOT_CACHED, name),
            )
        return name

    def warm(self) -> None:
        """Load the default model onto the device, so the first job does not wait for it."""
        if self.default_model is None:
            return
        start = time.perf_counter()
        name = self.check_model(self.default_model)
        try:
            self.store.load(name, self.device)
        except CheckpointError as exc:
            raise self._loaded_badly(name, exc) from None
        log.info(
            "model %s ready on %s in %.1f s",
            self.default_model,
            self.device,
            time.perf_counter() - start,
        )

    # ---- jobs ---------------------------------------------------------------------------------
    def run(
        self, request: P.JobRequest, on_progress: ProgressFn, should_stop: StopFn
    ) -> P.JobResult:
        name = request.model
        if name is None:
            raise P.ProtocolError(P.ErrorCode.BAD_REQUEST, "no model")
        if self.threads is not None and self.device == "cpu":
            used = threads.apply(None if self.threads == "auto" else self.threads)
            log.info("job %s: %d torch thread(s)", request.id, used)
        try:
            if request.seed is not None:
                return self._seed_drag(self._with_lr(request), name, on_progress, should_stop)
            return self._photo(self._with_lr(request), on_progress, should_stop)
        except CheckpointError as exc:
            raise self._loaded_badly(name, exc) from None

    def _with_lr(self, request: P.JobRequest) -> P.JobRequest:
        """The request with its drag step size chosen: the client's, else the model's (named
        by the registry; an operator's file gets the paper's)."""
        if request.params.lr is not None or request.model is None:
            return request
        lr = self.store.drag_lr(request.model)
        return replace(request, params=replace(request.params, lr=lr))

    def _photo(
        self, request: P.JobRequest, on_progress: ProgressFn, should_stop: StopFn
    ) -> P.JobResult:
        """A photo drag or invert: the request runs as it came (the wire checked it)."""
        run = run_edit if request.op == "drag" else run_invert
        try:
            return run(
                request,
                device=self.device,
                sessions=self.sessions,
                models=self.store,
                on_progress=on_progress,
                should_stop=should_stop,
            )
        except EditCancelled as exc:
            raise P.ProtocolError(P.ErrorCode.CANCELLED, str(exc)) from None
        except UnknownSession as exc:
            raise P.ProtocolError(P.ErrorCode.UNKNOWN_SESSION, str(exc)) from None

    def _seed_drag(
        self, request: P.JobRequest, model: str, on_progress: ProgressFn, should_stop: StopFn
    ) -> P.JobResult:
        start = time.perf_counter()
        G = self.store.load(model, self.device).G
        mask = None
        if request.mask is not None and request.image is not None:
            mask = (request.image.width, request.image.height, request.mask)
        image, result = seed_drag(
            G,
            request.seed or 0,
            list(request.pairs),
            request.params,
            mask,
            self.device,
            on_progress,
            should_stop,
        )
        if result.cancelled:
            raise P.ProtocolError(P.ErrorCode.CANCELLED, "cancelled during the drag")
        h, w = image.shape[:2]
        return P.JobResult(
            session=f"seed-{request.seed}",
            width=w,
            height=h,
            depth="u8",
            patch=rgba_bytes(image),
            points=list(result.points),
            distances=list(result.distances),
            steps=result.steps,
            timings={"total": time.perf_counter() - start},
            converged=result.converged,
        )

    def download(self, name: str, on_progress: ProgressFn, should_stop: StopFn) -> None:
        """Download a registry model; progress = bytes of the partial file (polled)."""
        entry = self.store.entry(name)
        if entry is None or not entry.downloadable:
            raise P.ProtocolError(P.ErrorCode.UNKNOWN_MODEL, f"{name!r} has no download link")
        dest = registry.model_path(entry, self.store.cache)
        part = dest.with_name(dest.name + ".part")
        failure: list[BaseException] = []

        def fetch() -> None:
            try:
                download(
                    entry.urls,
                    dest,
                    entry.sha256,
                    entry.size_bytes,
                    entry.sha256_source,
                    show_progress=False,
                    expect_bytes=entry.expected_bytes,
                    should_stop=should_stop,
                )
            except DownloadStopped:
                pass  # The job was cancelled: the worker reports that; the part file stays.
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=fetch, name=f"download-{name}", daemon=True)
        thread.start()
        total = entry.expected_bytes or 0  # the pinned size, else the table's estimate
        while thread.is_alive() and not should_stop():
            thread.join(0.25)
            for path in (part, dest):
                try:
                    done = path.stat().st_size
                    break
                except OSError:
                    done = 0
            on_progress(P.ProgressEvent("download", done, max(total, done)))
        thread.join()  # A stopped download ends within one block: never two writers of a part.
        if failure:
            raise P.ProtocolError(
                P.ErrorCode.DOWNLOAD_FAILED, f"download of {name} failed: {failure[0]}"
            )

    def recover(self) -> None:
        """After out-of-memory: drop sessions and models, give the memory back."""
        self.sessions.clear()
        self.store.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def seed_drag(
    G: Any,
    seed: int,
    pairs: list[P.Pair],
    params: P.Params,
    mask: tuple[int, int, bytes] | None,
    device: str,
    on_progress: Callable[[P.ProgressEvent], None],
    should_stop: StopFn,
) -> tuple[Any, Any]:
    """The seed form (DragGAN GUI mode): w from `seed` (`seed_ws`) as w+, drag.

    Returns (uint8 [H, W, C] numpy image, DragResult). Points are model pixels."""
    res = G.img_resolution
    mask_t = None
    if mask is not None:
        w, h, data = mask
        if (w, h) != (res, res):
            raise ValueError(f"the mask is {w}x{h}; this model needs {res}x{res}")
        grey = np.frombuffer(data, np.uint8).reshape(h, w).astype(np.float32)
        mask_t = torch.from_numpy(grey / 255.0)  # As `drag --mask` reads a file.
    steps = params.steps
    session = DragSession(
        G,
        seed_ws(G, seed, device),
        [h for h, _ in pairs],
        [t for _, t in pairs],
        mask_t,
        DragParams(
            lr=2e-3 if params.lr is None else params.lr,
            mask_lambda=params.mask_lambda,
            max_steps=steps,
        ),
    )
    size = params.preview_size

    def on_step(report: Any) -> None:
        preview = None if report.preview is None else preview_jpeg(report.preview.numpy(), size)
        on_progress(
            P.ProgressEvent(
                "drag",
                report.step,
                steps,
                list(report.points),
                list(report.distances),
                preview,
                (0, 0, res, res) if preview else None,
            )
        )

    result = session.run(
        max_steps=steps,
        on_step=on_step,
        should_stop=should_stop,
        preview_every=params.preview_every,
    )
    return to_uint8(result.image)[0].numpy(), result


def rgba_bytes(image: Any) -> bytes:
    """uint8 [H, W, 3|4] -> RGBA bytes (opaque when there is no alpha)."""
    if image.shape[2] == 4:
        return image.tobytes()
    alpha = np.full((*image.shape[:2], 1), 255, np.uint8)
    return np.concatenate([image[:, :, :3], alpha], axis=2).tobytes()
