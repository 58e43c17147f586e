"""A small torch runner for the converted TFLite op lists (``assets/face_*.json``).

TFLite works in NHWC with SAME padding that puts the odd extra pixel after (bottom/right); torch
convolutions pad symmetrically. The runner keeps every 4-D tensor in NCHW, pads explicitly with
TFLite's split, and goes back to NHWC only where the graph reshapes, concatenates or returns a 4-D
tensor, so outputs match the TFLite interpreter (see ``assets/README.md`` for the measured gap).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


@dataclass(frozen=True)
class Graph:
    """A converted model: its op list and float32 constants (conv weights already OIHW)."""

    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    ops: list[dict[str, Any]]
    consts: dict[str, torch.Tensor]

    @staticmethod
    def load(json_path: Path, weights_path: Path) -> Graph:
        desc = json.loads(Path(json_path).read_text())
        consts = load_file(str(weights_path))
        known = set(consts) | {t["name"] for t in desc["inputs"]}
        known |= {op["output"] for op in desc["ops"]}
        missing = {n for op in desc["ops"] for n in op["inputs"]} - known
        if missing:
            raise ValueError(
                f"{weights_path} lacks tensors {sorted(missing)[:3]}: re-run "
                "python -m gimp_draggan_tools.faces_convert"
            )
        return Graph(desc["inputs"], desc["outputs"], desc["ops"], consts)

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run on NHWC float32 ``x`` (batch any); returns the outputs in TFLite's layout."""
        want = self.inputs[0]["shape"]
        if x.ndim != 4 or list(x.shape[1:]) != want[1:]:
            raise ValueError(
                f"graph input must be [N, {want[1]}, {want[2]}, {want[3]}], got {list(x.shape)}"
            )
        values: dict[str, torch.Tensor] = {self.inputs[0]["name"]: x.permute(0, 3, 1, 2)}
        for op in self.ops:
            args = [values[n] if n in values else self.consts[n] for n in op["inputs"]]
            out = _RUN[op["op"]](op, *args)
            values[op["output"]] = _activate(out, op.get("activation", "NONE"))
        return [_to_tflite(values[o["name"]]) for o in self.outputs]


def _to_tflite(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1) if t.ndim == 4 else t


def _activate(t: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "NONE":
        return t
    if kind == "RELU":
        return F.relu(t)
    if kind == "RELU6":
        return t.clamp(0.0, 6.0)
    raise ValueError(f"fused activation {kind} is not supported")


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TFLite SAME padding of one axis: (before, after), the odd pixel going after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _spatial_pad(
    op: dict[str, Any], x: torch.Tensor, kh: int, kw: int, value: float
) -> torch.Tensor:
    if op["padding"] == "VALID":
        return x
    top, bottom = same_pads(x.shape[2], kh, op["stride"][0])
    left, right = same_pads(x.shape[3], kw, op["stride"][1])
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


def _conv(
    op: dict[str, Any], x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None
) -> torch.Tensor:
    x = _spatial_pad(op, x, w.shape[2], w.shape[3], 0.0)
    groups = x.shape[1] if op["op"] == "DEPTHWISE_CONV_2D" else 1
    return F.conv2d(x, w, b, stride=tuple(op["stride"]), groups=groups)


def _max_pool(op: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
    kh, kw = op["kernel"]
    x = _spatial_pad(op, x, kh, kw, float("-inf"))
    return F.max_pool2d(x, (kh, kw), stride=tuple(op["stride"]))


def _pad(op: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
    pads = op["pads"]  # NHWC order: [[n0, n1], [h0, h1], [w0, w1], [c0, c1]]
    if x.ndim != 4 or pads[0] != [0, 0]:
        raise ValueError(f"PAD {op['output']}: only 4-D tensors without batch padding")
    return F.pad(x, (*pads[2], *pads[1], *pads[3]))


def _prelu(op: dict[str, Any], x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x, x * alpha.view(1, -1, 1, 1))


def _reshape(op: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
    return _to_tflite(x).reshape(x.shape[0], *op["shape"][1:])


def _concat(op: dict[str, Any], *xs: torch.Tensor) -> torch.Tensor:
    axis = op["axis"] % len(op["shape"])
    if len(op["shape"]) == 4:
        axis = _NHWC_TO_NCHW_AXIS[axis]
    return torch.cat(xs, dim=axis)


_RUN: dict[str, Callable[..., torch.Tensor]] = {
    "CONV_2D": _conv,
    "DEPTHWISE_CONV_2D": _conv,
    "MAX_POOL_2D": _max_pool,
    "PAD": _pad,
    "PRELU": _prelu,
    "ADD": lambda op, a, b: a + b,
    "RELU": lambda op, x: F.relu(x),
    "RESHAPE": _reshape,
    "CONCATENATION": _concat,
}
