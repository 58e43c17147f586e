"""Sub-pixel refinement of tracked handles (photo edits, `DragParams.subpixel`).

DragGAN tracks whole pixels of the model. A photo crop scaled down to the model makes one model
pixel several layer pixels, so photo edits refine each nearest-neighbour pixel on a
1/`SUBPIXEL_STEPS` pixel grid within one pixel of it (docs/ENGINE.md, "Precision").

Layouts: features ``[1, C, h, w]`` (or a window at ``origin``, ``(x, y)``); references ``[P, C]``;
points ``(x, y)`` pixels of the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gimp_draggan.draggan.feature_grid import FeatureGrid
from gimp_draggan_plugin.protocol import Point

SUBPIXEL_STEPS = 8  # Sub-pixel tracking resolves 1/8 pixel.


def refine_subpixel(
    grid: FeatureGrid,
    feat: torch.Tensor,  # [1, C, h, w] feature map (or window at origin), detached.
    refs: torch.Tensor,  # [P, C] initial feature of each handle.
    found: list[tuple[int, int]],
    origin: tuple[int, int] = (0, 0),
) -> list[Point]:
    """Each nearest-neighbour pixel refined to 1/`SUBPIXEL_STEPS` pixel: the resized map is
    sampled bilinearly on that grid within one pixel of it, and the closest sample (L2) wins."""
    last = grid.image_res - 1
    n = SUBPIXEL_STEPS
    offsets = torch.arange(-n, n + 1, device=feat.device, dtype=feat.dtype) / n
    out = []
    for (x, y), ref in zip(found, refs, strict=True):
        x0, x1 = max(x - 1, 0), min(x + 1, last)
        y0, y1 = max(y - 1, 0), min(y + 1, last)
        win = grid.window(feat, x0, x1, y0, y1, origin)  # [C, ny, nx]
        sx = (x + offsets).clamp(x0, x1) - x0
        sy = (y + offsets).clamp(y0, y1) - y0
        gx = sx / max(x1 - x0, 1) * 2 - 1 if x1 > x0 else torch.zeros_like(sx)
        gy = sy / max(y1 - y0, 1) * 2 - 1 if y1 > y0 else torch.zeros_like(sy)
        gyy, gxx = torch.meshgrid(gy, gx, indexing="ij")
        samples = F.grid_sample(
            win[None],
            torch.stack([gxx, gyy], dim=-1)[None],
            mode="bilinear",
            align_corners=True,
        )[0]  # [C, 2n+1, 2n+1]
        dist = (samples - ref.reshape(-1, 1, 1)).square().sum(dim=0)
        idx = int(dist.reshape(-1).argmin())
        k = 2 * n + 1
        out.append((float(sx[idx % k] + x0), float(sy[idx // k] + y0)))
    return out
