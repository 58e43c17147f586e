"""Speed must not change the maths: the drag step's loss and gradient, computed by the truncated
synthesis with gathered feature pixels, equal a straightforward implementation of the paper's
step (full synthesis with the generator's own modules, whole feature map resized, grid_sample)."""

import math

import pytest
import torch
import torch.nn.functional as F

from gimp_draggan.draggan.drag import DragParams, DragSession
from gimp_draggan.draggan.networks import Generator, GeneratorConfig, seed_to_z

CFG = GeneratorConfig(
    img_resolution=32, z_dim=32, w_dim=32, channel_base=256, channel_max=32, mapping_layers=2
)


@pytest.fixture(scope="module")
def gen() -> Generator:
    torch.manual_seed(3)
    G = Generator(CFG).eval()
    with torch.no_grad():  # Non-zero noise so the cached noise path is exercised.
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.2)
    return G


def reference_loss(
    G: Generator,
    w_opt: torch.Tensor,
    ws_fixed: torch.Tensor,
    handles: list[tuple[int, int]],
    targets: list[tuple[float, float]],
    r1: int,
    feature_res: int,
    fixed: torch.Tensor | None,
    f0: torch.Tensor | None,
    lam: float,
) -> torch.Tensor:
    """The paper's step written plainly, on the full-resolution resized feature map."""
    ws = torch.cat([w_opt, ws_fixed], dim=1)
    out = G.synthesis.run(ws, noise_mode="const", feature_res=feature_res, render=True)
    H = G.img_resolution
    feat = F.interpolate(out.feature, size=(H, H), mode="bilinear", align_corners=False)
    loss = torch.zeros(())
    for (x, y), (tx, ty) in zip(handles, targets, strict=True):
        dist = math.hypot(tx - x, ty - y)
        if dist <= 1:
            continue
        pix = [(i, j) for i in range(H) for j in range(H) if (i - y) ** 2 + (j - x) ** 2 < r1**2]
        rows = torch.tensor([i for i, _ in pix])
        cols = torch.tensor([j for _, j in pix])
        src = feat[0][:, rows, cols].detach()
        gx = (cols + (tx - x) / dist) / (H - 1) * 2 - 1
        gy = (rows + (ty - y) / dist) / (H - 1) * 2 - 1
        grid = torch.stack([gx, gy], dim=-1).reshape(1, 1, -1, 2).float()
        moved = F.grid_sample(feat, grid, align_corners=True, padding_mode="border")[0, :, 0]
        loss = loss + F.l1_loss(moved, src)
    if fixed is not None and f0 is not None:
        loss = loss + lam * F.l1_loss(feat * fixed, f0 * fixed)
    return loss


@pytest.mark.parametrize("with_mask", [False, True])
def test_truncated_step_matches_full_forward(gen: Generator, with_mask: bool) -> None:
    ws = gen.mapping(seed_to_z(5, CFG.z_dim), truncation_psi=0.7).detach()
    # A border handle (disc clipped, shifted samples clamped), an interior one, a diagonal one
    # and one within 1 px of its target (no supervision).
    handles = [(0, 3), (15, 16), (25, 7), (20, 28)]
    targets = [(6.0, 3.0), (11.0, 22.5), (31.0, 0.0), (20.5, 28.0)]
    mask = None
    if with_mask:
        mask = torch.zeros(32, 32)
        mask[2:30, 0:27] = 1
    params = DragParams(r1=48.0)  # 3 px discs at 32 px (many pixels, partly outside).
    s = DragSession(gen, ws, handles, targets, mask=mask, params=params)
    assert s.radii.r1 == 3

    ours = s.loss(s.synthesis(s.w_opt))
    (grad_ours,) = torch.autograd.grad(ours, s.w_opt)

    w_opt = ws[:, :6].clone().requires_grad_(True)
    fixed = f0 = None
    if with_mask:
        fixed = (1 - mask).reshape(1, 1, 32, 32)
        with torch.no_grad():
            feat0 = gen.synthesis.run(ws, feature_res=s.feature_res).feature
            f0 = F.interpolate(feat0, size=(32, 32), mode="bilinear", align_corners=False)
    ref = reference_loss(
        gen,
        w_opt,
        ws[:, 6:],
        handles,
        targets,
        3,
        s.feature_res,
        fixed,
        f0,
        s.params.mask_lambda,
    )
    (grad_ref,) = torch.autograd.grad(ref, w_opt)

    assert ref.item() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
    assert grad_ref.abs().max() > 0
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-4, atol=1e-7)
    # The generator's parameters were never part of our graph.
    assert all(p.grad is None for p in gen.parameters())


def test_truncated_features_equal_the_generators(gen: Generator) -> None:
    ws = gen.mapping(seed_to_z(8, CFG.z_dim), truncation_psi=0.7).detach()
    ws = ws + 0.3 * torch.randn_like(ws)  # Distinct vectors: the fixed/optimised split matters.
    for n_opt, feature_res in [(6, 16), (2, 16), (1, 32), (8, 32), (3, 4)]:
        s = DragSession(
            gen,
            ws,
            [(3, 3)],
            [(9, 9)],
            params=DragParams(num_optimised_ws=n_opt, feature_res=feature_res),
        )
        with torch.no_grad():
            ours = s.synthesis(s.w_opt)
            full = gen.synthesis.run(ws, feature_res=feature_res).feature
        torch.testing.assert_close(ours, full, rtol=1e-4, atol=1e-5)


def test_step_leaves_generator_flags_and_grads_alone(gen: Generator) -> None:
    ws = gen.mapping(seed_to_z(2, CFG.z_dim), truncation_psi=0.7).detach()
    flags = [p.requires_grad for p in gen.parameters()]
    s = DragSession(gen, ws, [(10, 10)], [(20, 10)])
    before = s.ws
    report = s.step()
    assert report.optimised
    assert [p.requires_grad for p in gen.parameters()] == flags
    assert all(p.grad is None for p in gen.parameters())
    after = s.ws
    assert not torch.equal(after[:, :6], before[:, :6])  # The optimised part moved ...
    assert torch.equal(after[:, 6:], before[:, 6:])  # ... the rest did not.


def test_windowed_synthesis_gives_the_same_loss_and_gradient(gen: Generator) -> None:
    ws = gen.mapping(seed_to_z(6, CFG.z_dim), truncation_psi=0.7).detach()
    for handles, targets in [
        ([(15, 16)], [(20.0, 12.0)]),
        ([(1, 30), (6, 25)], [(9.0, 30.0), (2.0, 20.0)]),  # corner: window clipped
    ]:
        s = DragSession(gen, ws, handles, targets, params=DragParams(r1=48.0, r2=64.0))
        window = s.feature_window()
        assert window is not None and window != (0, 16, 0, 16)  # really a part of the map
        feat_local = s.synthesis(s.w_opt, window)
        feat_full = s.synthesis(s.w_opt)
        x0, x1, y0, y1 = window
        assert feat_local.shape[-2:] == (y1 - y0, x1 - x0)
        torch.testing.assert_close(feat_local, feat_full[..., y0:y1, x0:x1], rtol=1e-5, atol=1e-6)
        local = s.loss(feat_local, origin=(x0, y0))
        (g_local,) = torch.autograd.grad(local, s.w_opt)
        full = s.loss(feat_full)
        (g_full,) = torch.autograd.grad(full, s.w_opt)
        torch.testing.assert_close(local, full, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(g_local, g_full, rtol=1e-4, atol=1e-7)


def test_windowed_and_full_sessions_take_the_same_steps(gen: Generator) -> None:
    ws = gen.mapping(seed_to_z(7, CFG.z_dim), truncation_psi=0.7).detach()
    results = []
    for local in (True, False):
        s = DragSession(gen, ws, [(8, 20)], [(20, 14)], params=DragParams(lr=0.01))
        s.local = local
        results.append(s.run(max_steps=8))
    assert [r.points for r in results[0].reports] == [r.points for r in results[1].reports]
    assert results[0].points == results[1].points
    torch.testing.assert_close(results[0].ws, results[1].ws, rtol=1e-4, atol=1e-5)
