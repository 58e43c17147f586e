"""The TFLite-op runner (gimp_draggan.faces.graph) against a plain numpy implementation of the
TFLite kernels on a small graph built here: SAME padding with the odd pixel after (stride 2),
NHWC reshapes and concatenation, channel padding, PReLU, max pooling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from gimp_draggan.faces.graph import Graph, same_pads


def _tflite_same(n: int, k: int, s: int) -> tuple[int, int]:
    """TFLite's SAME padding, written out from its definition: output ceil(n / s), the needed
    padding split with the smaller half before."""
    out = -(-n // s)
    need = max(0, (out - 1) * s + k - n)
    return need // 2, need - need // 2


def _np_conv(x, w, b, s, depthwise=False):
    """NHWC conv over an HWC image; ``w`` in torch layout (OIHW, depthwise C1HW)."""
    kh, kw = w.shape[2:]
    t, bt = _tflite_same(x.shape[0], kh, s)
    left, right = _tflite_same(x.shape[1], kw, s)
    xp = np.pad(x, ((t, bt), (left, right), (0, 0)))
    oh, ow = -(-x.shape[0] // s), -(-x.shape[1] // s)
    out = np.zeros((oh, ow, w.shape[0]))
    for i in range(oh):
        for j in range(ow):
            patch = xp[i * s : i * s + kh, j * s : j * s + kw, :]  # kh, kw, C
            if depthwise:
                out[i, j] = np.einsum("hwc,chw->c", patch, w[:, 0])
            else:
                out[i, j] = np.einsum("hwc,ochw->o", patch, w)
    return out + b


def _np_max_pool(x, k, s):
    t, bt = _tflite_same(x.shape[0], k, s)
    left, right = _tflite_same(x.shape[1], k, s)
    xp = np.pad(x, ((t, bt), (left, right), (0, 0)), constant_values=-np.inf)
    oh, ow = -(-x.shape[0] // s), -(-x.shape[1] // s)
    return np.array(
        [
            [xp[i * s : i * s + k, j * s : j * s + k].max(axis=(0, 1)) for j in range(ow)]
            for i in range(oh)
        ]
    )


@pytest.fixture
def tiny(tmp_path):
    rng = np.random.default_rng(3)
    consts = {
        "c1.w": rng.normal(size=(4, 3, 3, 3)),
        "c1.b": rng.normal(size=4),
        "dw.w": rng.normal(size=(4, 1, 3, 3)),
        "dw.b": rng.normal(size=4),
        "alpha": rng.uniform(0.1, 0.5, size=4),
        "c2.w": rng.normal(size=(6, 4, 1, 1)),
        "c2.b": rng.normal(size=6),
        "head.w": rng.normal(size=(2, 6, 1, 1)),
        "head.b": rng.normal(size=2),
    }
    ops = [
        {
            "op": "CONV_2D",
            "inputs": ["x", "c1.w", "c1.b"],
            "output": "a",
            "shape": [1, 4, 4, 4],
            "stride": [2, 2],
            "padding": "SAME",
            "activation": "RELU",
        },
        {
            "op": "DEPTHWISE_CONV_2D",
            "inputs": ["a", "dw.w", "dw.b"],
            "output": "b",
            "shape": [1, 4, 4, 4],
            "stride": [1, 1],
            "padding": "SAME",
            "activation": "NONE",
        },
        {"op": "PRELU", "inputs": ["b", "alpha"], "output": "c", "shape": [1, 4, 4, 4]},
        {
            "op": "MAX_POOL_2D",
            "inputs": ["c"],
            "output": "d",
            "shape": [1, 2, 2, 4],
            "kernel": [3, 3],
            "stride": [2, 2],
            "padding": "SAME",
            "activation": "NONE",
        },
        {
            "op": "PAD",
            "inputs": ["d"],
            "output": "e",
            "shape": [1, 2, 2, 6],
            "pads": [[0, 0], [0, 0], [0, 0], [0, 2]],
        },
        {
            "op": "CONV_2D",
            "inputs": ["d", "c2.w", "c2.b"],
            "output": "f",
            "shape": [1, 2, 2, 6],
            "stride": [1, 1],
            "padding": "VALID",
            "activation": "NONE",
        },
        {
            "op": "ADD",
            "inputs": ["e", "f"],
            "output": "g",
            "shape": [1, 2, 2, 6],
            "activation": "NONE",
        },
        {"op": "RELU", "inputs": ["g"], "output": "h", "shape": [1, 2, 2, 6]},
        {
            "op": "CONV_2D",
            "inputs": ["h", "head.w", "head.b"],
            "output": "i",
            "shape": [1, 2, 2, 2],
            "stride": [1, 1],
            "padding": "SAME",
            "activation": "NONE",
        },
        {"op": "RESHAPE", "inputs": ["h"], "output": "r1", "shape": [1, 8, 3]},
        {"op": "RESHAPE", "inputs": ["i"], "output": "r2", "shape": [1, 4, 2]},
        {"op": "RESHAPE", "inputs": ["r1"], "output": "r1b", "shape": [1, 2, 12]},
        {"op": "RESHAPE", "inputs": ["r2"], "output": "r2b", "shape": [1, 2, 4]},
        {
            "op": "CONCATENATION",
            "inputs": ["r1b", "r2b"],
            "output": "out",
            "shape": [1, 2, 16],
            "axis": 2,
            "activation": "NONE",
        },
    ]
    desc = {
        "inputs": [{"name": "x", "shape": [1, 8, 8, 3]}],
        "outputs": [{"name": "out", "shape": [1, 2, 16]}, {"name": "c", "shape": [1, 4, 4, 4]}],
        "ops": ops,
    }
    (tmp_path / "g.json").write_text(json.dumps(desc))
    save_file(
        {k: torch.tensor(v, dtype=torch.float32) for k, v in consts.items()},
        str(tmp_path / "g.safetensors"),
    )
    return tmp_path, {k: v.astype(np.float32).astype(np.float64) for k, v in consts.items()}


def test_same_padding_puts_the_odd_pixel_after():
    assert same_pads(8, 3, 2) == (0, 1)
    assert same_pads(7, 3, 2) == (1, 1)
    assert same_pads(128, 5, 2) == (1, 2)
    assert same_pads(4, 1, 1) == (0, 0)


def test_runner_matches_numpy_tflite_kernels(tiny):
    folder, c = tiny
    graph = Graph.load(folder / "g.json", folder / "g.safetensors")
    x = np.random.default_rng(4).normal(size=(8, 8, 3))
    out, mid = graph(torch.tensor(x[None], dtype=torch.float32))

    a = np.maximum(_np_conv(x, c["c1.w"], c["c1.b"], 2), 0)
    b = _np_conv(a, c["dw.w"], c["dw.b"], 1, depthwise=True)
    cc = np.where(b >= 0, b, b * c["alpha"])
    d = _np_max_pool(cc, 3, 2)
    e = np.pad(d, ((0, 0), (0, 0), (0, 2)))
    f = np.einsum("hwc,oc->hwo", d, c["c2.w"][:, :, 0, 0]) + c["c2.b"]
    h = np.maximum(e + f, 0)
    i = np.einsum("hwc,oc->hwo", h, c["head.w"][:, :, 0, 0]) + c["head.b"]
    expected = np.concatenate([h.reshape(2, 12), i.reshape(2, 4)], axis=1)[None]

    assert mid.shape == (1, 4, 4, 4)  # 4-D outputs come back NHWC.
    np.testing.assert_allclose(mid.numpy()[0], cc, rtol=1e-5, atol=1e-5)
    assert out.shape == (1, 2, 16)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_runner_rejects_a_wrong_input_shape(tiny):
    folder, _ = tiny
    graph = Graph.load(folder / "g.json", folder / "g.safetensors")
    with pytest.raises(ValueError, match=r"\[N, 8, 8, 3\]"):
        graph(torch.zeros(1, 8, 8, 4))


def test_load_names_missing_weights(tiny):
    folder, _ = tiny
    save_file({"c1.w": torch.zeros(4, 3, 3, 3)}, str(folder / "partial.safetensors"))
    with pytest.raises(ValueError, match="lacks tensors"):
        Graph.load(folder / "g.json", folder / "partial.safetensors")
