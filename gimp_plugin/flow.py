"""One DragGAN Drag run, from gathered inputs to the finished layer, GIMP kept behind `Host`.

The entry file reads the layer, path and selection through GIMP and implements `Host` (progress
bar, preview layer, result layer, yes/no question); everything else — reaching the daemon,
offering to start it, the request, progress text, error sentences — happens here, testable
without GIMP.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from . import launcher, models, protocol, settings, texts
from .client import Client, DaemonError

Box = tuple[int, int, int, int]  # x, y, width, height in layer pixels


class PluginError(Exception):
    """Ends the run; str() is one sentence for the person saying what to do."""


@dataclass(frozen=True)
class LayerData:
    width: int
    height: int
    depth: str  # "u8" | "u16" | "f32"
    pixels: bytes  # RGBA, row-major

    def __post_init__(self) -> None:
        need = self.width * self.height * 4 * protocol.DEPTHS[self.depth]
        if len(self.pixels) != need:
            raise ValueError(
                f"layer pixels: {len(self.pixels)} bytes, {self.width}x"
                f"{self.height} {self.depth} RGBA needs {need}"
            )


@dataclass(frozen=True)
class Options:
    model: str = ""  # "" = the daemon's default model.
    steps: int = 200
    mask_strength: float = 20.0  # The DragGAN mask term's weight (lambda).
    preset: str = "fast"  # Inversion quality: "fast" | "quality".
    preview_every: int = 10  # Drag steps between live previews; 0 = none.

    def params(self) -> protocol.Params:
        return protocol.Params(
            steps=self.steps,
            mask_lambda=self.mask_strength,
            preset=self.preset,
            preview_every=self.preview_every,
        )


class Host(Protocol):
    """What the flow needs from GIMP."""

    interactive: bool

    def progress(self, text: str, fraction: float) -> None: ...

    def preview(self, jpeg: bytes, box: Box) -> None: ...

    def finish(self, result: protocol.JobResult) -> None: ...

    def discard(self) -> None: ...

    def confirm(self, question: str) -> bool: ...

    def notice(self, text: str) -> None: ...


def visible_part(crop: Box, width: int, height: int) -> tuple[Box, Box] | None:
    """Where a preview of `crop` (which may stick out of the layer) lands on a `width` x `height`
    layer: (box on the layer, same box relative to the crop), or None if it misses the layer."""
    x, y, w, h = crop
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, width), min(y + h, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1 - x0, y1 - y0), (x0 - x, y0 - y, x1 - x0, y1 - y0)


def describe(exc: BaseException, address: str, model: str = "") -> str:
    """Any failure of a run as one sentence for the person."""
    if isinstance(exc, PluginError):
        return str(exc)
    if isinstance(exc, DaemonError):
        return texts.error_sentence(exc.code, exc.message, address, model, exc.hint)
    if isinstance(exc, launcher.LaunchError):
        return f"Could not start the DragGAN daemon: {exc}."
    if isinstance(exc, ConnectionError):
        return texts.error_sentence(protocol.ErrorCode.NOT_RUNNING, str(exc), address, model)
    if isinstance(exc, ImportError):
        return texts.error_sentence(protocol.ErrorCode.TRANSPORT_MISSING, str(exc), address, model)
    return (
        f"The plug-in failed unexpectedly ({type(exc).__name__}: {exc}). Please report it "
        "with the output of `gimp-draggan doctor`."
    )


def reach_daemon(
    host: Host, client: Client, config: settings.Settings, start_timeout_s: float = 120.0
) -> dict[str, Any]:
    """`hello` from the daemon; if a local one is not running, offer (interactively) to start it."""
    try:
        return client.hello("gimp-plugin")
    except DaemonError as exc:
        if exc.code not in protocol.UNREACHABLE:
            raise
        failure = exc
    argv = settings.serve_argv(config)
    if not (host.interactive and protocol.is_loopback(client.address) and argv):
        raise failure
    shown = " ".join(argv)
    if not host.confirm(
        f"The DragGAN daemon is not running at {client.address}.\n\nStart it now?\n({shown})"
    ):
        raise failure
    host.progress("Starting the DragGAN daemon\u2026", 0.0)
    proc = launcher.start(argv)
    hello: dict[str, Any] = {}

    def ping() -> bool:
        try:
            hello.update(client.hello("gimp-plugin"))
        except DaemonError:
            return False
        return True

    launcher.wait_ready(
        proc,
        ping,
        start_timeout_s,
        on_wait=lambda s: host.progress(f"Starting the DragGAN daemon\u2026 {s:.0f} s", 0.0),
    )
    return hello


def event_handler(
    host: Host, note: str = "", now: Callable[[], float] = time.monotonic
) -> Callable[[Any], None]:
    """Turns the daemon's queued/progress events into GIMP progress and live previews. `note`
    (e.g. which region changes) follows every progress text; a drag that began without any
    inversion says it reuses the earlier one."""
    inverted = False
    clock = texts.StepClock(now)

    def on_event(event: Any) -> None:
        nonlocal inverted
        if isinstance(event, protocol.QueuedEvent):
            host.progress(texts.queued_text(event.position), 0.0)
            return
        inverted = inverted or event.phase == "invert"
        left = clock.update(event.phase, event.step, event.total)
        text = texts.progress_text(event.phase, event.step, event.total, event.distances, left)
        extra = [texts.REUSED_NOTE] if event.phase == "drag" and not inverted else []
        host.progress(
            " \u00b7 ".join([text, *extra, *([note] if note else [])]),
            texts.progress_fraction(event.phase, event.step, event.total),
        )
        if event.preview and event.crop:
            x, y, width, height = (int(v) for v in event.crop)
            host.preview(event.preview, (x, y, width, height))

    return on_event


def fetch_model(
    host: Host, client: Client, hello: dict[str, Any], name: str
) -> dict[str, Any] | None:
    """A picked model the daemon has not downloaded yet but can fetch: ask, then download it
    through the daemon with the progress bar (GIMP's Cancel ends the plug-in: the daemon sees
    the connection drop and stops waiting; the next try resumes the partial file). Declined, or
    a non-interactive run (a script never starts a download of hundreds of MB): the sentence
    with the command. Anything else about the model is left to the drag's own error.
    Returns the daemon's `models` reply after a download (the models as they are now)."""
    model = models.find(hello, name) if name else None
    if model is None or not model.offer_download or model.damaged:
        return None
    if not (host.interactive and host.confirm(models.download_question(model))):
        raise PluginError(
            texts.error_sentence(
                protocol.ErrorCode.MODEL_NOT_CACHED,
                f"the model {name!r} is not downloaded yet",
                client.address,
                name,
            )
        )
    host.progress(texts.download_text(name, 0, model.download_bytes or 0), 0.0)

    def on_event(event: Any) -> None:
        if isinstance(event, protocol.QueuedEvent):
            host.progress(texts.queued_text(event.position), 0.0)
            return
        host.progress(
            texts.download_text(name, event.step, event.total),
            texts.progress_fraction("download", event.step, event.total),
        )

    return client.models(action="download", name=name, on_event=on_event)


def run(
    host: Host,
    client: Client,
    config: settings.Settings,
    layer: LayerData,
    pairs: list[protocol.Pair],
    mask: bytes | None,
    options: Options,
    plugin_dir: Path | None = None,
) -> protocol.JobResult:
    """Reach the daemon, fetch the picked model if asked to, drag, hand the result to the host;
    on any failure the host discards what it showed and a PluginError says what to do.
    `plugin_dir`: where the Model dropdown's table lives, kept in step with the daemon."""
    try:
        hello = reach_daemon(host, client, config)
        if plugin_dir is not None:
            models.sync(plugin_dir, hello)
        fetched = fetch_model(host, client, hello, options.model)
        if fetched is not None and plugin_dir is not None:
            models.sync(plugin_dir, fetched)
        note = (
            "" if mask is not None else texts.region_note(texts.model_domain(hello, options.model))
        )
        host.progress(
            " \u00b7 ".join(filter(None, [texts.progress_text("invert", 0, 0), note])), 0.0
        )
        request = protocol.JobRequest.photo(
            layer.pixels,
            layer.width,
            layer.height,
            pairs,
            depth=layer.depth,
            mask=mask,
            model=options.model or None,
            params=options.params(),
        )
        result = client.drag(request, on_event=event_handler(host, note))
        if result.depth != layer.depth:
            raise PluginError(
                f"the daemon sent {result.depth} pixels for a {layer.depth} layer; "
                "update the daemon and the plug-in to the same version"
            )
        host.finish(result)
        if not result.converged:
            host.notice(texts.stopped_short(result))
        return result
    except BaseException as exc:
        host.discard()
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise PluginError(describe(exc, client.address, options.model)) from exc
