# GIMP 3 batch script (python-fu-eval, fed on stdin by tests/e2e/test_gimp_e2e.py).
# It runs inside the chroot's GIMP and prints one line "E2E-RESULT <json>" with what it saw;
# the test asserts on that. Settings arrive as environment variables (gimp_batch.sh GIMP_BATCH_ENV).
import json
import os

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

PROC = "plug-in-draggan-drag"
env = os.environ
PAD_X, PAD_Y = int(env["E2E_PAD_X"]), int(env["E2E_PAD_Y"])
STROKES = json.loads(env["E2E_STROKES"])  # [[hx, hy, tx, ty], ...] image pixels
SEL = json.loads(env["E2E_SELECTION"])  # [x, y, w, h] image pixels
out = {"cases": {}}
BANDS = 12  # change_facts: distance bands from the changed region's border


def pixels(layer):
    w, h = layer.get_width(), layer.get_height()
    rect = Gegl.Rectangle.new(0, 0, w, h)
    return bytes(layer.get_buffer().get(rect, 1.0, "R'G'B'A u8", Gegl.AbyssPolicy.NONE))


def call(image, layer, **props):
    proc = Gimp.get_pdb().lookup_procedure(PROC)
    if proc is None:
        return None
    cfg = proc.create_config()
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", [layer])
    for name, value in props.items():
        cfg.set_property(name.replace("_", "-"), value)
    res = proc.run(cfg)
    extra = [str(res.index(i)) for i in range(1, res.length())]
    return {"status": res.index(0).value_nick, "message": " ".join(extra)}


def layer_info(image):
    return [
        {
            "name": lay.get_name(),
            "offsets": list(lay.get_offsets()[1:]),
            "size": [lay.get_width(), lay.get_height()],
        }
        for lay in image.get_layers()
    ]


image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(env["E2E_PNG"]))
source = image.get_layers()[0]
# Give the layer an offset inside a larger canvas, so layer and image pixels differ.
image.resize(source.get_width() + 2 * PAD_X, source.get_height() + 2 * PAD_Y, PAD_X, PAD_Y)
out["registered"] = Gimp.get_pdb().lookup_procedure(PROC) is not None
path = Gimp.Path.new(image, "drag points")
image.insert_path(path, None, 0)
for hx, hy, tx, ty in STROKES:
    sid = path.bezier_stroke_new_moveto(float(hx), float(hy))
    path.bezier_stroke_lineto(sid, float(tx), float(ty))
image.select_rectangle(Gimp.ChannelOps.REPLACE, *SEL)
before = pixels(source)
sw, sh = source.get_width(), source.get_height()
_ok, sx, sy = source.get_offsets()

# ---- case 1: a drag through the real daemon, every argument at its default -------------------
res = call(image, source)
case = {"result": res, "layers": layer_info(image), "source_unchanged": pixels(source) == before}
layers = image.get_layers()
if res and len(layers) == 2:
    new = layers[0]
    _ok, nx, ny = new.get_offsets()
    nw, nh = new.get_width(), new.get_height()
    data = pixels(new)
    outside_equal = outside_count = inside_changed = inside_count = 0
    for y in range(nh):
        for x in range(nw):
            ix, iy = nx + x, ny + y  # image pixel
            lx, ly = ix - sx, iy - sy  # source layer pixel
            got = data[(y * nw + x) * 4 : (y * nw + x) * 4 + 4]
            want = before[(ly * sw + lx) * 4 : (ly * sw + lx) * 4 + 4]
            if SEL[0] <= ix < SEL[0] + SEL[2] and SEL[1] <= iy < SEL[1] + SEL[3]:
                inside_count += 1
                inside_changed += got != want
            else:
                outside_count += 1
                outside_equal += got == want
    case.update(
        new_rect=[nx, ny, nw, nh],
        has_mask=new.get_mask() is not None,
        outside_count=outside_count,
        outside_equal=outside_equal,
        inside_count=inside_count,
        inside_changed=inside_changed,
    )
out["cases"]["drag"] = case


def change_facts(new, src, src_before):
    """How the new layer, laid over the source, changes it: per pixel the largest channel change
    alpha * |new - source| ("changed": 1 level or more); the changed pixels' count and bounding
    box; and the mean change of the changed pixels by their distance (4-neighbour steps) to the
    nearest unchanged pixel of the source layer (band 1: the changed region's border; the source
    layer's own edge is no border), and beyond the last band."""
    _ok, nx, ny = new.get_offsets()
    nw, nh = new.get_width(), new.get_height()
    _ok, ox, oy = src.get_offsets()
    ow, oh = src.get_width(), src.get_height()
    data = pixels(new)
    change = [0.0] * (nw * nh)
    for y in range(nh):
        for x in range(nw):
            i, j = (y * nw + x) * 4, ((ny + y - oy) * ow + nx + x - ox) * 4
            alpha = data[i + 3] / 255
            change[y * nw + x] = max(alpha * abs(data[i + c] - src_before[j + c]) for c in range(3))
    changed = [k for k, d in enumerate(change) if d >= 1.0]
    facts = {"new_rect": [nx, ny, nw, nh], "changed": len(changed)}
    if not changed:
        return facts
    xs, ys = [k % nw for k in changed], [k // nw for k in changed]
    x0, y0, x1, y1 = min(xs), min(ys), max(xs) + 1, max(ys) + 1
    # Distance to the nearest unchanged source pixel: unchanged pixels of the new layer are 0,
    # changed ones next to a source pixel outside the new layer are 1.
    dist = [0 if d < 1.0 else None for d in change]
    todo = [k for k, d in enumerate(dist) if d == 0]
    for k in changed:
        x, y = k % nw, k // nw
        outside = (
            (x == 0 and nx > ox)
            or (y == 0 and ny > oy)
            or (x == nw - 1 and nx + nw < ox + ow)
            or (y == nh - 1 and ny + nh < oy + oh)
        )
        if outside:
            dist[k] = 1
    todo += [k for k in changed if dist[k] == 1]
    while todo:
        step = []
        for k in todo:
            x, y = k % nw, k // nw
            for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                if 0 <= x + dx < nw and 0 <= y + dy < nh:
                    m = (y + dy) * nw + x + dx
                    if dist[m] is None:
                        dist[m] = dist[k] + 1
                        step.append(m)
        todo = step
    bands = [[] for _ in range(BANDS + 1)]
    for k in changed:
        if dist[k] is not None:  # None: no unchanged pixel in reach (the whole layer changed)
            bands[min(dist[k], BANDS + 1) - 1].append(change[k])
    facts.update(
        changed_box=[nx + x0, ny + y0, x1 - x0, y1 - y0],
        band_means=[round(sum(b) / len(b), 2) if b else None for b in bands[:BANDS]],
        band_counts=[len(b) for b in bands[:BANDS]],
        inner_mean=round(sum(bands[BANDS]) / len(bands[BANDS]), 2) if bands[BANDS] else None,
        max_change=round(max(change), 2),
    )
    return facts


# ---- case 1c: no selection -> the daemon picks the subject around the points, feathered ---------
other = image.duplicate()
Gimp.Selection.none(other)
src = other.get_layers()[-1]
before_other = pixels(src)
ids = {lay.get_id() for lay in other.get_layers()}
res = call(other, src)
new = [lay for lay in other.get_layers() if lay.get_id() not in ids]
case = {
    "result": res,
    "selection_empty": Gimp.Selection.is_empty(other),
    "layers_added": len(new),
    "new_name": new[0].get_name() if new else None,
    "has_mask": bool(new) and new[0].get_mask() is not None,
    "source_unchanged": pixels(src) == before_other,
}
if len(new) == 1:
    case.update(change_facts(new[0], src, before_other))
out["cases"]["no_selection"] = case
other.delete()

# ---- case 1a: the Model dropdown (a Gimp.Choice fixed at registration), and a drag with a pick --
arg = next(
    a for a in Gimp.get_pdb().lookup_procedure(PROC).get_arguments() if a.get_name() == "model"
)
choice = Gimp.param_spec_choice_get_choice(arg)
ids = {lay.get_id() for lay in image.get_layers()}
res = call(image, source, model="embedded", max_steps=5)
new = [lay for lay in image.get_layers() if lay.get_id() not in ids]
out["cases"]["model_choice"] = {
    "is_choice": isinstance(arg, Gimp.ParamChoice),
    "default": Gimp.param_spec_choice_get_default(arg),
    "choices": {nick: choice.get_label(nick) for nick in choice.list_nicks()},
    "result": res,
    "layers_added": len(new),
    "new_name": new[0].get_name() if new else None,
}
for lay in new:
    image.remove_layer(lay)

# ---- case 1b: grey and indexed copies: the edit comes back in the image's own mode -------------
for mode in ("grey", "indexed"):
    other = image.duplicate()
    if mode == "grey":
        other.convert_grayscale()
    else:
        other.convert_indexed(
            Gimp.ConvertDitherType.NONE, Gimp.ConvertPaletteType.GENERATE, 255, False, False, ""
        )
    src = other.get_layers()[-1]
    before_other = pixels(src)
    ids = {lay.get_id() for lay in other.get_layers()}
    res = call(other, src, max_steps=5)
    new = [lay for lay in other.get_layers() if lay.get_id() not in ids]
    data = pixels(new[0]) if new else b""
    out["cases"][mode] = {
        "result": res,
        "layers_added": len(new),
        "new_name": new[0].get_name() if new else None,
        "has_mask": bool(new) and new[0].get_mask() is not None,
        "base_type": other.get_base_type().value_nick,
        "new_type": new[0].type().value_nick if new else None,
        "source_unchanged": pixels(src) == before_other,
        "grey_pixels": all(data[i] == data[i + 1] == data[i + 2] for i in range(0, len(data), 4)),
    }
    other.delete()

# ---- case 2: no daemon at the address -> an error naming the start command ---------------------
count = len(image.get_layers())
res = call(image, source, daemon_address=env["E2E_DEAD_ADDRESS"])
out["cases"]["down"] = {"result": res, "layers_added": len(image.get_layers()) - count}

# ---- case 3: bad input -> a clear message, nothing changed ---------------------------------------
path.remove_stroke(path.get_strokes()[0])
sid = path.bezier_stroke_new_moveto(1.0, 1.0)
path.bezier_stroke_lineto(sid, float(sx + sw + 30), 2.0)  # target beyond the layer
count = len(image.get_layers())
res = call(image, source)
out["cases"]["outside"] = {"result": res, "layers_added": len(image.get_layers()) - count}

# ---- case 4: a layer group, a layer mask, a channel -> what to select instead -----------------
group = Gimp.GroupLayer.new(image, "group")
image.insert_layer(group, None, 0)
mask = source.create_mask(Gimp.AddMaskType.WHITE)
source.add_mask(mask)
channel = Gimp.Channel.new(
    image, "chan", image.get_width(), image.get_height(), 50.0, Gegl.Color.new("red")
)
image.insert_channel(channel, None, 0)
out["cases"]["wrong_drawable"] = {
    kind: call(image, item)
    for kind, item in (("group", group), ("mask", mask), ("channel", channel))
}

# GIMP is still alive and working after the failed calls.
probe = Gimp.Image.new(8, 8, Gimp.ImageBaseType.RGB)
out["alive"] = probe is not None and probe.get_width() == 8
probe.delete()
image.delete()
print("E2E-RESULT " + json.dumps(out), flush=True)
