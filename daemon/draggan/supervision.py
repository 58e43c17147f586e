"""One handle's motion-supervision term, read from a small feature window (drag speed trick).

The paper's term for a handle q and a unit shift d is the mean of |F(p + d) - sg(F(p))| over the
pixels p of the r1 disc around q, F the feature map resized to the image (bilinear), F(p + d)
sampled bilinearly with border clamping (``grid_sample(align_corners=True,
padding_mode="border")``). Here F is never resized: the resized pixels the disc and its shifted
samples touch are gathered as one small window through the `FeatureGrid`, the shifted samples
interpolated from that window, and the disc offsets are built once per session.

Layouts: features ``[1, C, h, w]`` (or a window at ``origin``, ``(x, y)``); points ``(x, y)``
pixels of the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gimp_draggan.draggan.feature_grid import FeatureGrid


@dataclass(frozen=True)
class Disc:
    """Integer offsets ``(dx, dy)`` strictly closer than ``radius`` to the origin."""

    dx: torch.Tensor
    dy: torch.Tensor
    radius: int


def disc_offsets(radius: int, device: torch.device) -> Disc:
    r = torch.arange(-radius, radius + 1, device=device)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    keep = dx.square() + dy.square() < radius * radius
    return Disc(dx=dx[keep], dy=dy[keep], radius=radius)


def shifted_disc_l1(
    grid: FeatureGrid,
    feat: torch.Tensor,  # [1, C, h, w] with a graph to the latent.
    handle: tuple[int, int],
    shift: tuple[float, float],
    disc: Disc,
    origin: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """Mean over channels and the disc pixels p inside the image of |F(p + shift) - sg(F(p))|,
    the disc around the pixel ``handle``, ``shift`` at most one pixel long."""
    x, y = handle
    ux, uy = shift
    last = grid.image_res - 1
    reach = disc.radius  # farthest disc offset (radius - 1) plus the unit shift
    # The resized pixels the disc and its shifted samples touch, as one dense window.
    wx0, wx1 = max(x - reach, 0), min(x + reach + 1, last)
    wy0, wy1 = max(y - reach, 0), min(y + reach + 1, last)
    win = grid.window(feat, wx0, wx1, wy0, wy1, origin)  # [C, ny, nx]
    px, py = disc.dx + x, disc.dy + y
    inside = (px >= 0) & (px <= last) & (py >= 0) & (py <= last)
    px, py = px[inside], py[inside]
    src = win[:, py - wy0, px - wx0].detach()
    sx = (px.to(feat.dtype) + ux).clamp(0, last)
    sy = (py.to(feat.dtype) + uy).clamp(0, last)
    x0 = sx.floor().long().clamp(max=max(last - 1, 0))
    y0 = sy.floor().long().clamp(max=max(last - 1, 0))
    ax, ay = sx - x0, sy - y0
    x0, y0 = x0 - wx0, y0 - wy0
    x1, y1 = x0 + 1, y0 + 1  # inside the window by construction of ``reach``
    moved = (1 - ay) * ((1 - ax) * win[:, y0, x0] + ax * win[:, y0, x1]) + ay * (
        (1 - ax) * win[:, y1, x0] + ax * win[:, y1, x1]
    )
    return (moved - src).abs().mean()
