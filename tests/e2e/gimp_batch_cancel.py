# GIMP 3 batch script for the Cancel case of tests/e2e/test_gimp_e2e.py: it starts a long drag
# inside a rectangular selection; the test kills the plug-in process meanwhile (what GIMP's Cancel
# does) and checks what is left: the image as before, or one undo step away (E2E_SELECTION).
import json
import os

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

SEL = json.loads(os.environ["E2E_SELECTION"])  # [x, y, w, h] image pixels


def pixels(drawable, fmt):
    rect = Gegl.Rectangle.new(0, 0, drawable.get_width(), drawable.get_height())
    return bytes(drawable.get_buffer().get(rect, 1.0, fmt, Gegl.AbyssPolicy.NONE))


image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(os.environ["E2E_PNG"]))
source = image.get_layers()[0]
before = pixels(source, "R'G'B'A u8")
path = Gimp.Path.new(image, "drag points")
image.insert_path(path, None, 0)
sid = path.bezier_stroke_new_moveto(30.0, 30.0)  # far to go: the drag cannot end before
path.bezier_stroke_lineto(sid, 130.0, 100.0)  # the test kills it
image.select_rectangle(Gimp.ChannelOps.REPLACE, *SEL)
image.clean_all()  # "as before" = not dirty afterwards
proc = Gimp.get_pdb().lookup_procedure("plug-in-draggan-drag")
cfg = proc.create_config()
cfg.set_property("image", image)
cfg.set_core_object_array("drawables", [source])
cfg.set_property("max-steps", 2000)
cfg.set_property("preset", "quality")
res = proc.run(cfg)
out = {
    "status": res.index(0).value_nick,
    "layers": [layer.get_name() for layer in image.get_layers()],
    "dirty": image.is_dirty(),
    "undo_enabled": image.undo_is_enabled(),
    "source_unchanged": pixels(source, "R'G'B'A u8") == before,
    "selection": list(Gimp.Selection.bounds(image)[2:]),
    "strokes": len(path.get_strokes()),
}
# A layer left by the killed run: where its mask lets it show (image pixels).
for layer in image.get_layers()[:-1]:
    mask = layer.get_mask()
    _ok, ox, oy = layer.get_offsets()
    shown = pixels(mask, "Y u8") if mask else b"\xff" * (layer.get_width() * layer.get_height())
    inside = outside = 0
    for i, value in enumerate(shown):
        if value:
            x, y = ox + i % layer.get_width(), oy + i // layer.get_width()
            if SEL[0] <= x < SEL[0] + SEL[2] and SEL[1] <= y < SEL[1] + SEL[3]:
                inside += 1
            else:
                outside += 1
    out["left"] = {
        "masked": mask is not None,
        "shown_inside": inside,
        "shown_outside": outside,
        "rect": [ox, oy, layer.get_width(), layer.get_height()],
    }
probe = Gimp.Image.new(8, 8, Gimp.ImageBaseType.RGB)
out["alive"] = probe.get_width() == 8
probe.delete()
image.delete()
print("E2E-RESULT " + json.dumps(out), flush=True)
