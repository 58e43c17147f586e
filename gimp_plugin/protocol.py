"""The gimp-draggan wire protocol (version 1), shared by the daemon and the GIMP plug-in.

Standard library only: GIMP's bundled Python has no numpy and maybe no pyzmq, and the installer
copies this file next to the plug-in so both sides always agree. docs/PROTOCOL.md is the prose.

A message is a list of frames: frame 0 is a JSON object (the header: `v`, `op`, `id`, ...),
frames 1.. are raw bytes named, in order, by the header's `frames` list (pixels, mask, patch,
preview). Nothing here unpickles, evaluates or opens anything a peer sent.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import Any

PROTOCOL_VERSION = 1
DEFAULT_PORT = 5589
DEFAULT_ADDRESS = f"tcp://127.0.0.1:{DEFAULT_PORT}"
ADDRESS_ENV = "GIMP_DRAGGAN_DAEMON"
SERVE_COMMAND = "gimp-draggan serve"
TOKEN_FIELD = "token"  # The owner's loopback secret, in every request's header.
SECRET_ENV = "GIMP_DRAGGAN_SECRET"  # Path of the secret file (overrides the default).
SECRET_NAME = "daemon.secret"  # In the user's config dir + gimp-draggan/.

# ---- limits -----------------------------------------------------------------------------------
MAX_HEADER_BYTES = 64 * 1024  # JSON header frame.
MAX_FRAMES = 4  # Binary frames after the header.
MAX_SIDE = 16384  # Pixels per side of a layer.
MAX_PIXELS = 64 * 1024 * 1024  # Pixels of a layer (e.g. 8192 x 8192, 8000 x 6000).
MAX_FRAME_BYTES = 512 * 1024 * 1024  # One binary frame (so f32 layers stop at 32 Mpx).
MAX_MESSAGE_BYTES = MAX_FRAME_BYTES + MAX_HEADER_BYTES  # ZeroMQ MAXMSGSIZE (checked per frame).
MAX_POINTS = 16  # Handle -> target pairs per drag.
MAX_ID_CHARS = 64
MAX_QUEUE_DEFAULT = 16  # Jobs waiting behind the running one.

# ---- timing -----------------------------------------------------------------------------------
HEARTBEAT_INTERVAL_S = 1.0  # Each side sends a heartbeat this often while a job is open.
HEARTBEAT_TIMEOUT_S = 10.0  # Silence this long = the peer is gone.
REQUEST_TIMEOUT_S = 3.0  # First answer to any request (hello, status, queued, ...).
SAME_POINT = 0.5  # Handle and target closer than this (layer pixels): nothing to drag.

DEPTHS = {"u8": 1, "u16": 2, "f32": 4}  # Bytes per channel of RGBA pixels.
PRESETS = ("fast", "quality")
BLENDS = ("photo", "generator")  # photo: the layer's pixels warped; generator: its image.

REQUEST_OPS = ("hello", "drag", "invert", "cancel", "status", "models", "heartbeat")
# Replies: `queued`, `progress`, `heartbeat` are interim; every request except `heartbeat`
# gets exactly one final reply: `result`, `error`, `hello`, `status`, `models` or `cancel`.
FINAL_OPS = ("result", "error", "hello", "status", "models", "cancel")

_ID_RE = re.compile(rf"^[A-Za-z0-9._:-]{{1,{MAX_ID_CHARS}}}$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # Model names: no paths, ever.


# ---- errors -----------------------------------------------------------------------------------
class ErrorCode(str, Enum):
    """The machine-readable codes of `error` replies (and of the client's own failures). A `str`
    so that they serialise, compare and hash as the wire's strings."""

    BAD_MESSAGE = "bad_message"
    BAD_VERSION = "bad_version"
    UNKNOWN_OP = "unknown_op"
    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"
    QUEUE_FULL = "queue_full"
    UNKNOWN_SESSION = "unknown_session"
    UNKNOWN_MODEL = "unknown_model"
    MODEL_NOT_CACHED = "model_not_cached"
    MODEL_DAMAGED = "model_damaged"
    NOT_YOUR_DAEMON = "not_your_daemon"
    DOWNLOAD_FAILED = "download_failed"
    OUT_OF_MEMORY = "out_of_memory"
    CANCELLED = "cancelled"
    NOT_FOUND = "not_found"
    WORKER_LOST = "worker_lost"
    TRANSPORT_MISSING = "transport_missing"
    INTERNAL = "internal"
    # The client's own failures (never sent by a daemon).
    NOT_RUNNING = "not_running"
    PORT_TAKEN = "port_taken"
    TIMEOUT = "timeout"

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def of(cls, value: Any) -> ErrorCode:
        """The code a peer sent; `internal` for one this side does not know (a newer peer)."""
        try:
            return cls(value)
        except ValueError:
            return cls.INTERNAL


# The daemon is not there to answer (the plug-in may offer to start it).
UNREACHABLE = frozenset({ErrorCode.NOT_RUNNING, ErrorCode.TIMEOUT})

# The one table of what a person should do about each code (the daemon sends it as `hint`;
# NAME stands for the model when the sender does not know it).
ERROR_HINTS: dict[ErrorCode, str] = {
    ErrorCode.BAD_MESSAGE: "The message was not valid gimp-draggan protocol; update the plug-in "
    "and the daemon to the same version.",
    ErrorCode.BAD_VERSION: "Install the same gimp-draggan version for the plug-in and the daemon.",
    ErrorCode.UNKNOWN_OP: "Update the plug-in and the daemon to the same version.",
    ErrorCode.BAD_REQUEST: "Check the points, mask and parameters and try again.",
    ErrorCode.TOO_LARGE: "Work on a smaller layer or selection (crop the image first).",
    ErrorCode.QUEUE_FULL: "The daemon is busy; wait for the running jobs to finish and try again.",
    ErrorCode.UNKNOWN_SESSION: "The daemon no longer holds that inverted photo; send the pixels "
    "again.",
    ErrorCode.UNKNOWN_MODEL: "Pick a model from `gimp-draggan models list`.",
    ErrorCode.MODEL_NOT_CACHED: "Download the model once with `gimp-draggan models download "
    "NAME` (or pick another model), then try again.",
    ErrorCode.MODEL_DAMAGED: "The model file is damaged or truncated; delete it and download it "
    "again with `gimp-draggan models download NAME` (the message names the file).",
    ErrorCode.NOT_YOUR_DAEMON: "Start your own daemon on a free port (`gimp-draggan serve --bind "
    "tcp://127.0.0.1:PORT`); if this daemon is yours, the client must read the secret file "
    f"that `serve` wrote (${SECRET_ENV}, else the user's config dir + gimp-draggan/{SECRET_NAME}).",
    ErrorCode.DOWNLOAD_FAILED: "Check the network connection and try again; `gimp-draggan models "
    "download NAME` shows the details.",
    ErrorCode.OUT_OF_MEMORY: "The GPU ran out of memory: select a smaller area around the points "
    "or pick a smaller model, and try again.",
    ErrorCode.CANCELLED: "The job was cancelled; nothing was changed.",
    ErrorCode.NOT_FOUND: "No such job is open for this client.",
    ErrorCode.WORKER_LOST: "The cluster worker running this job died; retry (the daemon serves "
    "on and inverts the photo anew).",
    ErrorCode.TRANSPORT_MISSING: "The plug-in's ZeroMQ transport did not load: re-run the "
    "gimp-draggan installer (installer/install.sh, or install.ps1 on Windows) and restart GIMP.",
    ErrorCode.INTERNAL: "The daemon hit an unexpected error; see its log file and report it.",
    ErrorCode.NOT_RUNNING: f"Start it with `{SERVE_COMMAND}`.",
    ErrorCode.PORT_TAKEN: "Another program holds that port: stop it, or start the daemon on a "
    f"free port (`{SERVE_COMMAND} --bind tcp://127.0.0.1:PORT`) and use that address.",
    ErrorCode.TIMEOUT: f"The daemon did not answer; check it is running (`{SERVE_COMMAND}`) and "
    "that the address and keys are right.",
}


def hint_for(code: ErrorCode | str, model: str = "") -> str:
    """The table's hint for `code`, naming `model` where it says NAME."""
    hint = ERROR_HINTS[ErrorCode(code)]
    return hint.replace("NAME", model) if model else hint


class ProtocolError(Exception):
    """An error with a wire code, on either side: a request refused at the wire, a job that
    failed, or (as the client's `DaemonError`) an error reply. `hint` says what to do (the
    table's unless the raiser knows better)."""

    def __init__(self, code: ErrorCode | str, message: str, hint: str | None = None) -> None:
        self.code = ErrorCode(code)  # ValueError for a code not in the enum.
        super().__init__(message)
        self.message = message
        self.hint = hint or ERROR_HINTS[self.code]

    @property
    def sentence(self) -> str:
        """The message plus what to do, for a person."""
        return error_sentence(self.message, self.hint)


def authorized(header: dict[str, Any], secret: str | None) -> bool:
    """True when no secret is required or the header's `token` is it (constant-time compare)."""
    if secret is None:
        return True
    token = header.get(TOKEN_FIELD)
    return isinstance(token, str) and hmac.compare_digest(token.encode(), secret.encode())


def queue_words(position: int) -> str:
    """A `queued` position for people: 1 is "next to run" (a running job may still be ahead),
    N is N - 1 waiting jobs ahead."""
    if position <= 1:
        return "next to run"
    ahead = position - 1
    return f"{ahead} job{'' if ahead == 1 else 's'} ahead"


def error_sentence(message: str, hint: str) -> str:
    """A message plus what to do, for a person."""
    return f"{message.rstrip('.')}. {hint}".strip() if hint else message


def start_command(address: str) -> str:
    """The command that starts a daemon listening at `address`."""
    return SERVE_COMMAND if address == DEFAULT_ADDRESS else f"{SERVE_COMMAND} --bind {address}"


# ---- parameters -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Params:
    """A job's tunables with their defaults (the one definition: the wire, the CLI, the plug-in
    and the pipeline); ranges and choices in `PARAMS`."""

    steps: int = 200  # Max drag steps (the stop rule may end earlier).
    lr: float | None = None  # Adam learning rate on the latent; None = the model's (models.json).
    mask_lambda: float = 20.0  # Weight of the fixed-region term (DragGAN GUI default).
    preset: str = "fast"  # Inversion quality: one of PRESETS.
    preview_every: int = 0  # Send a preview every N drag steps, 0 = never.
    preview_size: int = 256  # Longest side of a preview JPEG.
    blend: str = "photo"  # What fills the edit: one of BLENDS.

    def fields(self) -> dict[str, Any]:
        """The wire's `params` object (an unset `lr` left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


_DEFAULT_PARAMS = Params()


@dataclass(frozen=True)
class ParamSpec:
    """The wire's rule for one `Params` field."""

    name: str
    kind: type  # int | float | str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def default(self) -> Any:
        return getattr(_DEFAULT_PARAMS, self.name)


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("steps", int, 0, 2000),
    ParamSpec("lr", float, 1e-5, 0.1),
    ParamSpec("mask_lambda", float, 0.0, 1000.0),
    ParamSpec("preset", str, choices=PRESETS),
    ParamSpec("preview_every", int, 0, 1000),
    ParamSpec("preview_size", int, 32, 1024),
    ParamSpec("blend", str, choices=BLENDS),
)
PARAM_NAMES = tuple(p.name for p in PARAMS)


def check_params(params: Any) -> Params:
    """Validate a `params` object; the typed `Params`, defaults filled in."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "params must be a JSON object")
    unknown = sorted(set(params) - set(PARAM_NAMES))
    if unknown:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"unknown parameter(s) {unknown}; known: {PARAM_NAMES}"
        )
    out: dict[str, Any] = {}
    for spec in PARAMS:
        value = params.get(spec.name, spec.default)
        if value is None and spec.default is None:  # Unset: the daemon chooses.
            out[spec.name] = None
            continue
        if spec.kind is str:
            if value not in spec.choices:
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST,
                    f"{spec.name} must be one of {spec.choices}, got {value!r}",
                )
        else:
            if spec.kind is int and not _is_int(value):
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST, f"{spec.name} must be an integer, got {value!r}"
                )
            if not _is_number(value):
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST, f"{spec.name} must be a number, got {value!r}"
                )
            lo = -math.inf if spec.lo is None else spec.lo
            hi = math.inf if spec.hi is None else spec.hi
            if not lo <= value <= hi:
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST,
                    f"{spec.name} must be in [{spec.lo}, {spec.hi}], got {value!r}",
                )
            value = spec.kind(value)
        out[spec.name] = value
    return Params(**out)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


# ---- frames -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Message:
    """One decoded message: the header and its binary frames by name."""

    header: dict[str, Any]
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def op(self) -> str:
        return str(self.header["op"])

    @property
    def id(self) -> str:
        return str(self.header["id"])


def encode(
    op: str,
    msg_id: str,
    fields: dict[str, Any] | None = None,
    blobs: dict[str, bytes] | None = None,
) -> list[bytes]:
    """Build the frames of a message: header JSON + the blobs in the order given."""
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "op": op, "id": msg_id}
    if fields:
        header.update(fields)
    blobs = blobs or {}
    if blobs:
        header["frames"] = list(blobs)
    data = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    if len(data) > MAX_HEADER_BYTES:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"header of {len(data)} bytes > {MAX_HEADER_BYTES}"
        )
    return [data, *blobs.values()]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a header")


def decode(frames: list[bytes]) -> Message:
    """Parse frames into a Message, checking the framing (not the op's fields)."""
    if not frames:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "empty message")
    head = frames[0]
    if len(head) > MAX_HEADER_BYTES:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"header frame of {len(head)} bytes > {MAX_HEADER_BYTES}"
        )
    try:
        header = json.loads(bytes(head).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"header frame is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "header frame must be a JSON object")
    msg_id = header.get("id")
    if not isinstance(msg_id, str) or not _ID_RE.match(msg_id):
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, f"id must be 1-{MAX_ID_CHARS} characters of [A-Za-z0-9._:-]"
        )
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.BAD_VERSION,
            f"protocol version {version!r}; this side speaks {PROTOCOL_VERSION}",
        )
    if not isinstance(header.get("op"), str):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "op must be a string")
    names = header.get("frames", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "frames must be a list of names")
    if len(names) > MAX_FRAMES or len(set(names)) != len(names):
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, f"frames must be at most {MAX_FRAMES} distinct names"
        )
    if len(names) != len(frames) - 1:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            f"header names {len(names)} binary frame(s), got {len(frames) - 1}",
        )
    return Message(header, dict(zip(names, frames[1:], strict=True)))


def safe_id(header: Any) -> str:
    """The header's id if it is a valid one (to address an error reply), else ''."""
    if isinstance(header, dict):
        value = header.get("id")
        if isinstance(value, str) and _ID_RE.match(value):
            return value
    return ""


def peek_id(frames: list[bytes]) -> str:
    """Best-effort id of a message that failed to decode, so the error reaches its request."""
    if not frames or len(frames[0]) > MAX_HEADER_BYTES:
        return ""
    try:
        header = json.loads(bytes(frames[0]).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return ""
    return safe_id(header)


def check_name(name: Any, what: str = "model") -> str:
    """A registry name (lower-case, no path separators); never a file path."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"{what} must be a registry name like 'stylegan2-ffhq-512', got {name!r}",
        )
    return name


# ---- requests ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageSpec:
    width: int
    height: int
    depth: str

    @property
    def pixel_bytes(self) -> int:
        return self.width * self.height * 4 * DEPTHS[self.depth]

    @property
    def mask_bytes(self) -> int:
        return self.width * self.height


Point = tuple[float, float]  # (x, y) = (column, row); the one point type of both sides.
Pair = tuple[Point, Point]


@dataclass(frozen=True)
class JobRequest:
    """A `drag` or `invert` request, photo form or seed form: what the client sends, the daemon
    queues and the pipeline runs (the CLI builds the same). `check_job` makes one from the wire,
    `checked` checks one built here by the same rules; past that, its values are trusted."""

    op: str = "drag"  # "drag" | "invert"
    id: str = "local"
    model: str | None = None  # Registry name (None = the daemon's default); in the
    #                                  daemon and the in-process CLI: the file the loaders open.
    pairs: list[Pair] = field(default_factory=list)  # ((hx, hy), (tx, ty)), layer pixels.
    params: Params = field(default_factory=Params)
    image: ImageSpec | None = None  # Photo form: the layer's size and depth.
    pixels: bytes | None = None  # Photo form: RGBA, row-major, DEPTHS[depth] bytes a channel.
    mask: bytes | None = None  # width*height u8, 255 = may move; None = all may move.
    session: str | None = None  # Re-use an inverted crop (a hint; see edit.sessions).
    seed: int | None = None  # Seed form: the model's own image from this seed (its
    #                                  optional mask is model-sized: image = its size, no pixels).

    @classmethod
    def photo(
        cls,
        pixels: bytes,
        width: int,
        height: int,
        pairs: list[Pair],
        *,
        depth: str = "u8",
        mask: bytes | None = None,
        model: str | None = None,
        params: Params | None = None,
        session: str | None = None,
        op: str = "drag",
    ) -> JobRequest:
        """A request on a layer's pixels."""
        return cls(
            op,
            model=model,
            pairs=list(pairs),
            params=params or Params(),
            image=ImageSpec(width, height, depth),
            pixels=pixels,
            mask=mask,
            session=session,
        )

    @classmethod
    def seeded(
        cls,
        seed: int,
        pairs: list[Pair],
        *,
        mask: bytes | None = None,
        width: int = 0,
        height: int = 0,
        model: str | None = None,
        params: Params | None = None,
    ) -> JobRequest:
        """A drag on the model's own image of `seed`; a mask is model-sized (`width` x
        `height`)."""
        image = None if mask is None else ImageSpec(width, height, "u8")
        return cls(
            "drag",
            model=model,
            pairs=list(pairs),
            params=params or Params(),
            image=image,
            mask=mask,
            seed=seed,
        )

    @property
    def layer(self) -> ImageSpec:
        """The photo form's layer (a seed request has none)."""
        if self.image is None or self.pixels is None:
            raise ValueError("a photo request needs its pixels")
        return self.image


def check_image(header: dict[str, Any]) -> ImageSpec:
    """Validate `width`, `height`, `depth` of a photo request."""
    width: Any = header.get("width")
    height: Any = header.get("height")
    depth = header.get("depth", "u8")
    if not (_is_int(width) and _is_int(height)) or width < 1 or height < 1:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "width and height must be positive integers")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"layer {width}x{height} exceeds the limit ({MAX_SIDE} px a side, "
            f"{MAX_PIXELS // 2**20} Mpx)",
        )
    if depth not in DEPTHS:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"depth must be one of {tuple(DEPTHS)}, got {depth!r}"
        )
    spec = ImageSpec(width, height, depth)
    if spec.pixel_bytes > MAX_FRAME_BYTES:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"{width}x{height} {depth} RGBA is {spec.pixel_bytes} bytes > "
            f"{MAX_FRAME_BYTES}; use 8-bit pixels or a smaller layer",
        )
    return spec


def check_pairs(raw: Any, bounds: tuple[int, int] | None, need: bool) -> list[Pair]:
    """`pairs`: [[hx, hy, tx, ty], ...], finite, inside (width, height) when known."""
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "pairs must be a list of [hx, hy, tx, ty]")
    if need and not raw:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, "a drag needs at least one handle -> target pair"
        )
    if len(raw) > MAX_POINTS:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{len(raw)} pairs > the limit of {MAX_POINTS}")
    pairs: list[Pair] = []
    for i, item in enumerate(raw):
        if not (isinstance(item, list) and len(item) == 4 and all(_is_number(v) for v in item)):
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"pair {i} must be four finite numbers")
        hx, hy, tx, ty = (float(v) for v in item)
        if bounds is not None:
            w, h = bounds
            for x, y in ((hx, hy), (tx, ty)):
                if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
                    raise ProtocolError(
                        ErrorCode.BAD_REQUEST,
                        f"pair {i}: point ({x:g}, {y:g}) is outside the {w}x{h} image",
                    )
        pairs.append(((hx, hy), (tx, ty)))
    return pairs


def check_job(msg: Message) -> JobRequest:
    """Validate a `drag` / `invert` message: fields, ranges and binary frame sizes."""
    h = msg.header
    op = msg.op
    model = h.get("model")
    if model is not None:
        check_name(model)
    params = check_params(h.get("params"))
    session = h.get("session")
    if session is not None and not (isinstance(session, str) and _ID_RE.match(session)):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, "session must be an id string from a previous result"
        )
    seed = h.get("seed")
    unexpected = sorted(set(msg.blobs) - {"pixels", "mask"})
    if unexpected:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"unexpected frame(s) {unexpected}")
    if seed is not None:
        if op != "drag":
            raise ProtocolError(ErrorCode.BAD_REQUEST, "the seed form exists only for drag")
        if not _is_int(seed) or not 0 <= seed < 2**32:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "seed must be an integer in [0, 2^32)")
        if "pixels" in msg.blobs or session is not None:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "a seed drag takes no pixels or session")
        mask_spec = None
        if "mask" in msg.blobs:  # Model-resolution mask: width/height name its size.
            mask_spec = check_image({**h, "depth": "u8"})
            if len(msg.blobs["mask"]) != mask_spec.mask_bytes:
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST,
                    f"mask frame has {len(msg.blobs['mask'])} "
                    f"bytes; {mask_spec.width}x{mask_spec.height} needs "
                    f"{mask_spec.mask_bytes}",
                )
        pairs = check_pairs(h.get("pairs"), None, need=True)
        return JobRequest(
            op, msg.id, model, pairs, params, mask_spec, None, msg.blobs.get("mask"), None, seed
        )
    image = check_image(h)
    pixels = msg.blobs.get("pixels")
    if pixels is None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a photo job needs a pixels frame")
    if len(pixels) != image.pixel_bytes:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"pixels frame has {len(pixels)} bytes; {image.width}x{image.height} "
            f"RGBA {image.depth} needs {image.pixel_bytes}",
        )
    mask = msg.blobs.get("mask")
    if mask is not None and len(mask) != image.mask_bytes:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"mask frame has {len(mask)} bytes; {image.width}x{image.height} "
            f"u8 needs {image.mask_bytes}",
        )
    pairs = check_pairs(h.get("pairs"), (image.width, image.height), need=op == "drag")
    if mask is not None:
        check_selection(mask, image, pairs)
    if op == "drag":
        for i, ((hx, hy), (tx, ty)) in enumerate(pairs):
            if math.hypot(tx - hx, ty - hy) < SAME_POINT:
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST,
                    f"pair {i}: handle and target are the same point ({SAME_POINT:g} layer "
                    "pixels or closer); drag the target away from the handle",
                )
    return JobRequest(op, msg.id, model, pairs, params, image, pixels, mask, session, None)


def check_selection(mask: bytes, image: ImageSpec, pairs: list[Pair]) -> None:
    """A photo request's selection: not empty, and every handle and target on a selected pixel
    (nothing outside the selection may change, so a point outside it is an error)."""
    if mask.count(0) == len(mask):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            "the selection is empty: select the part to edit, or select none",
        )
    w, h = image.width, image.height
    for i, pair in enumerate(pairs):
        for role, (x, y) in zip(("handle", "target"), pair, strict=True):
            px = min(max(math.floor(x + 0.5), 0), w - 1)  # The pixel the point falls on.
            py = min(max(math.floor(y + 0.5), 0), h - 1)
            if mask[py * w + px] == 0:
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST,
                    f"pair {i}: {role} ({x:g}, {y:g}) lies outside the selection, and nothing "
                    "outside it may change; enlarge the selection to hold every handle and "
                    "target, or select none",
                )


def checked(req: JobRequest) -> JobRequest:
    """`req` (built on this side: the client before sending, the in-process CLI) checked by
    exactly the daemon's rules, `check_job` over the fields that would carry it."""
    fields, blobs = job_fields(req)
    return replace(check_job(Message({"op": req.op, "id": req.id, **fields}, blobs)), id=req.id)


def job_fields(req: JobRequest) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The header fields and blobs that carry `req` (the inverse of check_job)."""
    fields: dict[str, Any] = {
        "pairs": [[hx, hy, tx, ty] for (hx, hy), (tx, ty) in req.pairs],
        "params": req.params.fields(),
    }
    if req.model is not None:
        fields["model"] = req.model
    blobs: dict[str, bytes] = {}
    if req.seed is not None:
        fields["seed"] = req.seed
        if req.mask is not None and req.image is not None:
            fields.update(width=req.image.width, height=req.image.height)
            blobs["mask"] = req.mask
    else:
        if req.image is None or req.pixels is None:
            raise ValueError("a photo job needs image and pixels")
        fields.update(width=req.image.width, height=req.image.height, depth=req.image.depth)
        blobs["pixels"] = req.pixels
        if req.mask is not None:
            blobs["mask"] = req.mask
    if req.session is not None:
        fields["session"] = req.session
    return fields, blobs


# ---- replies ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProgressEvent:
    phase: str
    step: int
    total: int
    points: list[tuple[float, float]] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)
    preview: bytes | None = None  # Small JPEG, when due.
    crop: tuple[int, int, int, int] | None = None  # Where the preview lies: x, y, w, h (layer).


@dataclass(frozen=True)
class QueuedEvent:
    position: int  # 1 = next to run.


@dataclass(frozen=True)
class JobResult:
    """A `result` reply. Drag: the patch and where it goes. Invert: session only (no patch)."""

    session: str
    x: int = 0
    y: int = 0
    width: int = 0
    height: int = 0
    depth: str = "u8"
    patch: bytes = b""
    points: list[tuple[float, float]] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)
    steps: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    converged: bool = True  # Every handle got within the stop distance.
    worse: list[int] = field(default_factory=list)  # Pairs that ended farther than they began.


def progress_frames(msg_id: str, ev: ProgressEvent) -> list[bytes]:
    fields = {
        "phase": ev.phase,
        "step": ev.step,
        "total": ev.total,
        "points": [[float(x), float(y)] for x, y in ev.points],
        "distances": [float(d) for d in ev.distances],
    }
    if ev.crop is not None:
        fields["crop"] = [int(v) for v in ev.crop]
    return encode("progress", msg_id, fields, {"preview": ev.preview} if ev.preview else None)


def parse_progress(msg: Message) -> ProgressEvent:
    h = msg.header
    raw = h.get("crop")
    crop = None
    if isinstance(raw, list) and len(raw) == 4 and all(_is_int(v) for v in raw):
        crop = (raw[0], raw[1], raw[2], raw[3])
    return ProgressEvent(
        phase=str(h.get("phase", "")),
        step=int(h.get("step", 0)),
        total=int(h.get("total", 0)),
        points=[(float(p[0]), float(p[1])) for p in h.get("points", [])],
        distances=[float(d) for d in h.get("distances", [])],
        preview=msg.blobs.get("preview"),
        crop=crop,
    )


def result_frames(msg_id: str, r: JobResult) -> list[bytes]:
    if len(r.patch) != r.width * r.height * 4 * DEPTHS[r.depth]:
        raise ValueError(f"patch has {len(r.patch)} bytes for {r.width}x{r.height} {r.depth}")
    fields = {
        "session": r.session,
        "x": r.x,
        "y": r.y,
        "width": r.width,
        "height": r.height,
        "depth": r.depth,
        "points": [[float(x), float(y)] for x, y in r.points],
        "distances": [float(d) for d in r.distances],
        "steps": r.steps,
        "timings": {k: float(v) for k, v in r.timings.items()},
        "converged": bool(r.converged),
        "worse": [int(i) for i in r.worse],
    }
    return encode("result", msg_id, fields, {"patch": r.patch} if r.patch else None)


def parse_result(msg: Message) -> JobResult:
    h = msg.header
    try:
        r = JobResult(
            session=str(h["session"]),
            x=int(h["x"]),
            y=int(h["y"]),
            width=int(h["width"]),
            height=int(h["height"]),
            depth=str(h["depth"]),
            patch=bytes(msg.blobs.get("patch", b"")),
            points=[(float(p[0]), float(p[1])) for p in h["points"]],
            distances=[float(d) for d in h["distances"]],
            steps=int(h["steps"]),
            timings={str(k): float(v) for k, v in h.get("timings", {}).items()},
            converged=bool(h.get("converged", True)),
            worse=[int(i) for i in h.get("worse", [])],
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"malformed result reply: {exc}") from None
    if r.depth not in DEPTHS or len(r.patch) != r.width * r.height * 4 * DEPTHS[r.depth]:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "result patch size does not match its header")
    return r


def error_frames(
    msg_id: str, code: ErrorCode | str, message: str, hint: str | None = None
) -> list[bytes]:
    """An `error` reply: code, message and what to do (`hint`, the table's by default)."""
    code = ErrorCode(code)
    return encode(
        "error", msg_id, {"code": code, "message": message, "hint": hint or ERROR_HINTS[code]}
    )


def exception_frames(msg_id: str, exc: ProtocolError) -> list[bytes]:
    """The `error` reply that carries `exc`."""
    return error_frames(msg_id, exc.code, exc.message, exc.hint)


# ---- addresses --------------------------------------------------------------------------------
def default_address() -> str:
    """$GIMP_DRAGGAN_DAEMON, else tcp://127.0.0.1:5589 (serve, ping, drag and the plug-in)."""
    return os.environ.get(ADDRESS_ENV, "").strip() or DEFAULT_ADDRESS


_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass(frozen=True)
class Endpoint:
    """A parsed ZeroMQ address; the one parser every side uses (client, daemon, installer)."""

    scheme: str  # "tcp" | "ipc" | "inproc"
    host: str  # tcp: host or "*" (IPv6 in brackets); ipc/inproc: the path or name.
    port: int | None  # tcp: 1-65535; None for "*" (any free port) and ipc/inproc.

    @property
    def loopback(self) -> bool:
        """Never leaves this machine: ipc://, inproc://, tcp:// on a loopback host."""
        if self.scheme != "tcp":
            return True
        return self.host in _LOOPBACK_HOSTS or self.host.startswith("127.")

    @property
    def tcp_peer(self) -> tuple[str, int] | None:
        """(host, port) to open a TCP connection to (IPv6 without brackets); None for ipc://,
        inproc:// and bind addresses (host or port `*`)."""
        if self.scheme != "tcp" or self.port is None or self.host == "*":
            return None
        return self.host.removeprefix("[").removesuffix("]"), self.port


def parse_address(address: str) -> Endpoint:
    """tcp://HOST:PORT (PORT may be * to bind any), ipc://PATH or inproc://NAME; ValueError that
    starts "not a ZeroMQ address" otherwise."""
    scheme, sep, rest = str(address).partition("://")
    if sep and rest and scheme in ("ipc", "inproc"):
        return Endpoint(scheme, rest, None)
    if sep and scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if colon and host and port == "*":
            return Endpoint("tcp", host, None)
        if colon and host and port.isdigit() and 0 < int(port) < 65536:
            return Endpoint("tcp", host, int(port))
    raise ValueError(
        f"not a ZeroMQ address: {address!r}; use tcp://HOST:PORT (e.g. {DEFAULT_ADDRESS}) or "
        "ipc://PATH"
    )


def is_loopback(address: str) -> bool:
    """True for tcp:// on a loopback host, ipc:// and inproc:// (never leave this machine); False
    for anything that is not an address."""
    try:
        return parse_address(address).loopback
    except ValueError:
        return False


def check_address(address: str) -> str:
    """``address`` itself when `parse_address` takes it (ValueError otherwise)."""
    parse_address(address)
    return address
