#!/usr/bin/env python3
"""GIMP 3 plug-in "DragGAN Drag…" (Filters → Distorts): drag points of a photo with DragGAN.

The only module that touches GIMP. It reads the layer, the path (each stroke: first anchor = handle,
last anchor = target) and the selection (what may move), hands them to `gimp_draggan_plugin.flow`,
which talks to the gimp-draggan daemon, and writes the answer as a new layer above the source in
one undo group. The installer puts this file at plug-ins/gimp-draggan/gimp-draggan.py and the helper
package beside it (plug-ins/gimp-draggan/gimp_draggan_plugin/).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio, GLib, GObject  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

PROC_NAME = "plug-in-draggan-drag"
HELP = (
    "Moves parts of a photo the way DragGAN does: each handle point is dragged onto its target "
    "and the photo's own pixels move along the drag, for example to turn a head, open a mouth or "
    "lift a corner of the lips.\n\n"
    "1. Mark the points with the Paths tool (B): click once on the part to move (the first "
    "anchor = the handle), then click where it should go (the last anchor = the target). "
    "Shift+click starts another stroke = another pair (up to 16).\n"
    "2. Optional: select the area that may change (any selection tool, soft edges pass through); "
    "the rest stays as it is. Without a selection the face or subject around the points changes, "
    "feathered.\n"
    "3. Run Filters \u2192 Distorts \u2192 DragGAN Drag\u2026 on the photo's layer. A live "
    "preview, masked by the selection, shows the result forming; the result is a new layer above "
    "the photo (one undo step); the photo's layer is not changed. Cancel leaves the image as "
    "before, or one undo step away.\n\n"
    "Needs the gimp-draggan daemon (`gimp-draggan serve`); the plug-in offers to start a local "
    "one. The Help button opens the full how-to."
)
ARG_NAMES = ("model", "max-steps", "mask-strength", "preset", "daemon-address")
# The result layer has the image's mode: pixels travel as R'G'B'A and GEGL converts them to grey
# or to the nearest palette entry when they are written.
LAYER_TYPES = {
    Gimp.ImageBaseType.RGB: Gimp.ImageType.RGBA_IMAGE,
    Gimp.ImageBaseType.GRAY: Gimp.ImageType.GRAYA_IMAGE,
    Gimp.ImageBaseType.INDEXED: Gimp.ImageType.INDEXEDA_IMAGE,
}


def _error(procedure, status, message):
    return procedure.new_return_values(
        status, GLib.Error.new_literal(GLib.quark_from_string("gimp-draggan"), message, 0)
    )


class GimpHost:
    """`flow.Host` on a GIMP image: progress bar, the live result layer, questions.

    Everything the plug-in does to the image happens inside one undo group, opened with the first
    change (the layer) and closed on every path; GIMP closes it itself when the plug-in is killed
    (Cancel). Live previews go into that same layer, masked by the selection (soft edges without
    one), so a killed run leaves one undo step that changes nothing outside the selection."""

    def __init__(self, image, source, pairs, selection, interactive):
        self.image = image
        self.source = source
        self.pairs = pairs
        self.selection = selection  # layer-sized mask bytes, or None (no selection)
        self.interactive = interactive
        self.layer = None
        self.box = None
        self.grouped = False
        _ok, self.src_x, self.src_y = source.get_offsets()

    # -- the new layer ----------------------------------------------------------------------------
    def _layer_at(self, box, name):
        """The new layer, covering `box` (layer pixels of the source); made at the first call."""
        if self.layer is not None and self.box != box:
            self.image.remove_layer(self.layer)
            self.layer = None
        if self.layer is None:
            if not self.grouped:  # the undo group opens with the first change, so a run that
                self.image.undo_group_start()  # fails before any leaves no empty undo step
                self.grouped = True
            x, y, width, height = box
            layer = Gimp.Layer.new(
                self.image,
                name,
                width,
                height,
                LAYER_TYPES[self.image.get_base_type()],
                100.0,
                Gimp.LayerMode.NORMAL,
            )
            parent = self.source.get_parent()
            self.image.insert_layer(layer, parent, self.image.get_item_position(self.source))
            layer.set_offsets(self.src_x + x, self.src_y + y)
            self.layer, self.box = layer, box
        return self.layer

    @staticmethod
    def _set(drawable, width, height, data, fmt):
        buffer = drawable.get_buffer()
        buffer.set(Gegl.Rectangle.new(0, 0, width, height), fmt, data)
        buffer.flush()
        drawable.update(0, 0, width, height)

    # -- flow.Host ------------------------------------------------------------------------------
    def progress(self, text, fraction):
        Gimp.progress_set_text(text)
        Gimp.progress_update(min(max(fraction, 0.0), 1.0))

    def preview(self, jpeg, box):
        """Show a daemon preview (a small JPEG of the crop `box`, layer pixels) in the new layer,
        through a layer mask made from the selection (or soft edges without one).

        The JPEG is opened as a separate, never displayed image and scaled to the crop's size; the
        part on the source layer is copied into the new layer, so the photo's image and its undo
        history see only those pixels."""
        from gimp_draggan_plugin import flow, mask, texts

        part = flow.visible_part(box, self.source.get_width(), self.source.get_height())
        if part is None:
            return
        on_layer, in_crop = part
        fd, path = tempfile.mkstemp(suffix=".jpg", prefix="draggan-preview-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(jpeg)
            shown = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(path))
        finally:
            os.unlink(path)
        if shown is None:
            return
        try:
            shown.scale(box[2], box[3])
            data = (
                shown.get_layers()[0]
                .get_buffer()
                .get(Gegl.Rectangle.new(*in_crop), 1.0, "R'G'B'A u8", Gegl.AbyssPolicy.CLAMP)
            )
        finally:
            shown.delete()
        layer = self._layer_at(on_layer, texts.PREVIEW_NAME)
        width, height = on_layer[2], on_layer[3]
        if layer.get_mask() is None:
            if self.selection is not None:
                shape = mask.crop(self.selection, self.source.get_width(), on_layer)
            else:
                shape = mask.crop(mask.soft_edges(box[2], box[3]), box[2], in_crop)
            layer_mask = layer.create_mask(Gimp.AddMaskType.BLACK)
            layer.add_mask(layer_mask)
            self._set(layer_mask, width, height, shape, "Y u8")
        self._set(layer, width, height, bytes(data), "R'G'B'A u8")
        Gimp.displays_flush()

    def finish(self, result):
        """The daemon's patch (already blended through the selection) replaces the preview."""
        from gimp_draggan_plugin import settings, texts

        box = (result.x, result.y, result.width, result.height)
        layer = self._layer_at(box, texts.layer_name(self.pairs, result))
        if layer.get_mask() is not None:
            layer.remove_mask(Gimp.MaskApplyMode.DISCARD)
        layer.set_name(texts.layer_name(self.pairs, result))
        self._set(
            layer, result.width, result.height, result.patch, settings.DEPTH_FORMATS[result.depth]
        )
        Gimp.displays_flush()

    def notice(self, text):
        Gimp.message(text)

    def close(self):
        """End the undo group if a change opened it (always called, also after errors)."""
        if self.grouped:
            self.image.undo_group_end()
            self.grouped = False

    def discard(self):
        if self.layer is not None:
            self.image.remove_layer(self.layer)
            self.layer = None
            Gimp.displays_flush()

    def confirm(self, question):
        gi.require_version("Gtk", "3.0")
        from gi.repository import Gtk

        dialog = Gtk.MessageDialog(
            message_type=Gtk.MessageType.QUESTION, buttons=Gtk.ButtonsType.YES_NO, text=question
        )
        dialog.set_title("DragGAN Drag")
        answer = dialog.run()
        dialog.destroy()
        while Gtk.events_pending():  # let it vanish before the job runs, not after
            Gtk.main_iteration()
        return answer == Gtk.ResponseType.YES


# -- reading the image ---------------------------------------------------------------------------
def check_drawables(image, drawables):
    """The one RGB(A) layer to work on, or a sentence saying what to select instead."""
    if len(drawables) != 1:
        return None, (
            f"{len(drawables)} layers are selected: select exactly one layer (the photo) "
            "in the Layers dialog"
        )
    item = drawables[0]
    if item.is_layer_mask():
        return None, (
            "a layer mask is selected: click the layer's thumbnail (not its mask) in "
            "the Layers dialog, then run DragGAN Drag again"
        )
    if item.is_channel():
        return None, "a channel is selected: select the photo's layer in the Layers dialog"
    if not item.is_layer():
        return None, "select the photo's layer in the Layers dialog"
    if item.is_group():
        return None, (
            "a layer group is selected: select one layer inside it (or merge the group "
            "with Layer \u2192 Merge Layer Group) and run DragGAN Drag again"
        )
    return item, None


def read_paths(image):
    from gimp_draggan_plugin import points

    selected = {p.get_id() for p in (image.get_selected_paths() or [])}
    infos = []
    for path in image.get_paths() or []:
        strokes = []
        for stroke_id in path.get_strokes() or []:
            _kind, coords, _closed = path.stroke_get_points(stroke_id)
            strokes.append(list(coords))
        infos.append(
            points.PathInfo(path.get_name(), path.get_id() in selected, path.get_visible(), strokes)
        )
    return infos


def read_mask(image, layer, width, height):
    from gimp_draggan_plugin import mask

    _ok, non_empty, x1, y1, x2, y2 = Gimp.Selection.bounds(image)
    if not non_empty:
        return None
    _ok, off_x, off_y = layer.get_offsets()
    layer_rect = mask.Rect(off_x, off_y, off_x + width, off_y + height)
    region = mask.selection_region(mask.Rect(x1, y1, x2, y2), layer_rect)
    data = (
        image.get_selection()
        .get_buffer()
        .get(
            Gegl.Rectangle.new(region.x0, region.y0, region.width, region.height),
            1.0,
            "Y u8",
            Gegl.AbyssPolicy.NONE,
        )
    )
    return mask.place_mask(bytes(data), region, layer_rect)


def read_options(config):
    from gimp_draggan_plugin import flow, models

    return flow.Options(
        model=models.model_name(config.get_property("model")),
        steps=int(config.get_property("max-steps")),
        mask_strength=float(config.get_property("mask-strength")),
        preset=config.get_property("preset"),
    )


# -- the procedure -------------------------------------------------------------------------------
def run(procedure, run_mode, image, drawables, config, data):
    """Every failure ends as an error return with a sentence, never as a traceback in GIMP."""
    try:
        return _run(procedure, run_mode, image, drawables, config)
    except Exception as exc:
        import traceback

        traceback.print_exc()  # to GIMP's stderr, for bug reports
        return _error(
            procedure,
            Gimp.PDBStatusType.EXECUTION_ERROR,
            f"The plug-in failed unexpectedly ({type(exc).__name__}: {exc}). Please "
            "report it with the output of `gimp-draggan doctor`.",
        )


def _run(procedure, run_mode, image, drawables, config):
    try:
        from gimp_draggan_plugin import flow, mask, points, settings, texts
        from gimp_draggan_plugin.client import Client, read_secret
        from gimp_draggan_plugin.transport import CurveKeys
    except ImportError as exc:
        return _error(
            procedure,
            Gimp.PDBStatusType.EXECUTION_ERROR,
            f"The DragGAN plug-in is incomplete ({exc}): re-run the gimp-draggan "
            "installer and restart GIMP.",
        )
    layer, problem = check_drawables(image, drawables)
    if problem:
        return _error(procedure, Gimp.PDBStatusType.CALLING_ERROR, texts.sentence(problem))

    # The points and the selection are checked before the dialog opens: a person without a usable
    # path learns how to draw one instead of filling in a dialog first.
    width, height = layer.get_width(), layer.get_height()
    try:
        _ok, off_x, off_y = layer.get_offsets()
        path = points.choose_path(read_paths(image))
        pairs = points.to_layer(points.pairs_from_path(path), off_x, off_y, width, height)
        selection = read_mask(image, layer, width, height)
        if selection is not None:
            fixed = mask.handles_fixed(selection, width, [h for h, _t in pairs])
            if fixed:
                numbers = ", ".join(str(i + 1) for i in fixed)
                raise points.PointsError(
                    f"the handle of pair {numbers} lies outside the selection, so it cannot "
                    "move: select an area that includes the handles (or Select \u2192 None)"
                )
    except ValueError as exc:  # PointsError, MaskError
        return _error(procedure, Gimp.PDBStatusType.CALLING_ERROR, texts.sentence(str(exc)))

    interactive = run_mode == Gimp.RunMode.INTERACTIVE
    if interactive:
        from gi.repository import GimpUi

        GimpUi.init("gimp-draggan")
        dialog = GimpUi.ProcedureDialog.new(procedure, config, "DragGAN Drag")
        label = dialog.get_label(
            "how-to",
            texts.dialog_summary(path.name, len(pairs), selection is not None),
            False,
            False,
        )
        label.set_line_wrap(True)
        label.set_max_width_chars(60)
        label.set_xalign(0.0)
        dialog.fill(["how-to", *ARG_NAMES])
        ok = dialog.run()
        dialog.destroy()
        if not ok:
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())

    try:
        config_settings = settings.load(
            Path(HERE), config.get_property("daemon-address") or "", os.environ
        )
        options = read_options(config)
        depth = settings.depth_for(image.get_precision().value_nick)
        pixels = layer.get_buffer().get(
            Gegl.Rectangle.new(0, 0, width, height),
            1.0,
            settings.DEPTH_FORMATS[depth],
            Gegl.AbyssPolicy.NONE,
        )
        layer_data = flow.LayerData(width, height, depth, bytes(pixels))
    except ValueError as exc:  # bad settings
        return _error(procedure, Gimp.PDBStatusType.CALLING_ERROR, texts.sentence(str(exc)))

    curve = None
    if config_settings.curve is not None:
        curve = CurveKeys(*(k.encode("ascii") for k in config_settings.curve))
    host = GimpHost(image, layer, len(pairs), selection, interactive)
    Gimp.progress_init("DragGAN Drag")
    try:
        # The secret file as `serve` keeps it ($GIMP_DRAGGAN_SECRET or the user's), else the
        # installer's copy (a Flatpak GIMP cannot read ~/.config; the copy may be stale).
        secret = read_secret() or config_settings.secret
        with Client(
            config_settings.address, curve=curve, prefer=config_settings.transport, secret=secret
        ) as client:
            flow.run(
                host, client, config_settings, layer_data, pairs, selection, options, Path(HERE)
            )
    except flow.PluginError as exc:
        return _error(procedure, Gimp.PDBStatusType.EXECUTION_ERROR, texts.sentence(str(exc)))
    finally:
        host.close()
        Gimp.progress_end()
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


def model_choice():
    """The Model dropdown from the table beside this file (see gimp_draggan_plugin.models):
    GIMP fixes it now, at registration; a run that finds the daemon's models changed rewrites
    the table and touches this file, so GIMP registers the plug-in anew at its next start.
    Returns (choice, default). An incomplete install still registers; its run says so."""
    choice = Gimp.Choice.new()
    try:
        from gimp_draggan_plugin import models
    except ImportError:
        choice.add("daemon-default", 0, "The daemon's default", "")
        return choice, "daemon-default"
    for index, entry in enumerate(models.choices(models.read_table(Path(HERE)))):
        choice.add(entry.nick, index, entry.label, entry.help)
    return choice, models.DEFAULT_CHOICE


class DragGanPlugin(Gimp.PlugIn):
    def do_set_i18n(self, name):
        return False

    def do_query_procedures(self):
        # Help: the pages shipped beside this file (help/en/gimp-help.xml maps the procedure's
        # help id to help/en/index.html), offline; GIMP's Help button opens them.
        self.set_help_domain("gimp-draggan", Gio.File.new_for_path(os.path.join(HERE, "help")))
        return [PROC_NAME]

    def do_create_procedure(self, name):
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        procedure.set_image_types("*")  # Grey and indexed layers are edited through RGB.
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_menu_label("_DragGAN Drag\u2026")
        procedure.add_menu_path("<Image>/Filters/Distorts")
        procedure.set_documentation(
            "Drag points of a photo with DragGAN: each path stroke moves its first point to its "
            "last",
            HELP,
            name,
        )
        procedure.set_attribution("gimp-draggan contributors", "gimp-draggan contributors", "2026")
        flags = GObject.ParamFlags.READWRITE
        procedure.add_choice_argument(
            "model",
            "_Model",
            "The daemon's models, downloaded ones first; one marked 'download' is fetched "
            "first (asked before). NVIDIA's StyleGAN2 weights are for non-commercial use only.",
            *model_choice(),
            flags,
        )
        procedure.add_int_argument(
            "max-steps",
            "Max ste_ps",
            "Most drag steps (it stops earlier once every handle reached its target)",
            1,
            2000,
            200,
            flags,
        )
        procedure.add_double_argument(
            "mask-strength",
            "Mask s_trength",
            "How firmly the unselected area is held in place "
            "(DragGAN's mask weight; 0 = not at all)",
            0.0,
            1000.0,
            20.0,
            flags,
        )
        presets = Gimp.Choice.new()
        presets.add("fast", 0, "Fast", "Quick inversion of the photo (fewer steps)")
        presets.add("quality", 1, "Quality", "Slower, more faithful inversion of the photo")
        procedure.add_choice_argument(
            "preset",
            "_Inversion",
            "How carefully the photo is first rebuilt by the model",
            presets,
            "fast",
            flags,
        )
        procedure.add_string_argument(
            "daemon-address",
            "Daemon _address",
            "ZeroMQ address of the gimp-draggan daemon; "
            "empty = $GIMP_DRAGGAN_DAEMON, the installer's setting, or tcp://127.0.0.1:5589",
            "",
            flags,
        )
        return procedure


Gimp.main(DragGanPlugin.__gtype__, sys.argv)
