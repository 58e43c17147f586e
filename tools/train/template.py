"""How `gimp_draggan.edit.align_embedded.TEMPLATE` was measured: the world's mean face."""

from __future__ import annotations

import numpy as np
import torch

from gimp_draggan.edit.align_embedded import FIT_POINTS, TEMPLATE_SEEDS
from gimp_draggan_tools.train.world import render


def compute_template(seeds: range = TEMPLATE_SEEDS) -> np.ndarray:
    """Mean of the world's ground-truth eyes and mouth corners over ``seeds``, [4, 2] in units
    of the square's side, rounded as `TEMPLATE` is (1e-4 side = 0.006 px at 64 px)."""
    total = torch.zeros(len(FIT_POINTS), 2, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(seeds), 256):
            kps = render(list(seeds[start : start + 256]), resolution=64).keypoints
            total += kps[:, list(FIT_POINTS)].double().sum(dim=0)
    return np.round(total.numpy() / len(seeds) / 64.0, 4)
