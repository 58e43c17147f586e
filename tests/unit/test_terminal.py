"""The command line's progress output: the bar on a terminal, and the drag's step lines."""

from __future__ import annotations

import io

from gimp_draggan.terminal import ProgressBar, StepPrinter
from gimp_draggan_plugin.protocol import ProgressEvent


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_redraws_one_line_per_phase() -> None:
    out = _Terminal()
    bar = ProgressBar(out, width=4)
    bar.update("invert", 1, 2)
    bar.update("invert", 2, 2)
    bar.update("drag", 1, 4, "far")
    bar.end()
    lines = out.getvalue().split("\n")
    assert lines[0].split("\r")[1:] == [
        "inverting the photo  [##..] 1/2",
        "inverting the photo  [####] 2/2",
    ]
    assert lines[1] == "\rdragging             [#...] 1/4 far" and lines[2] == ""


def test_progress_bar_on_a_terminal_shows_the_last_state_a_redraw_skipped() -> None:
    out = _Terminal()
    bar = ProgressBar(out, width=4, interval=3600.0, count=lambda n: f"{n:g} B")
    bar.update("model.pkl", 1, 4)
    bar.update("model.pkl", 4, 4)  # within the interval: not drawn yet
    assert "4 B/4 B" not in out.getvalue()
    bar.end()
    assert out.getvalue().endswith("\rmodel.pkl            [####] 4 B/4 B\n")


def test_step_printer_prints_every_drag_step_and_each_tenth_inversion_tick() -> None:
    out = io.StringIO()
    printer = StepPrinter(out)
    for step in range(1, 13):
        printer(ProgressEvent("invert", step, 12))
    for step in (1, 2, 3):
        printer(ProgressEvent("drag", step, 3, [(1.25, 2.0)], [4.0]))
    lines = [ln.split()[:2] for ln in out.getvalue().splitlines()]
    assert lines == [["invert", "1/12"], ["invert", "10/12"], ["invert", "12/12"]] + [
        ["drag", f"{s}/3"] for s in (1, 2, 3)
    ]
    assert "handles (1.2,2.0)  dist 4.0" in out.getvalue()
    assert printer.sec_per_step() is not None
