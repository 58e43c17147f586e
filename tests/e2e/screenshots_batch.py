# GIMP 3 batch script (python-fu-eval) for tests/e2e/screenshots.py, run by GIMP with its windows
# (gimp_batch.sh with GIMP_GUI=1): the demo's photo in a display, its two strokes as a path, the
# elliptic selection, then DragGAN Drag called interactively, so its dialog opens as after a menu
# click. Prints "SHOTS-RESULT <json>" with the call's status.
import json
import os

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, Gio  # noqa: E402

scene = json.loads(os.environ["SHOTS_SCENE"])
image = Gimp.file_load(
    Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(os.environ["SHOTS_PHOTO"])
)
layer = image.get_layers()[0]
path = Gimp.Path.new(image, "drag points")
image.insert_path(path, None, 0)
for hx, hy, tx, ty in scene["pairs"]:
    stroke = path.bezier_stroke_new_moveto(hx + 0.5, hy + 0.5)  # pixel centres
    path.bezier_stroke_lineto(stroke, tx + 0.5, ty + 0.5)
path.set_visible(True)
cx, cy, rx, ry = scene["ellipse"]
image.select_ellipse(Gimp.ChannelOps.REPLACE, cx - rx, cy - ry, 2 * rx, 2 * ry)
image.clean_all()
Gimp.Display.new(image)
Gimp.displays_flush()

proc = Gimp.get_pdb().lookup_procedure("plug-in-draggan-drag")
config = proc.create_config()
config.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
config.set_property("image", image)
config.set_core_object_array("drawables", [layer])
config.set_property("model", "embedded")
result = proc.run(config)
extra = [str(result.index(i)) for i in range(1, result.length())]
status = {"status": result.index(0).value_nick, "message": " ".join(extra)}
print("SHOTS-RESULT " + json.dumps(status), flush=True)
