"""Dev check: the torch runner against the real TFLite interpreter on the same inputs.

Needs a second Python with ``ai-edge-litert`` (not a project dependency), e.g.

    python3 -m venv /tmp/litert && /tmp/litert/bin/pip install ai-edge-litert numpy
    python -m gimp_draggan_tools.faces_verify --wheel mediapipe-0.10.14-...whl \
        --litert /tmp/litert/bin/python

Prints, per model, the largest absolute difference of the raw outputs (and the largest output,
for scale) over random inputs in the model's input range; ``--json`` puts it all on the last line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import zipfile
from pathlib import Path

import numpy as np

# Runs in the litert Python: interpreter outputs for every input in the .npy file.
_REFERENCE = """
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
model, inputs, out = sys.argv[1:4]
it = Interpreter(model_path=model, num_threads=1)
it.allocate_tensors()
result = {}
for k, x in enumerate(np.load(inputs)):
    it.set_tensor(it.get_input_details()[0]["index"], x[None])
    it.invoke()
    for d in it.get_output_details():
        result[f"{k}/{d['name']}"] = it.get_tensor(d["index"])
np.savez(out, **result)
"""
_RANGES = {"face_detection": (-1.0, 1.0), "face_landmark": (0.0, 1.0)}


def compare(wheel: Path, litert_python: str, count: int = 4) -> dict[str, dict[str, float]]:
    import torch

    from gimp_draggan.faces.graph import Graph
    from gimp_draggan_tools.faces_convert import MODELS

    assets = Path(__file__).resolve().parent.parent / "daemon" / "assets"
    rng = np.random.default_rng(0)
    report = {}
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as whl:
        for stem, member in MODELS.items():
            graph = Graph.load(assets / f"{stem}.json", assets / f"{stem}.safetensors")
            shape = graph.inputs[0]["shape"]
            lo, hi = _RANGES[stem]
            xs = rng.uniform(lo, hi, size=(count, *shape[1:])).astype(np.float32)
            model, inputs, out = (Path(tmp) / f"{stem}{ext}" for ext in (".tflite", ".npy", ".npz"))
            model.write_bytes(whl.read(member))
            np.save(inputs, xs)
            subprocess.run(
                [litert_python, "-c", _REFERENCE, str(model), str(inputs), str(out)], check=True
            )
            ref = np.load(out)
            worst = largest = 0.0
            with torch.no_grad():
                for k, x in enumerate(xs):
                    got = graph(torch.from_numpy(x[None]))
                    for spec, tensor in zip(graph.outputs, got, strict=True):
                        want = ref[f"{k}/{spec['name']}"]
                        worst = max(worst, float(np.abs(tensor.numpy() - want).max()))
                        largest = max(largest, float(np.abs(want).max()))
            report[stem] = {"max_abs_diff": worst, "max_abs_output": largest, "inputs": count}
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", required=True, type=Path, help="mediapipe wheel (.whl)")
    parser.add_argument("--litert", required=True, help="a Python with ai-edge-litert installed")
    parser.add_argument("--json", action="store_true", help="JSON report on the last line")
    args = parser.parse_args(argv)
    report = compare(args.wheel, args.litert)
    for stem, r in report.items():
        print(
            f"{stem}: max |torch - litert| = {r['max_abs_diff']:.3g} "
            f"(outputs up to {r['max_abs_output']:.3g}, {r['inputs']} random inputs)"
        )
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
