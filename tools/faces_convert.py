"""Dev-time converter: MediaPipe's face .tflite models -> torch-friendly assets.

Run once by a developer (``pip install tflite``, a dev-only dependency):

    python -m gimp_draggan_tools.faces_convert --wheel mediapipe-0.10.14-...whl \
        [--out daemon/assets]

It reads ``face_detection_short_range.tflite`` (BlazeFace) and ``face_landmark.tflite`` (FaceMesh)
from MediaPipe's wheel (Apache-2.0), folds the fp16 ``DEQUANTIZE`` ops into float32 constants,
turns the weights into torch layouts (conv OHWI -> OIHW, depthwise 1HWC -> C1HW, PReLU [1,1,C] ->
[C]) and writes, per model, ``face_<name>.safetensors`` (the constants) and ``face_<name>.json``
(the op list that ``gimp_draggan.faces.graph`` executes). Nothing here runs in the product.
"""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

MODELS = {
    "face_detection": "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    "face_landmark": "mediapipe/modules/face_landmark/face_landmark.tflite",
}
_SUPPORTED = {
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "ADD",
    "RELU",
    "PRELU",
    "MAX_POOL_2D",
    "PAD",
    "RESHAPE",
    "CONCATENATION",
}


def _tensor_value(model: Any, graph: Any, index: int) -> np.ndarray | None:
    """The constant data of tensor ``index`` (None for activations)."""
    import tflite

    tensor = graph.Tensors(index)
    raw = model.Buffers(tensor.Buffer()).DataAsNumpy()
    if isinstance(raw, int) or raw.size == 0:
        return None
    dtypes = {
        tflite.TensorType.FLOAT32: np.float32,
        tflite.TensorType.FLOAT16: np.float16,
        tflite.TensorType.INT32: np.int32,
    }
    if tensor.Type() not in dtypes:
        raise ValueError(f"tensor {tensor.Name().decode()}: unsupported type {tensor.Type()}")
    shape = [int(s) for s in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
    return np.frombuffer(raw.tobytes(), dtype=dtypes[tensor.Type()]).reshape(shape)


def _options(op: Any, cls: Any) -> Any:
    table = op.BuiltinOptions()
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    return opts


def convert_model(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(graph description, float32 constants in torch layout) of one .tflite flatbuffer."""
    import tflite

    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise ValueError("expected a model with one subgraph")
    graph = model.Subgraphs(0)
    op_names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    activations = {
        v: k for k, v in vars(tflite.ActivationFunctionType).items() if not k.startswith("_")
    }
    paddings = {v: k for k, v in vars(tflite.Padding).items() if not k.startswith("_")}

    def name(index: int) -> str:
        return graph.Tensors(index).Name().decode()

    def shape(index: int) -> list[int]:
        t = graph.Tensors(index)
        return [int(s) for s in t.ShapeAsNumpy()] if t.ShapeLength() else []

    consts: dict[str, np.ndarray] = {}
    laid_out: set[str] = set()
    ops: list[dict[str, Any]] = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = op_names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        ins = [int(j) for j in op.InputsAsNumpy()]
        outs = [int(j) for j in op.OutputsAsNumpy()]
        if kind == "DEQUANTIZE":
            value = _tensor_value(model, graph, ins[0])
            if value is None:
                raise ValueError(f"DEQUANTIZE of a non-constant tensor {name(ins[0])}")
            consts[name(outs[0])] = value.astype(np.float32)
            continue
        if kind not in _SUPPORTED:
            raise ValueError(f"op {i}: {kind} is not supported by gimp_draggan.faces.graph")
        for j in ins:
            if j >= 0 and name(j) not in consts:
                value = _tensor_value(model, graph, j)
                if value is not None and value.dtype != np.int32:
                    consts[name(j)] = value.astype(np.float32)
        entry: dict[str, Any] = {
            "op": kind,
            "inputs": [name(j) for j in ins if j >= 0],
            "output": name(outs[0]),
            "shape": shape(outs[0]),
        }
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            opts = _options(
                op, tflite.Conv2DOptions if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions
            )
            if (opts.DilationHFactor(), opts.DilationWFactor()) != (1, 1):
                raise ValueError(f"op {i}: dilated convolutions are not supported")
            entry.update(
                stride=[opts.StrideH(), opts.StrideW()],
                padding=paddings[opts.Padding()],
                activation=activations[opts.FusedActivationFunction()],
            )
            if entry["inputs"][1] in laid_out:
                raise ValueError(f"op {i}: weights shared between ops are not supported")
            laid_out.add(entry["inputs"][1])
            weight = consts[entry["inputs"][1]]
            if kind == "CONV_2D":
                consts[entry["inputs"][1]] = np.ascontiguousarray(weight.transpose(0, 3, 1, 2))
            else:
                if opts.DepthMultiplier() != 1:
                    raise ValueError(f"op {i}: depth multiplier != 1 is not supported")
                consts[entry["inputs"][1]] = np.ascontiguousarray(weight.transpose(3, 0, 1, 2))
        elif kind == "MAX_POOL_2D":
            opts = _options(op, tflite.Pool2DOptions)
            entry.update(
                kernel=[opts.FilterHeight(), opts.FilterWidth()],
                stride=[opts.StrideH(), opts.StrideW()],
                padding=paddings[opts.Padding()],
                activation=activations[opts.FusedActivationFunction()],
            )
        elif kind == "ADD":
            entry.update(
                activation=activations[_options(op, tflite.AddOptions).FusedActivationFunction()]
            )
        elif kind == "CONCATENATION":
            opts = _options(op, tflite.ConcatenationOptions)
            entry.update(axis=opts.Axis(), activation=activations[opts.FusedActivationFunction()])
        elif kind == "PAD":
            pads = _tensor_value(model, graph, ins[1])
            if pads is None:
                raise ValueError(f"op {i}: PAD with non-constant paddings")
            entry.update(pads=pads.tolist(), inputs=entry["inputs"][:1])
        elif kind == "RESHAPE":
            entry["inputs"] = entry["inputs"][:1]
        elif kind == "PRELU":
            consts[entry["inputs"][1]] = consts[entry["inputs"][1]].reshape(-1)
        ops.append(entry)
    description = {
        "inputs": [{"name": name(int(j)), "shape": shape(int(j))} for j in graph.InputsAsNumpy()],
        "outputs": [{"name": name(int(j)), "shape": shape(int(j))} for j in graph.OutputsAsNumpy()],
        "ops": ops,
    }
    used = {n for op in ops for n in op["inputs"]}
    return description, {k: v for k, v in consts.items() if k in used}


def main(argv: list[str] | None = None) -> None:
    from safetensors.numpy import save_file

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", required=True, type=Path, help="mediapipe wheel (.whl)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "daemon" / "assets",
        help="output folder (default: the package's assets)",
    )
    args = parser.parse_args(argv)
    with zipfile.ZipFile(args.wheel) as wheel:
        for stem, member in MODELS.items():
            description, consts = convert_model(wheel.read(member))
            description["source"] = f"{args.wheel.name}:{member}"
            (args.out / f"{stem}.json").write_text(json.dumps(description, indent=1) + "\n")
            save_file(consts, str(args.out / f"{stem}.safetensors"))
            print(f"{stem}: {len(description['ops'])} ops, {len(consts)} tensors")


if __name__ == "__main__":
    main()
