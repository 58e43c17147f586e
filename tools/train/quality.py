"""Quality figures for a generator of the procedural world, measured with the keypoint detector.

Two numbers, both from the detector (``keypoints.py``), so no downloaded network is needed:

* ``fd_keypoint_features``: Fréchet distance between detector features (global-average-pooled
  deepest encoder layer, 128-d) of generated images and of world images. ``fd_floor`` is the
  same distance between two disjoint sets of world images: the value a perfect model would get.
* ``geometry_coverage``: for each geometric factor (head position, eye spacing, mouth openness,
  mouth width, face height), std of the factor over generated samples divided by its std over
  world images (ground truth). 1.0 = the model varies that part as much as the data does; small
  values mean the part barely moves between latents, which makes dragging it hard.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gimp_draggan.draggan.networks import Generator
from gimp_draggan.faces.keypoints import KeypointNet, detect
from gimp_draggan_tools.train.world import render

QUALITY_SEED_BASE = 6_000_000  # world seeds for quality measurements (disjoint from training)


@dataclass(frozen=True)
class Quality:
    n: int
    fd: float  # generated vs world
    fd_floor: float  # world vs world (disjoint seeds)
    coverage: dict[str, float]  # per factor std ratio generated / world
    coverage_mean: float


def features(net: KeypointNet, images: torch.Tensor) -> np.ndarray:
    """Detector features ``[N, 128]`` (float64) of ``images [N, 3, R, R]``."""
    dev = next(net.parameters()).device
    feats = []
    with torch.no_grad():
        for i in range(0, len(images), 256):
            img = images[i : i + 256].to(dev)
            n, _, h, w = img.shape
            ys = torch.linspace(-1, 1, h, device=dev).reshape(1, 1, h, 1).expand(n, 1, h, w)
            xs = torch.linspace(-1, 1, w, device=dev).reshape(1, 1, 1, w).expand(n, 1, h, w)
            x = net.enc3(net.enc2(net.enc1(torch.cat([img, xs, ys], dim=1))))
            feats.append(x.mean(dim=[2, 3]).cpu().double())
    return torch.cat(feats).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b`` ``[N, D]``."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"frechet_distance: need [N, D] arrays of equal D, got {a.shape} and {b.shape}"
        )
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr sqrt(ca cb) from the eigenvalues of sqrt(ca) cb sqrt(ca) (symmetric, PSD).
    ev, vec = np.linalg.eigh(ca)
    sqrt_ca = (vec * np.sqrt(np.clip(ev, 0, None))) @ vec.T
    mid = np.linalg.eigvalsh(sqrt_ca @ cb @ sqrt_ca)
    tr_sqrt = np.sqrt(np.clip(mid, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * tr_sqrt)


def geometry(kp: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample geometric factors from keypoints ``[N, 8, 2]`` (world's keypoint order)."""
    return {
        "face_x": kp[:, :3, 0].mean(dim=1),
        "face_y": kp[:, :3, 1].mean(dim=1),
        "eye_spacing": kp[:, 1, 0] - kp[:, 0, 0],
        "mouth_open": kp[:, 6, 1] - kp[:, 5, 1],
        "mouth_width": kp[:, 4, 0] - kp[:, 3, 0],
        "face_height": kp[:, 7, 1] - kp[:, :2, 1].mean(dim=1),
    }


def measure_generator(
    G: Generator,
    net: KeypointNet,
    n: int = 2000,
    psi: float = 1.0,
    seed: int = 0,
) -> Quality:
    """Quality of ``G`` (z ~ N(0, I) from ``seed``, truncation ``psi``, constant noise)."""
    dev = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    imgs = []
    with torch.no_grad():
        for i in range(0, n, 100):
            z = torch.randn([min(100, n - i), G.z_dim], generator=gen).to(dev)
            imgs.append(G(z, truncation_psi=psi, noise_mode="const").clamp(-1, 1).cpu())
    fake = torch.cat(imgs)
    world_a = render(list(range(QUALITY_SEED_BASE, QUALITY_SEED_BASE + n)), G.img_resolution)
    world_b = render(
        list(range(QUALITY_SEED_BASE + n, QUALITY_SEED_BASE + 2 * n)), G.img_resolution
    )
    fa, fb, ff = features(net, world_a.images), features(net, world_b.images), features(net, fake)
    geo_fake = geometry(detect(net, fake))
    geo_real = geometry(world_a.keypoints)
    cov = {k: round(float(geo_fake[k].std() / geo_real[k].std()), 3) for k in geo_real}
    return Quality(
        n=n,
        fd=frechet_distance(ff, fa),
        fd_floor=frechet_distance(fb, fa),
        coverage=cov,
        coverage_mean=float(np.mean(list(cov.values()))),
    )
