"""The checks a drag's inputs pass before a `DragSession` starts, with messages saying what to give.

Layouts: w+ ``[1, num_ws, w_dim]``; points ``(x, y)`` pixels of the model resolution; masks
``[H, W]`` in [0, 1], 1 = may move.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from gimp_draggan.draggan.networks import SynthesisNetwork
from gimp_draggan_plugin.protocol import Point


def check_latent(ws: torch.Tensor, synth: SynthesisNetwork, num_optimised_ws: int) -> None:
    if tuple(ws.shape) != (1, synth.num_ws, synth.w_dim):
        raise ValueError(
            f"ws: expected shape [1, {synth.num_ws}, {synth.w_dim}], got {list(ws.shape)}"
        )
    if not torch.isfinite(ws).all():
        raise ValueError("ws: latent contains NaN or inf")
    if num_optimised_ws > synth.num_ws:
        raise ValueError(
            f"DragParams.num_optimised_ws = {num_optimised_ws} exceeds the model's "
            f"num_ws = {synth.num_ws}"
        )


def check_feature_res(feature_res: int, synth: SynthesisNetwork) -> None:
    if feature_res not in synth.block_resolutions:
        raise ValueError(
            f"DragParams.feature_res = {feature_res} is not a block resolution of this "
            f"model: {synth.block_resolutions}"
        )


def as_points(points: Sequence[Point] | torch.Tensor, name: str, res: int) -> list[Point]:
    t = torch.as_tensor(points, dtype=torch.float64).cpu()
    if t.numel() == 0:
        raise ValueError("no handle/target pairs: give at least one")
    if t.ndim != 2 or t.shape[1] != 2:
        raise ValueError(f"{name}: expected a list of (x, y) points, got shape {list(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: points must be finite numbers (found NaN or inf): {t.tolist()}")
    for i, (x, y) in enumerate(t.tolist()):
        if not (0 <= x <= res - 1 and 0 <= y <= res - 1):
            raise ValueError(
                f"{name}[{i}] = ({x:g}, {y:g}) is outside the {res}x{res} image; "
                f"x and y must be in [0, {res - 1}]"
            )
    return [(float(x), float(y)) for x, y in t.tolist()]


def check_pairs(starts: Sequence[Point], targets: Sequence[Point]) -> None:
    """As many targets as handles, and no handle already on its target."""
    if len(starts) != len(targets):
        raise ValueError(f"{len(starts)} handles but {len(targets)} targets: give them in pairs")
    for i, ((x, y), (tx, ty)) in enumerate(zip(starts, targets, strict=True)):
        if math.hypot(tx - x, ty - y) < 1e-6:
            raise ValueError(f"pair {i}: handle ({x:g}, {y:g}) is already on its target")


def fixed_region(mask: torch.Tensor, res: int, device: torch.device) -> torch.Tensor | None:
    """[H, W] in [0, 1], 1 = may move -> the fixed-region weight [1, 1, H, W], None if all 1."""
    mask = torch.as_tensor(mask)
    if tuple(mask.shape) != (res, res):
        raise ValueError(
            f"mask: expected shape [{res}, {res}] (the model resolution, [H, W]), "
            f"got {list(mask.shape)}"
        )
    mask = mask.to(device=device, dtype=torch.float32)
    if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise ValueError("mask: values must be finite and in [0, 1] (1 = may move)")
    if mask.max() == 0:
        raise ValueError("mask: no pixel may move (all 0); mark the movable region with 1")
    if mask.min() == 1:
        return None
    return (1 - mask).reshape(1, 1, res, res)
