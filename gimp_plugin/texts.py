"""Words the plug-in shows a person: progress text, layer names, error sentences (pure)."""

from __future__ import annotations

import math
from collections.abc import Callable

from . import protocol

PHASE_WORDS = {"invert": "Inverting", "drag": "Dragging", "download": "Downloading the model"}


def progress_text(
    phase: str,
    step: int,
    total: int,
    distances: list[float] | None = None,
    left_s: float | None = None,
) -> str:
    """ "Inverting 120/300", "Dragging 35/200 — 4.2 px to go" (the farthest handle), then
    "≤ 12 s left" when `left_s` is known (an upper bound: both phases may stop early)."""
    word = PHASE_WORDS.get(phase, phase.capitalize() or "Working")
    text = f"{word} {step}/{total}" if total > 0 else word
    if phase == "drag" and distances:
        text += f" \u2014 {max(distances):.1f} px to go"
    if left_s is not None:
        text += f", {time_left(left_s)}"
    return text


def time_left(seconds: float) -> str:
    """ "≤ 12 s left", "≤ 2 min left", "< 1 s left"."""
    if seconds < 1.0:
        return "< 1 s left"
    if seconds < 90.0:
        return f"\u2264 {math.ceil(seconds)} s left"
    return f"\u2264 {math.ceil(seconds / 60.0)} min left"


class StepClock:
    """Seconds left in the current phase from its step rate: (total - step) x the mean time
    per step since the phase's first report (known from its third step on). `now` is a clock
    in seconds (time.monotonic)."""

    MIN_STEPS = 2

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self.phase = ""
        self.first: tuple[int, float] | None = None

    def update(self, phase: str, step: int, total: int) -> float | None:
        t = self.now()
        if phase != self.phase or self.first is None or step < self.first[0]:
            self.phase, self.first = phase, (step, t)
            return None
        done = step - self.first[0]
        if total <= 0 or done < self.MIN_STEPS:
            return None
        return max(0, total - step) * (t - self.first[1]) / done


def progress_fraction(phase: str, step: int, total: int) -> float:
    """Where GIMP's bar stands: inversion fills the first half, dragging the second."""
    part = min(max(step / total, 0.0), 1.0) if total > 0 else 0.0
    if phase == "invert":
        return 0.5 * part
    if phase == "drag":
        return 0.5 + 0.5 * part
    return part


# The layer while live previews show in it; a run killed by Cancel leaves it, named so.
PREVIEW_NAME = "DragGAN preview (unfinished: Edit \u2192 Undo removes it)"


def layer_name(pairs: int, result: protocol.JobResult | None = None) -> str:
    """ "DragGAN drag (2 points)"; a drag that ended short says by how much."""
    short = ""
    if result is not None and not result.converged and result.distances:
        short = f", {max(result.distances):.1f} px short"
    return f"DragGAN drag ({pairs} point{'' if pairs == 1 else 's'}{short})"


def stopped_short(result: protocol.JobResult) -> str:
    """What the person is told when the drag ended before every handle got there."""
    far = ", ".join(
        f"handle {i + 1} is {d:.1f} px from its target"
        for i, d in enumerate(result.distances)
        if d > 0
    )
    text = (
        f"The drag stopped short after {result.steps} steps: {far}. The layer shows "
        "how far it got; more steps, a larger selection or a shorter drag may reach it."
    )
    if result.worse:
        worse = ", ".join(str(i + 1) for i in result.worse)
        text += f" Handle(s) {worse} ended farther from the target than they started."
    return text


def dialog_summary(path: str, pairs: int, selected: bool) -> str:
    """The dialog's first lines: what the run will use, and how to change it."""
    region = (
        "only the selected area changes"
        if selected
        else "no selection: the face or subject around the points changes, feathered"
    )
    return (
        f"Path \u201c{path}\u201d: {pairs} handle \u2192 target pair"
        f"{'' if pairs == 1 else 's'}; {region}.\n"
        "Each stroke of the path (Paths tool, B) is one pair: its first point is the handle, "
        "its last the target; Shift+click starts another stroke."
    )


def sentence(text: str) -> str:
    """One sentence for GIMP's error dialog, which names the procedure itself ("Calling error for
    'DragGAN Drag': ..."): capital first letter, exactly one final period."""
    text = text.strip().rstrip(".")
    return f"{text[:1].upper()}{text[1:]}."


def model_domain(hello: dict, model: str) -> str:
    """What the model in use was trained on ("human faces"), from the daemon's `hello`; "" when
    the daemon does not say."""
    name = model or hello.get("default_model") or ""
    for entry in hello.get("models") or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return str(entry.get("domain") or "")
    return ""


def region_note(domain: str) -> str:
    """What changes without a selection: the daemon frames the face (face and head models) or
    the subject holding the points and feathers its edge."""
    what = "face" if any(w in domain.lower() for w in ("face", "head")) else "subject"
    return f"no selection: editing the {what} around the points, feathered"


# The drag began without inverting: the daemon reused this area's earlier inversion (of whatever
# preset made it), e.g. a Fast run right after a Quality one.
REUSED_NOTE = "reusing this area's earlier inversion (the preset applies to new ones)"


def queued_text(position: int) -> str:
    return f"Waiting for the daemon ({protocol.queue_words(position)})"


def not_running(address: str, detail: str = "") -> str:
    why = f" ({detail})" if detail else ""
    if protocol.is_loopback(address):
        return (
            f"The DragGAN daemon is not running at {address}{why}: start it with "
            f"`{protocol.start_command(address)}` in a terminal (or re-run the installer with "
            "--service to start it at login), then run DragGAN Drag again."
        )
    return (
        f"The DragGAN daemon at {address} does not answer{why}: check that it runs on that "
        f"machine (`{protocol.SERVE_COMMAND} --bind ...`), that the address in the dialog is "
        "right and that the keys match."
    )


def error_sentence(
    code: protocol.ErrorCode | str,
    message: str,
    address: str,
    model: str = "",
    hint: str | None = None,
) -> str:
    """A daemon or client error as one instruction for a person: the message and what to do
    (`hint`, the daemon's when it sent one, else the protocol's table); a daemon that is not
    there is named with how to start it."""
    code = protocol.ErrorCode.of(code)
    if code in protocol.UNREACHABLE:
        return not_running(address, message if code == protocol.ErrorCode.TIMEOUT else "")
    what = hint or protocol.hint_for(code, model)
    if model:
        what = what.replace("NAME", model)
    return protocol.error_sentence(message, what)


def download_text(name: str, done: int, total: int) -> str:
    """ "Downloading stylegan2-ffhq-512x512: 120 / 364 MB"."""
    mb = 10**6
    amount = f"{done / mb:.0f} / {total / mb:.0f} MB" if total > 0 else f"{done / mb:.0f} MB"
    return f"Downloading {name}: {amount}"
