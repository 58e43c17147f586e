# GIMP 3 batch script for the Cancel case of tests/e2e/test_gimp_e2e.py: it starts a long drag;
# the test kills the plug-in process meanwhile (what GIMP's Cancel does) and checks what is left.
import json
import os

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, Gio  # noqa: E402

image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(os.environ["E2E_PNG"]))
source = image.get_layers()[0]
path = Gimp.Path.new(image, "drag points")
image.insert_path(path, None, 0)
sid = path.bezier_stroke_new_moveto(30.0, 30.0)        # far to go: the drag cannot end before
path.bezier_stroke_lineto(sid, 130.0, 100.0)            # the test kills it
proc = Gimp.get_pdb().lookup_procedure("plug-in-draggan-drag")
cfg = proc.create_config()
cfg.set_property("image", image)
cfg.set_core_object_array("drawables", [source])
cfg.set_property("max-steps", 2000)
cfg.set_property("preset", "quality")
res = proc.run(cfg)
out = {"status": res.index(0).value_nick,
       "layers": [layer.get_name() for layer in image.get_layers()]}
probe = Gimp.Image.new(8, 8, Gimp.ImageBaseType.RGB)
out["alive"] = probe.get_width() == 8
probe.delete()
image.delete()
print("E2E-RESULT " + json.dumps(out), flush=True)
