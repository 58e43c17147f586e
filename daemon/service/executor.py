"""What the daemon's worker runs: the photo pipeline, the seed-form drag, model downloads.

The wire names models only; this maps a name to a file: a registry entry, or a file the
operator named on the command line (`serve --model FILE`, listed under its stem). A job never
sees a path from the wire. The name also picks the crop framing: the registry entry's
``"alignment"`` (`gimp_draggan.edit.align.aligner_for`); an operator's file gets the plain square.
All torch work happens here, in the worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gimp_draggan import threads
from gimp_draggan.service.worker import ProgressFn, StopFn
from gimp_draggan_plugin import protocol as P

if TYPE_CHECKING:
    from gimp_draggan.edit.align import Aligner

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
        job starts, `gimp_draggan.threads`), or None (leave torch's setting alone)."""
        from gimp_draggan.edit.sessions import SessionCache

        self.device = device
        self.threads = threads
        self.files = dict(files or {})
        self.cache = cache
        self.table = table  # Model table file; None = the packaged models.json.
        self.sessions = SessionCache()
        self._failed: dict[str, tuple[tuple[int, int] | None, str]] = {}  # path -> (stamp, why)
        self._aligners: dict[str, Aligner] = {}  # Kept: they remember framings of recent layers.
        self.default_model = default_model or next(iter(self.files), None) or self._first_cached()

    # ---- models -------------------------------------------------------------------------------
    def _table(self) -> dict[str, Any]:
        from gimp_draggan.models import registry

        return {n: e for n, e in registry.load_table(self.table).items() if e.kind == "generator"}

    def _first_cached(self) -> str | None:

        for name in self._table():
            if self._cached(name):
                return name
        return None

    def _damage(self, name: str) -> str | None:
        """Why model `name`'s file cannot be used, with the fix; None when it looks whole. A
        load that failed is remembered until the file changes; else the cheap look."""
        from gimp_draggan.models import registry
        from gimp_draggan.models.modelcheck import damaged_sentence, problem

        path = Path(self._model_ref(name))
        stamp, why = self._failed.get(str(path), (None, None))
        if why is not None and stamp == _stamp(path):
            return why
        if name in self.files:
            found = problem(path)
            return None if found is None else damaged_sentence(path, found, None)
        return registry.damage(self._table()[name], self.cache)

    def _cached(self, name: str) -> bool:
        """The model's file is present and looks whole (and did not fail to load)."""
        return Path(self._model_ref(name)).is_file() and self._damage(name) is None

    def _loaded_badly(self, name: str, exc: Exception) -> P.ProtocolError:
        """Remember that `name`'s file failed to load (until it changes); the job's error."""
        from gimp_draggan.models.modelcheck import damaged_sentence

        path = Path(self._model_ref(name))
        why = str(exc).removeprefix(f"{path}: ")
        sentence = damaged_sentence(path, why, None if name in self.files else name)
        self._failed[str(path)] = (_stamp(path), sentence)
        log.error("%s", sentence)
        return P.ProtocolError(P.ErrorCode.MODEL_DAMAGED, sentence)

    def models(self) -> list[dict[str, Any]]:
        rows = [
            {
                "name": n,
                "resolution": _file_resolution(p),
                "description": f"file {p.name}",
                "domain": "",
                "downloadable": False,
                "licence": "",  # the operator's own file: its terms are theirs to know
                "licence_short": "",
                "download_bytes": None,
            }
            for n, p in self.files.items()
        ]
        rows += [
            {
                "name": n,
                "resolution": e.resolution,
                "description": e.description,
                "domain": e.domain,
                "downloadable": e.downloadable,
                "licence": e.licence,
                "licence_short": e.licence_short,
                "download_bytes": e.expected_bytes,
            }
            for n, e in self._table().items()
        ]
        for row in rows:
            name = str(row["name"])
            broken = self._damage(name)
            row["cached"] = broken is None and Path(self._model_ref(name)).is_file()
            if broken is not None:
                row["damaged"] = broken
        return rows

    def info(self) -> dict[str, Any]:
        return {"device": self.device, "default_model": self.default_model, "models": self.models()}

    def check_model(self, name: str | None) -> str:

        name = name or self.default_model
        if name is None:
            raise P.ProtocolError(
                P.ErrorCode.MODEL_NOT_CACHED, "no model is available on this daemon"
            )
        table = self._table()
        if name not in self.files and name not in table:
            raise P.ProtocolError(
                P.ErrorCode.UNKNOWN_MODEL,
                f"no model named {name!r}; this daemon has {', '.join([*self.files, *table])}",
            )
        broken = self._damage(name)
        if broken is not None:
            raise P.ProtocolError(P.ErrorCode.MODEL_DAMAGED, broken)
        if not self._cached(name):
            raise P.ProtocolError(
                P.ErrorCode.MODEL_NOT_CACHED,
                f"model {name!r} is not downloaded",
                P.hint_for(P.ErrorCode.MODEL_NOT_CACHED, name),
            )
        return name

    def _model_ref(self, name: str) -> str:
        """The file the loaders open: the operator's, or the registry entry's in this cache."""
        from gimp_draggan.models import registry

        if name in self.files:
            return str(self.files[name])
        return str(registry.model_path(self._table()[name], self.cache))

    def warm(self) -> None:
        """Load the default model onto the device, so the first job does not wait for it."""
        if self.default_model is None:
            return
        from gimp_draggan.draggan.checkpoint import CheckpointError

        start = time.perf_counter()
        name = self.check_model(self.default_model)
        try:
            self._generator(self._model_ref(name))
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
        from gimp_draggan.draggan.checkpoint import CheckpointError

        if request.model is None:
            raise P.ProtocolError(P.ErrorCode.BAD_REQUEST, "no model")
        model = self._model_ref(request.model)
        if self.threads is not None and self.device == "cpu":
            used = threads.apply(None if self.threads == "auto" else self.threads)
            log.info("job %s: %d torch thread(s)", request.id, used)
        try:
            if request.seed is not None:
                request = self._with_lr(request)
                return self._seed_drag(request, model, on_progress, should_stop)
            return self._photo(
                self._with_lr(request),
                model,
                self._aligner(request.model),
                on_progress,
                should_stop,
            )
        except CheckpointError as exc:
            raise self._loaded_badly(request.model, exc) from None

    def _with_lr(self, request: P.JobRequest) -> P.JobRequest:
        """The request with its drag step size chosen: the client's, else the model's (named
        by the registry; an operator's file gets the paper's)."""
        from gimp_draggan.edit.pipeline import PAPER_LR, drag_lr

        if request.params.get("lr") is not None or request.model is None:
            return request
        lr = PAPER_LR if request.model in self.files else drag_lr(request.model)
        return replace(request, params={**request.params, "lr": lr})

    def _aligner(self, name: str) -> Aligner:
        """How the model wants its crops framed: its table entry's ``"alignment"``; an
        operator's model file gets the plain square."""
        from gimp_draggan.edit.align import aligner_for

        if name not in self._aligners:
            entry = None if name in self.files else self._table().get(name)
            self._aligners[name] = aligner_for(None if entry is None else entry.alignment)
        return self._aligners[name]

    def _photo(
        self,
        request: P.JobRequest,
        model: str,
        aligner: Aligner,
        on_progress: ProgressFn,
        should_stop: StopFn,
    ) -> P.JobResult:
        from gimp_draggan.edit.pipeline import EditCancelled, run_edit, run_invert
        from gimp_draggan.edit.sessions import UnknownSession
        from gimp_draggan.edit.types import EditParams, EditRequest, Progress

        if request.image is None or request.pixels is None:
            raise P.ProtocolError(P.ErrorCode.BAD_REQUEST, "a photo job needs pixels")
        edit = EditRequest(
            width=request.image.width,
            height=request.image.height,
            pixels=request.pixels,
            depth=request.image.depth,
            pairs=list(request.pairs),
            model=model,
            mask=request.mask,
            params=EditParams(**request.params),
            session=request.session,
        )

        def progress(p: Progress) -> None:
            on_progress(
                P.ProgressEvent(
                    p.phase, p.step, p.total, list(p.points), list(p.distances), p.preview, p.crop
                )
            )

        run = run_edit if request.op == "drag" else run_invert
        try:
            r = run(
                edit,
                device=self.device,
                sessions=self.sessions,
                on_progress=progress,
                should_stop=should_stop,
                aligner=aligner,
            )
        except EditCancelled as exc:
            raise P.ProtocolError(P.ErrorCode.CANCELLED, str(exc)) from None
        except UnknownSession as exc:
            raise P.ProtocolError(P.ErrorCode.UNKNOWN_SESSION, str(exc)) from None
        return P.JobResult(
            session=r.session,
            x=r.x,
            y=r.y,
            width=r.width,
            height=r.height,
            depth=r.depth,
            patch=r.patch,
            points=list(r.points),
            distances=list(r.distances),
            steps=r.steps,
            timings=dict(r.timings),
            converged=r.converged,
            worse=list(r.worse),
        )

    def _generator(self, path: str) -> Any:
        """The generator in file `path` (from `_model_ref`), loaded once per device."""
        from gimp_draggan.draggan.checkpoint import load_generator

        return self.sessions.resource(
            f"generator:{path}@{self.device}",
            lambda: load_generator(path).to(self.device).eval().requires_grad_(False),
        )

    def _seed_drag(
        self, request: P.JobRequest, model: str, on_progress: ProgressFn, should_stop: StopFn
    ) -> P.JobResult:
        start = time.perf_counter()
        G = self._generator(model)
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
        from gimp_draggan.models import registry
        from gimp_draggan.models.download import download

        entry = self._table().get(name)
        if entry is None or not entry.downloadable:
            raise P.ProtocolError(P.ErrorCode.UNKNOWN_MODEL, f"{name!r} has no download link")
        dest = registry.model_path(entry, self.cache)
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
                )
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
        if failure:
            raise P.ProtocolError(
                P.ErrorCode.DOWNLOAD_FAILED, f"download of {name} failed: {failure[0]}"
            )

    def recover(self) -> None:
        """After out-of-memory: drop sessions and models, give the memory back."""
        self.sessions.clear()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def _stamp(path: Path) -> tuple[int, int] | None:
    """(size, mtime) of a file, to notice that it was replaced; None when it is gone."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _file_resolution(path: Path) -> int | None:
    """Resolution of a project-format checkpoint from its JSON (cheap); None for pickles."""
    if path.suffix != ".safetensors":
        return None
    from gimp_draggan.draggan.checkpoint import read_config

    try:
        return int(read_config(path)[0].img_resolution)
    except (OSError, ValueError):
        return None


def seed_drag(
    G: Any,
    seed: int,
    pairs: list[P.Pair],
    params: dict[str, Any],
    mask: tuple[int, int, bytes] | None,
    device: str,
    on_progress: Callable[[P.ProgressEvent], None],
    should_stop: StopFn,
) -> tuple[Any, Any]:
    """The seed form (DragGAN GUI mode): w from `seed` (`seed_ws`) as w+, drag.

    Returns (uint8 [H, W, C] numpy image, DragResult). Points are model pixels."""
    import numpy as np
    import torch

    from gimp_draggan.draggan.drag import DragParams, DragSession
    from gimp_draggan.draggan.networks import seed_ws, to_uint8
    from gimp_draggan.edit.pixels import preview_jpeg

    res = G.img_resolution
    mask_t = None
    if mask is not None:
        w, h, data = mask
        if (w, h) != (res, res):
            raise ValueError(f"the mask is {w}x{h}; this model needs {res}x{res}")
        grey = np.frombuffer(data, np.uint8).reshape(h, w).astype(np.float32)
        mask_t = torch.from_numpy(grey / 255.0)  # As `drag --mask` reads a file.
    steps = int(params.get("steps", 200))
    session = DragSession(
        G,
        seed_ws(G, seed, device),
        [h for h, _ in pairs],
        [t for _, t in pairs],
        mask_t,
        DragParams(
            lr=params.get("lr", 2e-3), mask_lambda=params.get("mask_lambda", 20.0), max_steps=steps
        ),
    )
    size = int(params.get("preview_size", 256))

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
        preview_every=int(params.get("preview_every", 0)),
    )
    return to_uint8(result.image)[0].numpy(), result


def rgba_bytes(image: Any) -> bytes:
    """uint8 [H, W, 3|4] -> RGBA bytes (opaque when there is no alpha)."""
    import numpy as np

    if image.shape[2] == 4:
        return image.tobytes()
    alpha = np.full((*image.shape[:2], 1), 255, np.uint8)
    return np.concatenate([image[:, :, :3], alpha], axis=2).tobytes()
