"""Pixels of the resized feature map, read without resizing it (a speed trick of the drag step).

DragGAN resizes the feature block's output to the image size (``F.interpolate``, bilinear,
``align_corners=False``) and reads a few pixels of it. A resized pixel is a fixed blend of 4
feature pixels, so `FeatureGrid` keeps PyTorch's per-row/column source indices and weights once
and gathers only the pixels a step needs: the same values, without the ``[1, C, H, W]`` map.

Layouts: features ``[1, C, r, r]`` (or a window of them whose top-left pixel is ``origin``,
``(x, y)``); points ``(x, y)`` pixels of the image, x = column, y = row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


class FeatureGrid:
    """Reads pixels of ``F.interpolate(feat, (H, W), mode="bilinear", align_corners=False)``.

    Per output row/column: the two source indices and the weight of the second, exactly as
    PyTorch computes them, so any set of resized pixels is a gather of 4 feature pixels.
    ``feat`` may be a window of the feature map whose top-left pixel is ``origin`` (x, y).
    """

    def __init__(self, feature_res: int, image_res: int, device: torch.device) -> None:
        self.feature_res = feature_res
        self.image_res = image_res
        self.device = device
        scale = feature_res / image_res
        src = ((torch.arange(image_res, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(min=0)
        lo = src.floor().long()
        hi = (lo + 1).clamp(max=feature_res - 1)
        self.lo_list: list[int] = lo.tolist()
        self.hi_list: list[int] = hi.tolist()
        self.lo = lo.to(device)
        self.hi = hi.to(device)
        self.lam = (src - lo).to(torch.float32).to(device)

    def window(
        self,
        feat: torch.Tensor,
        x0: int,
        x1: int,
        y0: int,
        y1: int,
        origin: tuple[int, int] = (0, 0),
    ) -> torch.Tensor:
        """Resized pixels of rows y0..y1 and columns x0..x1 (inclusive): ``[C, ny, nx]``."""
        dev = feat.device
        xs = torch.arange(x0, x1 + 1, device=dev)
        ys = torch.arange(y0, y1 + 1, device=dev)
        ox, oy = origin
        lam = self.lam[xs]
        cols = (1 - lam) * feat[..., self.lo[xs] - ox] + lam * feat[..., self.hi[xs] - ox]
        lam = self.lam[ys].reshape(1, 1, -1, 1)
        rows = (1 - lam) * cols[:, :, self.lo[ys] - oy] + lam * cols[:, :, self.hi[ys] - oy]
        return rows[0]

    def pixels(self, feat: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Resized pixels at integer ``(xs, ys)`` (long ``[K]``) of a whole map: ``[C, K]``."""
        f = feat[0]
        wx = self.lam[xs]
        wy = self.lam[ys]
        lx, hx, ly, hy = self.lo[xs], self.hi[xs], self.lo[ys], self.hi[ys]
        top = (1 - wx) * f[:, ly, lx] + wx * f[:, ly, hx]
        bottom = (1 - wx) * f[:, hy, lx] + wx * f[:, hy, hx]
        return (1 - wy) * top + wy * bottom

    def at_points(self, feat: torch.Tensor, points: Sequence[tuple[float, float]]) -> torch.Tensor:
        """Resized features of a whole map at (maybe fractional) points, bilinear: ``[P, C]``."""
        last = self.image_res - 1
        rows = []
        for x, y in points:
            x0, y0 = math.floor(x), math.floor(y)
            x1, y1 = min(x0 + 1, last), min(y0 + 1, last)
            ax, ay = x - x0, y - y0
            xs = torch.tensor([x0, x1, x0, x1], device=self.device)
            ys = torch.tensor([y0, y0, y1, y1], device=self.device)
            corners = self.pixels(feat, xs, ys)  # [C, 4]
            w = torch.tensor(
                [(1 - ax) * (1 - ay), ax * (1 - ay), (1 - ax) * ay, ax * ay],
                device=self.device,
                dtype=corners.dtype,
            )
            rows.append(corners @ w)
        return torch.stack(rows)

    def span(self, a: int, b: int) -> tuple[int, int]:
        """Feature rows (or columns) ``[lo, hi)`` that image rows ``a..b`` (inclusive) read."""
        return self.lo_list[a], self.hi_list[b] + 1

    def full(self, feat: torch.Tensor) -> torch.Tensor:
        """The whole resized map ``[1, C, H, W]``."""
        size = (self.image_res, self.image_res)
        return F.interpolate(feat, size=size, mode="bilinear", align_corners=False)
