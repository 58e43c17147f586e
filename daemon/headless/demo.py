"""`gimp-draggan demo`: the whole product, headless and offline, in well under a minute on a CPU.

It starts a real daemon on a free loopback port (or uses `--daemon ADDR`), sends the bundled
sample photo with two handle -> target pairs and a selection through the same client the GIMP
plug-in uses, and writes what a person wants to see: before/after pictures with the points
drawn and the edited region zoomed, the drag as it happened (GIF and contact sheet from the
daemon's live previews, which show the photo-true result), and a report (steps, distances,
where each handle's content went, timings) as JSON and Markdown.

The sample (`assets/demo_photo.png`) is a real photo: a 320x320 crop of NASA's public-domain
portrait of astronaut Eileen Collins, as scikit-image ships it (`make_sample`); the points and
the selection below belong to it.
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from gimp_draggan.atomic import save_image, write_text
from gimp_draggan.service.executor import PipelineExecutor
from gimp_draggan.service.server import Server, ServerConfig
from gimp_draggan.terminal import ProgressBar
from gimp_draggan_plugin import protocol as P
from gimp_draggan_plugin.client import Client
from gimp_draggan_plugin.protocol import Point

SAMPLE = "assets/demo_photo.png"
SAMPLE_BOX = (96, 0, 416, 320)  # Where the sample lies in scikit-image's astronaut.png.
SAMPLE_SIZE = (320, 320)


@dataclass(frozen=True)
class Frame:
    """One live preview from the daemon: the crop being edited, where it lies, the handles."""

    step: int
    jpeg: bytes
    crop: tuple[int, int, int, int] | None  # x, y, w, h in layer pixels
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Scene:
    """What the demo asks for on the sample: pairs and an elliptic selection (layer px)."""

    pairs: tuple[tuple[Point, Point], ...]
    ellipse: tuple[float, float, float, float]  # centre x, centre y, radius x, radius y
    caption: str


SCENE = Scene(
    pairs=(
        ((109.0, 147.0), (104.0, 140.0)),  # her right mouth corner out and up
        ((149.0, 147.0), (154.0, 140.0)),
    ),  # her left mouth corner out and up
    ellipse=(129.0, 155.0, 65.0, 85.0),
    caption="a wider smile: both mouth corners dragged 8.6 px out and up; only the selected "
    "face may change",
)
ZOOM_BOX = (84, 110, 180, 180)  # The edited region shown enlarged (x0, y0, x1, y1).
ZOOM = 3


@dataclass(frozen=True)
class DemoOptions:
    out: Path = Path("draggan-demo")
    steps: int = 200  # Max drag steps (the stop rule usually ends earlier).
    preset: str = "fast"  # Inversion preset: the photo-true warp needs motion only.
    preview_every: int = 5  # A preview every N drag steps -> GIF frames.
    device: str = "cpu"
    model: str = "embedded"  # Registry name, or a generator file.
    daemon: str | None = None  # Use this running daemon instead of starting one.


@dataclass
class DemoReport:
    model: str
    device: str
    daemon: str
    transport: str
    steps: int
    max_steps: int
    converged: bool
    pairs: list[dict[str, Any]]
    changed_pixels_inside: int
    changed_pixels_outside: int
    mean_change_inside: float
    timings: dict[str, float] = field(default_factory=dict)
    frames: int = 0
    files: list[str] = field(default_factory=list)


# ---- the sample -------------------------------------------------------------------------------
def load_sample() -> Any:
    """The bundled sample as a PIL RGBA image."""
    data = resources.files("gimp_draggan").joinpath(SAMPLE).read_bytes()
    image = Image.open(io.BytesIO(data)).convert("RGBA")
    if image.size != SAMPLE_SIZE:
        raise ValueError(f"{SAMPLE} is {image.size}, expected {SAMPLE_SIZE}; re-install")
    return image


def make_sample() -> Any:
    """Cut the sample from scikit-image's astronaut (how `assets/demo_photo.png` was made)."""
    from skimage import data  # A test dependency: only remaking the sample needs it.

    x0, y0, x1, y1 = SAMPLE_BOX
    return Image.fromarray(data.astronaut()[y0:y1, x0:x1], "RGB")


def selection_mask(width: int, height: int, ellipse: tuple[float, float, float, float]) -> bytes:
    """u8 mask, 255 inside the ellipse (pixel centres), 0 outside."""
    cx, cy, rx, ry = ellipse
    out = bytearray(width * height)
    for y in range(height):
        dy = (y + 0.5 - cy) / ry
        if abs(dy) >= 1:
            continue
        half = rx * math.sqrt(1 - dy * dy)
        x0, x1 = max(0, math.ceil(cx - half - 0.5)), min(width, math.floor(cx + half - 0.5) + 1)
        out[y * width + x0 : y * width + x1] = b"\xff" * max(0, x1 - x0)
    return bytes(out)


# ---- the run ----------------------------------------------------------------------------------
def start_daemon(options: DemoOptions) -> tuple[Any, str]:
    """A real daemon (ROUTER + worker thread) on a free loopback port, in this process."""
    files: dict[str, Path] = {}
    model = options.model
    if Path(model).suffix in (".safetensors", ".pkl") or Path(model).is_file():
        path = Path(model).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"model file {path} does not exist")
        model = path.name.split(".")[0].lower()
        files[model] = path
    executor = PipelineExecutor(options.device, default_model=model, files=files)
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*"), executor)
    return server, server.start()


def _model_name(options: DemoOptions) -> str:
    model = options.model
    if Path(model).suffix in (".safetensors", ".pkl") or Path(model).is_file():
        return Path(model).name.split(".")[0].lower()
    return P.check_name(model)


def run(options: DemoOptions, bar: ProgressBar | None = None) -> DemoReport:
    """Run the demo end to end and write its files into `options.out`."""
    if options.steps < 1 or options.preview_every < 0:
        raise ValueError("steps must be >= 1 and preview-every >= 0")
    bar = bar or ProgressBar()
    wall = time.perf_counter()
    photo = load_sample()
    width, height = photo.size
    mask = selection_mask(width, height, SCENE.ellipse)
    server = None
    if options.daemon:
        address = P.check_address(options.daemon)
    else:
        bar.say("starting a daemon on a free loopback port ...")
        server, address = start_daemon(options)
    frames: list[Frame] = []

    def on_event(ev: Any) -> None:
        if isinstance(ev, P.QueuedEvent):
            bar.say(f"waiting in the daemon's queue (position {ev.position})")
            return
        note = ""
        if ev.phase == "drag" and ev.distances:
            note = f"— {max(ev.distances):.1f} px to go"
            if ev.preview:
                frames.append(Frame(ev.step, ev.preview, ev.crop, tuple(ev.points)))
        bar.update(ev.phase, ev.step, ev.total, note)

    try:
        with Client(address, timeout_s=10.0) as client:
            hello = client.hello(client="gimp-draggan-demo")
            started = time.perf_counter()
            request = P.JobRequest.photo(
                photo.tobytes(),
                width,
                height,
                [(h, t) for h, t in SCENE.pairs],
                mask=mask,
                model=_model_name(options),
                params=P.Params(
                    steps=options.steps,
                    preset=options.preset,
                    preview_every=options.preview_every,
                    preview_size=320,
                ),
            )
            result = client.drag(request, on_event=on_event)
            job_s = time.perf_counter() - started
            transport = client.transport_name
    finally:
        bar.end()
        if server is not None:
            server.stop()
    after = paste_patch(photo, result)
    report = summarise(options, hello, address, transport, photo, after, mask, result)
    report.timings = {
        **{k: round(v, 3) for k, v in result.timings.items()},
        "job_round_trip": round(job_s, 3),
    }
    report.frames = len(frames)
    report.timings["wall"] = round(time.perf_counter() - wall, 3)
    write_outputs(options.out, photo, after, mask, result, frames, report)
    return report


def paste_patch(photo: Any, result: P.JobResult) -> Any:
    """The layer after the edit: the patch placed at its offset (what GIMP's new layer shows)."""
    if result.depth != "u8":
        raise ValueError(f"the demo sends 8-bit pixels but got a {result.depth} patch")
    patch = Image.frombytes("RGBA", (result.width, result.height), result.patch)
    after = photo.copy()
    after.paste(patch, (result.x, result.y))
    return after


def summarise(
    options: DemoOptions,
    hello: dict[str, Any],
    address: str,
    transport: str,
    before: Any,
    after: Any,
    mask: bytes,
    result: P.JobResult,
) -> DemoReport:
    a = np.asarray(before, dtype=np.int16)
    b = np.asarray(after, dtype=np.int16)
    inside = np.frombuffer(mask, np.uint8).reshape(a.shape[:2]) > 0
    changed = np.abs(a - b).max(axis=2) > 0
    pairs = []
    for ((hx, hy), (tx, ty)), (fx, fy), dist in zip(
        SCENE.pairs, result.points, result.distances, strict=True
    ):
        pairs.append(
            {
                "handle": [hx, hy],
                "target": [tx, ty],
                "final": [round(fx, 2), round(fy, 2)],
                "start_distance": round(math.hypot(tx - hx, ty - hy), 2),
                "final_distance": round(dist, 2),
            }
        )
    return DemoReport(
        model=_model_name(options),
        device=str(hello.get("device", "?")),
        daemon=address,
        transport=transport,
        steps=result.steps,
        max_steps=options.steps,
        converged=result.converged,
        pairs=pairs,
        changed_pixels_inside=int((changed & inside).sum()),
        changed_pixels_outside=int((changed & ~inside).sum()),
        mean_change_inside=round(float(np.abs(a - b)[inside].mean()), 3),
    )


# ---- pictures and report ----------------------------------------------------------------------
def _draw_points(
    image: Any,
    pairs: list[tuple[Point, Point]],
    scale: float,
    ellipse: tuple[float, float, float, float] | None,
) -> Any:
    img = image.convert("RGB")
    img = img.resize(
        (round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS
    )
    draw = ImageDraw.Draw(img)
    if ellipse is not None:
        cx, cy, rx, ry = (v * scale for v in ellipse)
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), outline=(255, 255, 255), width=1)
    r = max(3.0, 2.5 * scale)
    for (hx, hy), (tx, ty) in pairs:
        h, t = (hx * scale, hy * scale), (tx * scale, ty * scale)
        if math.hypot(t[0] - h[0], t[1] - h[1]) > r:
            draw.line((h, t), fill=(255, 255, 255), width=2)
        draw.ellipse((t[0] - r, t[1] - r, t[0] + r, t[1] + r), fill=(40, 110, 255))
        draw.ellipse((h[0] - r, h[1] - r, h[0] + r, h[1] + r), fill=(235, 40, 40))
    return img


def side_by_side(before: Any, after: Any, result: P.JobResult, scale: float = 1.0) -> Any:
    """The README picture. Top: before (handles red, targets blue, the selection) | after (where
    the handles' content went), at 100 %. Below: the edited region of each, ZOOM x, pixel for
    pixel (nearest neighbour), unmarked, so the photo's own texture can be judged."""
    targets = [t for _, t in SCENE.pairs]
    left = _draw_points(before, list(SCENE.pairs), scale, SCENE.ellipse)
    right = _draw_points(after, list(zip(result.points, targets, strict=True)), scale, None)
    x0, y0, x1, y1 = ZOOM_BOX
    size = ((x1 - x0) * ZOOM, (y1 - y0) * ZOOM)
    zooms = [
        im.convert("RGB").crop(ZOOM_BOX).resize(size, Image.Resampling.NEAREST)
        for im in (before, after)
    ]
    gap = 8
    width = max(left.width + right.width, 2 * size[0]) + gap
    sheet = Image.new("RGB", (width, left.height + gap + size[1]), (255, 255, 255))
    sheet.paste(left, (0, 0))
    sheet.paste(right, (left.width + gap, 0))
    for i, zoom in enumerate(zooms):
        sheet.paste(zoom, (i * (size[0] + gap), left.height + gap))
    return sheet


def preview_frames(frames: list[Frame], size: int = 192) -> list[Any]:
    """The daemon's previews (model resolution) enlarged, with the handles (red) on their way
    to the targets (blue) where the crop is known, and the step."""
    out = []
    for frame in frames:
        im = Image.open(io.BytesIO(frame.jpeg)).convert("RGB")
        im = im.resize((size, round(size * im.height / im.width)), Image.Resampling.LANCZOS)
        draw = ImageDraw.Draw(im)
        if frame.crop is not None and frame.crop[2] > 0:
            x0, y0, cw, _ = frame.crop
            k = size / cw
            marks = [(t, (40, 110, 255)) for _, t in SCENE.pairs]
            marks += [(p, (235, 40, 40)) for p in frame.points]
            for (px, py), colour in marks:
                u, v = (px - x0) * k, (py - y0) * k
                draw.ellipse((u - 3, v - 3, u + 3, v + 3), fill=colour)
        draw.text((4, 2), f"step {frame.step}", fill=(255, 255, 255))
        out.append(im)
    return out


def contact_sheet(images: list[Any], max_cols: int = 6) -> Any:
    w, h = images[0].size
    rows = -(-len(images) // max_cols)
    cols = -(-len(images) // rows)
    sheet = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    for i, im in enumerate(images):
        sheet.paste(im, ((i % cols) * w, (i // cols) * h))
    return sheet


def write_outputs(
    out: Path,
    before: Any,
    after: Any,
    mask: bytes,
    result: P.JobResult,
    frames: list[Frame],
    report: DemoReport,
) -> list[str]:
    """Write pictures and reports (each replaces its file only when complete); returns the file
    names written."""
    out.mkdir(parents=True, exist_ok=True)
    written = {
        "before.png": before,
        "after.png": after,
        "selection.png": Image.frombytes("L", before.size, mask),
        "demo.png": side_by_side(before, after, result),
    }
    for name, image in written.items():
        save_image(image, out / name)
    names = list(written)
    previews = preview_frames(frames)
    if previews:
        save_image(
            previews[0],
            out / "progress.gif",
            save_all=True,
            append_images=previews[1:],
            duration=120,
            loop=0,
        )
        every = max(1, -(-len(previews) // 12))  # at most 12 pictures on the sheet
        save_image(contact_sheet([*previews[:-1:every], previews[-1]]), out / "progress.png")
        names += ["progress.gif", "progress.png"]
    report.files = [*names, "report.json", "report.md"]
    write_text(out / "report.json", json.dumps(asdict(report), indent=2) + "\n")
    write_text(out / "report.md", markdown(report))
    return report.files


def markdown(report: DemoReport) -> str:
    lines = [
        "# gimp-draggan demo",
        "",
        f"{SCENE.caption}.",
        "",
        "![before | after, and the edited region 3x](demo.png)",
        "",
        f"- model `{report.model}` on `{report.device}`, daemon {report.daemon} "
        f"(client transport: {report.transport})",
        f"- drag steps: {report.steps} of at most {report.max_steps}"
        + ("" if report.converged else " — stopped short of the targets"),
        f"- pixels changed inside the selection: {report.changed_pixels_inside} (mean change "
        f"{report.mean_change_inside} / 255); outside: {report.changed_pixels_outside}",
        "",
        "| pair | handle | target | final | distance before | distance after |",
        "|---|---|---|---|---|---|",
    ]
    for i, p in enumerate(report.pairs):
        lines.append(
            f"| {i + 1} | {tuple(p['handle'])} | {tuple(p['target'])} | "
            f"{tuple(p['final'])} | {p['start_distance']} px | "
            f"{p['final_distance']} px |"
        )
    lines += ["", "| phase | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in report.timings.items()]
    if report.frames:
        lines += [
            "",
            f"Drag progress ({report.frames} live previews from the daemon):",
            "",
            "![progress](progress.gif)",
        ]
    return "\n".join(lines) + "\n"
