"""The plug-in's pure helpers: paths -> pairs, selection -> mask, words, settings (no GIMP)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from gimp_draggan_plugin import launcher, mask, models, points, protocol, settings, texts


def stroke(*anchors_xy):
    """A stroke as GIMP gives it: control, anchor, control per point (lineto stores it thrice)."""
    out = []
    for x, y in anchors_xy:
        out += [x - 1, y - 1, x, y, x + 1, y + 1]
    return out


# ---- points -------------------------------------------------------------------------------------
def test_first_anchor_is_handle_last_is_target():
    path = points.PathInfo(
        "p", True, True, [stroke((10, 12), (15, 15), (30, 20)), stroke((5, 6), (7, 9))]
    )
    assert points.pairs_from_path(path) == [((10.0, 12.0), (30.0, 20.0)), ((5.0, 6.0), (7.0, 9.0))]


def test_anchors_use_indices_2_and_3_of_each_group():
    coords = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert points.anchors(coords) == [(2.0, 3.0), (8.0, 9.0)]


def test_bad_coordinate_count():
    with pytest.raises(points.PointsError, match="multiple of 6"):
        points.anchors([1, 2, 3, 4, 5])


def test_single_point_stroke_says_how_to_draw():
    path = points.PathInfo("drag", True, True, [stroke((1, 1), (2, 2)), stroke((3, 3))])
    with pytest.raises(points.PointsError, match=r"stroke 2 of path 'drag'.*Paths tool \(B\)"):
        points.pairs_from_path(path)


def test_path_without_strokes():
    with pytest.raises(points.PointsError, match="no strokes"):
        points.pairs_from_path(points.PathInfo("empty", True, True, []))


def test_too_many_pairs():
    path = points.PathInfo("p", True, True, [stroke((1, 1), (2, 2))] * 17)
    with pytest.raises(points.PointsError, match="17 strokes; at most 16"):
        points.pairs_from_path(path)


def test_choose_selected_path_first():
    a = points.PathInfo("newest", False, True, [])
    b = points.PathInfo("chosen", True, False, [])
    assert points.choose_path([a, b]).name == "chosen"


def test_choose_most_recent_visible_without_selection():
    hidden = points.PathInfo("hidden", False, False, [])
    recent = points.PathInfo("recent", False, True, [])
    older = points.PathInfo("older", False, True, [])
    assert points.choose_path([hidden, recent, older]).name == "recent"


def test_no_path_message_names_the_paths_tool():
    with pytest.raises(points.PointsError, match=r"no path.*Paths tool \(B\).*handle.*target"):
        points.choose_path([])


def test_only_hidden_paths():
    with pytest.raises(points.PointsError, match="none is selected or visible"):
        points.choose_path([points.PathInfo("h", False, False, [])])


def test_two_selected_paths_are_ambiguous():
    paths = [points.PathInfo("a", True, True, []), points.PathInfo("b", True, True, [])]
    with pytest.raises(points.PointsError, match="2 paths are selected"):
        points.choose_path(paths)


def test_to_layer_subtracts_offsets():
    pairs = [((110.0, 52.0), (120.5, 60.0))]
    assert points.to_layer(pairs, 100, 50, 40, 30) == [((10.0, 2.0), (20.5, 10.0))]


def test_points_outside_layer_named():
    pairs = [((10.0, 10.0), (12.0, 12.0)), ((5.0, 5.0), (70.0, 5.0))]
    with pytest.raises(
        points.PointsError,
        match=r"target of pair 2 at \(70, 5\) lies outside the "
        r"layer \(x 0\.\.63, y 0\.\.47\)",
    ):
        points.to_layer(pairs, 0, 0, 64, 48)


def test_point_left_of_offset_layer():
    with pytest.raises(points.PointsError, match="handle of pair 1"):
        points.to_layer([((9.0, 20.0), (15.0, 20.0))], 10, 10, 20, 20)


# ---- mask ---------------------------------------------------------------------------------------
def test_place_mask_puts_region_at_its_offset():
    layer = mask.Rect(10, 20, 16, 24)  # image pixels, 6 x 4
    region = mask.Rect(12, 21, 15, 23)
    out = mask.place_mask(bytes([255, 128, 1, 2, 3, 4]), region, layer)
    rows = [list(out[r * 6 : (r + 1) * 6]) for r in range(4)]
    assert rows == [[0] * 6, [0, 0, 255, 128, 1, 0], [0, 0, 2, 3, 4, 0], [0] * 6]


def test_selection_region_crops_to_layer():
    layer = mask.Rect(0, 0, 64, 48)
    assert mask.selection_region(mask.Rect(50, 40, 80, 70), layer) == mask.Rect(50, 40, 64, 48)


def test_rect_intersect_is_empty_where_rects_only_touch_or_miss():
    """One `Rect` for both sides: the daemon's crops and the plug-in's selection read it so."""
    layer = mask.Rect(0, 0, 4, 4)
    assert layer.intersect(mask.Rect(2, 1, 9, 3)) == mask.Rect(2, 1, 4, 3)
    assert layer.intersect(mask.Rect(4, 0, 8, 4)).empty  # Shares an edge only.
    assert layer.intersect(mask.Rect(6, 6, 8, 8)).empty
    with pytest.raises(mask.MaskError, match="does not touch"):
        mask.selection_region(mask.Rect(4, 0, 8, 4), layer)


def test_selection_off_the_layer():
    with pytest.raises(mask.MaskError, match="does not touch"):
        mask.selection_region(mask.Rect(100, 100, 105, 105), mask.Rect(0, 0, 64, 48))


def test_selection_empty_on_layer():
    with pytest.raises(mask.MaskError, match="empty"):
        mask.place_mask(bytes(4), mask.Rect(0, 0, 2, 2), mask.Rect(0, 0, 4, 4))


def test_place_mask_checks_sizes():
    with pytest.raises(ValueError, match="selection bytes"):
        mask.place_mask(bytes(3), mask.Rect(0, 0, 2, 2), mask.Rect(0, 0, 4, 4))
    with pytest.raises(ValueError, match="not inside"):
        mask.place_mask(bytes(4), mask.Rect(3, 3, 5, 5), mask.Rect(0, 0, 4, 4))


def test_handles_fixed():
    m = bytes([0, 255, 0, 255])  # 2x2
    assert mask.handles_fixed(m, 2, [(1.2, 0.0), (0.5, 1.9), (1.0, 1.0)]) == [1]


def test_mask_crop_takes_the_box():
    m = bytes(range(12))  # 4 x 3
    assert mask.crop(m, 4, (1, 1, 2, 2)) == bytes([5, 6, 9, 10])


def test_soft_edges_fade_out_at_the_border_only():
    soft = mask.soft_edges(32, 16)  # feather: 16 // 8 = 2 px
    assert len(soft) == 32 * 16
    assert soft[0] < 255 // 2 and soft[8 * 32 + 16] == 255  # a corner, the middle
    row = soft[8 * 32 : 9 * 32]
    assert row[0] < row[1] < row[2] == 255 and row[-1] == row[0]


# ---- words --------------------------------------------------------------------------------------
def test_dialog_summary_says_what_the_run_uses():
    text = texts.dialog_summary("drag points", 2, False)
    assert text.startswith(
        "Path \u201cdrag points\u201d: 2 handle \u2192 target pairs; no selection"
    )
    assert "Shift+click starts another stroke" in text
    one = texts.dialog_summary("p", 1, True)
    assert "1 handle \u2192 target pair; only the selected area" in one


def test_sentences_for_gimps_error_dialog():
    """GIMP names the procedure itself: no name repeated, one capital, one period."""
    assert texts.sentence("a layer group is selected: run DragGAN Drag again.") == (
        "A layer group is selected: run DragGAN Drag again."
    )
    assert texts.sentence("done") == "Done."


def test_progress_texts():
    assert texts.progress_text("invert", 120, 300) == "Inverting 120/300"
    assert texts.progress_text("drag", 35, 200, [4.2, 1.0]) == "Dragging 35/200 \u2014 4.2 px to go"
    assert texts.progress_text("drag", 0, 0) == "Dragging"


def test_progress_fraction_halves():
    assert texts.progress_fraction("invert", 150, 300) == 0.25
    assert texts.progress_fraction("drag", 200, 200) == 1.0
    assert texts.progress_fraction("drag", 0, 0) == 0.5


def test_layer_names():
    assert texts.layer_name(3) == "DragGAN drag (3 points)"
    assert texts.layer_name(1) == "DragGAN drag (1 point)"


def test_not_running_names_the_start_command():
    text = texts.error_sentence("not_running", "refused", protocol.DEFAULT_ADDRESS)
    assert "gimp-draggan serve" in text and protocol.DEFAULT_ADDRESS in text
    other = texts.error_sentence("timeout", "", "tcp://127.0.0.1:6000")
    assert "gimp-draggan serve --bind tcp://127.0.0.1:6000" in other


def test_remote_daemon_hint_mentions_keys():
    text = texts.error_sentence("not_running", "", "tcp://192.168.1.5:5589")
    assert "does not answer" in text and "keys" in text


def test_model_missing_says_how_to_download():
    text = texts.error_sentence("model_not_cached", "model ffhq is not cached", "x", "ffhq")
    assert "gimp-draggan models download ffhq" in text


def test_oom_says_smaller_selection():
    text = texts.error_sentence("out_of_memory", "CUDA out of memory", "x")
    assert "smaller area" in text


def test_other_codes_use_protocol_hints():
    assert protocol.ERROR_HINTS["queue_full"] in texts.error_sentence("queue_full", "busy", "x")


# ---- settings -----------------------------------------------------------------------------------
def test_address_order(tmp_path):
    env = {protocol.ADDRESS_ENV: "tcp://127.0.0.1:7001"}
    assert settings.load(tmp_path, "", {}).address == protocol.DEFAULT_ADDRESS
    assert settings.load(tmp_path, "", env).address == "tcp://127.0.0.1:7001"
    assert settings.load(tmp_path, "tcp://127.0.0.1:7002", env).address == "tcp://127.0.0.1:7002"
    (tmp_path / settings.CONFIG_NAME).write_text(
        json.dumps(
            {"address": "tcp://10.0.0.2:5589", "serve_command": ["/opt/py", "-m", "x", "serve"]}
        )
    )
    loaded = settings.load(tmp_path, "", {})
    assert loaded.address == "tcp://10.0.0.2:5589"
    assert loaded.serve_command == ("/opt/py", "-m", "x", "serve")
    assert settings.load(tmp_path, "", env).address == "tcp://127.0.0.1:7001"


def test_bad_address_and_broken_config(tmp_path):
    with pytest.raises(ValueError, match="DragGAN Drag dialog"):
        settings.load(tmp_path, "localhost", {})
    (tmp_path / settings.CONFIG_NAME).write_text("{nope")
    with pytest.raises(ValueError, match="re-run the gimp-draggan installer"):
        settings.load(tmp_path, "", {})


def test_curve_keys_from_config(tmp_path):
    keys = {"public": "a" * 40, "secret": "b" * 40, "server_public": "c" * 40}
    (tmp_path / settings.CONFIG_NAME).write_text(json.dumps({"curve": keys}))
    assert settings.load(tmp_path, "", {}).curve == ("a" * 40, "b" * 40, "c" * 40)
    (tmp_path / settings.CONFIG_NAME).write_text(json.dumps({"curve": {"public": "a"}}))
    with pytest.raises(ValueError, match="incomplete"):
        settings.load(tmp_path, "", {})


def test_transport_choice(tmp_path):
    assert settings.load(tmp_path, "", {}).transport is None
    assert settings.load(tmp_path, "", {settings.TRANSPORT_ENV: "zmtp"}).transport == "zmtp"
    with pytest.raises(ValueError, match="use pyzmq, zmtp"):
        settings.load(tmp_path, "", {settings.TRANSPORT_ENV: "carrier-pigeon"})


def test_serve_argv():
    local = settings.Settings(protocol.DEFAULT_ADDRESS, (), None)
    assert settings.serve_argv(local, which=lambda _n: "/usr/bin/gimp-draggan") == [
        "/usr/bin/gimp-draggan",
        "serve",
    ]
    assert settings.serve_argv(local, which=lambda _n: None) is None
    other = settings.Settings("tcp://127.0.0.1:6000", ("py", "-m", "gimp_draggan", "serve"), None)
    assert settings.serve_argv(other) == [
        "py",
        "-m",
        "gimp_draggan",
        "serve",
        "--bind",
        "tcp://127.0.0.1:6000",
    ]


@pytest.mark.parametrize(
    ("nick", "depth"),
    [
        ("u8-non-linear", "u8"),
        ("u8-linear", "u8"),
        ("u16-perceptual", "u16"),
        ("u32-linear", "f32"),
        ("half-non-linear", "f32"),
        ("double-linear", "f32"),
        ("float-non-linear", "f32"),
    ],
)
def test_depth_for_precision(nick, depth):
    assert settings.depth_for(nick) == depth


# ---- launcher -----------------------------------------------------------------------------------
def test_launcher_fails_early_when_daemon_exits(tmp_path):
    log = tmp_path / "serve.log"
    proc = launcher.start([sys.executable, "-c", "import sys; print('no model'); sys.exit(3)"], log)
    with pytest.raises(launcher.LaunchError, match=r"exit code 3.*serve\.log"):
        launcher.wait_ready(proc, lambda: False, 30.0, log, poll_s=0.05)
    assert "no model" in log.read_text()


def test_launcher_waits_for_ping(tmp_path):
    proc = launcher.start([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "l.log")
    calls = []
    try:
        launcher.wait_ready(
            proc, lambda: calls.append(1) or len(calls) >= 3, 30.0, tmp_path / "l.log", poll_s=0.01
        )
        assert len(calls) == 3
        with pytest.raises(launcher.LaunchError, match="did not answer within"):
            launcher.wait_ready(proc, lambda: False, 0.05, tmp_path / "l.log", poll_s=0.01)
    finally:
        proc.kill()
        proc.wait()


def test_launcher_missing_program(tmp_path):
    with pytest.raises(launcher.LaunchError, match="could not start"):
        launcher.start([str(tmp_path / "no-such-program")], tmp_path / "l.log")


def test_plugin_package_imports_no_heavy_modules():
    """The plug-in side must load in GIMP's bare Python: no numpy, torch or daemon imports."""
    import subprocess

    code = (
        "import sys; sys.modules['zmq'] = None; "
        "import gimp_draggan_plugin.flow, gimp_draggan_plugin.zmtp; "
        "bad = [m for m in ('numpy', 'torch', 'gimp_draggan', 'PIL') if m in sys.modules]; "
        "print(bad); sys.exit(bool(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_time_left_from_the_step_rate_of_the_current_phase():
    clock_ticks = iter([0.0, 1.0, 2.0, 3.0, 100.0, 100.5, 101.0])
    clock = texts.StepClock(lambda: next(clock_ticks))
    assert clock.update("invert", 1, 30) is None  # the phase's first report
    assert clock.update("invert", 2, 30) is None  # one step: no rate yet
    assert clock.update("invert", 3, 30) == 27 * 1.0  # 1 s a step, 27 steps left
    assert clock.update("invert", 30, 30) == 0.0
    assert clock.update("drag", 1, 200) is None  # a new phase starts over
    assert clock.update("drag", 2, 200) is None
    assert clock.update("drag", 3, 200) == 197 * 0.5
    assert texts.time_left(0.4) == "< 1 s left"
    assert texts.time_left(12.2) == "\u2264 13 s left"
    assert texts.time_left(98.5) == "\u2264 2 min left"
    assert texts.progress_text("drag", 3, 200, [2.5], 98.5) == (
        "Dragging 3/200 \u2014 2.5 px to go, \u2264 2 min left"
    )


# ---- the Model dropdown -------------------------------------------------------------------------
HELLO_MODELS = [
    {
        "name": "stylegan2-dogs-1024",
        "resolution": 1024,
        "domain": "dogs",
        "licence": "see the Self-Distilled StyleGAN project's terms",
        "licence_short": "Self-Distilled StyleGAN's terms",
        "download_bytes": 382_000_000,
        "downloadable": True,
        "cached": False,
    },
    {
        "name": "stylegan2-ffhq-512x512",
        "resolution": 512,
        "domain": "human faces",
        "description": "StyleGAN2 on FFHQ faces at 512 px",
        "licence": "NVIDIA Source Code License (non-commercial)",
        "licence_short": "NVIDIA, non-commercial",
        "downloadable": True,
        "cached": True,
        "future_key": 1,
    },
    {"name": "mine", "resolution": None, "cached": True},
    {"name": "stylegan-human-v2-512", "resolution": 512, "cached": False},
]


def test_dropdown_default_first_then_downloaded_then_the_rest_with_licence_and_size():
    found = models.from_rows(HELLO_MODELS)
    offered = models.choices(found)
    assert [c.nick for c in offered] == [
        models.DEFAULT_CHOICE,
        "stylegan2-ffhq-512x512",
        "mine",
        "stylegan2-dogs-1024",
        "stylegan-human-v2-512",
    ]
    assert [c.label for c in offered[1:]] == [
        "stylegan2-ffhq-512x512 \u2014 512 px human faces (NVIDIA, non-commercial)",
        "mine",
        "stylegan2-dogs-1024 \u2014 download (382 MB) \u00b7 1024 px dogs "
        "(Self-Distilled StyleGAN's terms)",
        "stylegan-human-v2-512 \u2014 not downloaded (fetch it by hand) \u00b7 512 px",
    ]
    assert "Licence: NVIDIA Source Code License (non-commercial)." in offered[1].help
    assert "downloads 382 MB first" in offered[3].help
    assert models.model_name(models.DEFAULT_CHOICE) == ""
    assert models.model_name("stylegan2-dogs-1024") == "stylegan2-dogs-1024"


def test_dropdown_table_follows_hello_and_touches_the_entry_file(tmp_path):
    entry = tmp_path / "gimp-draggan.py"
    entry.write_text("# entry\n")
    os.utime(entry, (1, 1))
    assert models.read_table(tmp_path) == []  # no table yet: the daemon's default only
    assert models.sync(tmp_path, {"models": HELLO_MODELS})
    assert entry.stat().st_mtime > 1
    assert models.read_table(tmp_path) == models.from_rows(HELLO_MODELS)
    os.utime(entry, (1, 1))
    assert not models.sync(tmp_path, {"models": HELLO_MODELS})  # unchanged: no re-registration
    assert entry.stat().st_mtime == 1
    downloaded = [dict(r, cached=True) for r in HELLO_MODELS]
    assert models.sync(tmp_path, {"models": downloaded}) and entry.stat().st_mtime > 1
    (tmp_path / models.TABLE_NAME).write_text("{broken")
    assert models.read_table(tmp_path) == []


def test_download_words():
    assert texts.download_text("big", 120_000_000, 364_000_000) == "Downloading big: 120 / 364 MB"
    assert texts.download_text("big", 5_000_000, 0) == "Downloading big: 5 MB"
    assert models.size_text(None) == "size unknown" and models.size_text(1_500_000_000) == "1.5 GB"
