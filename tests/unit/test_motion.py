"""The dense motion field read from the generator's features, and sub-pixel tracking."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gimp_draggan.draggan.drag import DragParams, DragSession, FeatureGrid, refine_subpixel
from gimp_draggan.draggan.motion import estimate_motion, identity
from gimp_draggan.draggan.networks import Generator, GeneratorConfig, seed_to_z


def _features(seed: int = 0, f: int = 32, c: int = 16) -> torch.Tensor:
    """Smooth random features (a blurred noise field: distinct, but not pixel noise)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, c, f // 4, f // 4, generator=g)
    return F.interpolate(x, size=(f, f), mode="bicubic", align_corners=False)


def _shift(feat: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Content moved by (dx, dy): out(p) = feat(p - d)."""
    return torch.roll(feat, shifts=(dy, dx), dims=(2, 3))


def test_identical_features_give_no_motion_and_full_confidence() -> None:
    f0 = _features()
    field = estimate_motion(f0, f0.clone(), 64, anchors=[])
    assert field.flow.abs().max() < 0.01  # model px: far below any visible move
    assert field.confidence.min() == 1.0
    assert torch.equal(identity(64).flow, torch.zeros(2, 64, 64))


def test_a_translation_is_read_back_as_the_backward_motion() -> None:
    f0 = _features(1)
    f1 = _shift(f0, 2, -1)  # content moved right 2, up 1 feature px
    field = estimate_motion(f0, f1, 64, anchors=[])
    inner = field.flow[:, 16:48, 16:48]  # away from the wrapped border
    # Backward: the edited pixel came from 2 feature px (4 model px) to the left, 2 below.
    assert torch.allclose(inner[0], torch.full_like(inner[0], -4.0), atol=0.35)
    assert torch.allclose(inner[1], torch.full_like(inner[1], 2.0), atol=0.35)
    assert field.confidence[16:48, 16:48].min() > 0.9


def test_anchors_are_met_exactly() -> None:
    f0 = _features(2)
    anchors = [((20.0, 30.0), (16.5, 29.0)), ((44.0, 12.0), (44.0, 15.25))]
    field = estimate_motion(f0, f0.clone(), 64, anchors=anchors)
    for (now, source), (dx, dy) in zip(anchors, field.at([a for a, _ in anchors]), strict=True):
        assert math.isclose(now[0] + dx, source[0], abs_tol=0.05)
        assert math.isclose(now[1] + dy, source[1], abs_tol=0.05)
    assert field.flow[:, 60:, 60:].abs().max() < 0.05  # far from both: still


def test_content_with_no_source_gets_no_confidence() -> None:
    f0 = _features(3)
    f1 = f0.clone()
    f1[:, :, 10:16, 10:16] = _features(99)[:, :, 10:16, 10:16] * 3.0  # new content
    field = estimate_motion(f0, f1, 32, anchors=[])
    assert field.confidence[12, 12] < 0.5
    assert field.confidence[28, 28] == 1.0


def test_subpixel_tracking_finds_a_fractional_shift() -> None:
    f = 32
    base = _features(4, f=f)
    grid = FeatureGrid(f, 64, torch.device("cpu"))
    ref_at = (20.0, 24.0)
    # Move the content by (0.5, -0.25) image px: sample the map shifted by a fraction.
    theta = torch.tensor([[[1.0, 0.0, -0.5 / 32], [0.0, 1.0, 0.25 / 32]]])
    moved = F.grid_sample(
        base,
        F.affine_grid(theta, list(base.shape), align_corners=False),
        mode="bicubic",
        align_corners=False,
        padding_mode="border",
    )
    full0 = grid.full(base)[0]
    ref = full0[:, 24, 20][None]
    found = refine_subpixel(grid, moved, ref, [(20, 24)])
    assert math.dist(found[0], (ref_at[0] + 0.5, ref_at[1] - 0.25)) <= 0.2


def test_subpixel_drag_supervises_and_stops_below_one_pixel() -> None:
    torch.manual_seed(1)
    cfg = GeneratorConfig(
        img_resolution=32, z_dim=32, w_dim=32, channel_base=256, channel_max=32, mapping_layers=2
    )
    gen = Generator(cfg).eval()
    ws = gen.mapping(seed_to_z(1, cfg.z_dim), truncation_psi=0.7).detach()
    params = DragParams(lr=0.01, subpixel=True, stop_pixels=0.3, max_steps=3)
    s = DragSession(gen, ws, [(10.3, 11.6)], [(10.9, 11.6)], params=params)
    assert s.points == [(10.3, 11.6)] and s.handles == [(10, 12)]
    report = s.step()  # 0.6 px to go: a step is still taken
    assert report.optimised and report.loss is not None and report.loss > 0
    result = s.run(max_steps=2)
    assert all(isinstance(x, float) for p in result.points for x in p)
    assert result.start_points == [(10.3, 11.6)]
    assert result.start_feature is not None and result.feature is not None
    assert result.feature.shape == result.start_feature.shape
    assert not torch.equal(result.feature, result.start_feature)  # the latent moved
