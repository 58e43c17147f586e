"""PTI inversion on a tiny generator: an image the generator made itself is recovered (PSNR >= 30 dB
after pivotal tuning, lower after the projection alone, the perceptual distance falling), the
caller's generator is never modified, progress counts steps, cancel stops, bad targets are refused.

The perceptual loss is LPIPS wired over a small backbone the test builds (no download)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from gimp_draggan.draggan import lpips as L
from gimp_draggan.draggan import pti
from gimp_draggan.draggan.networks import Generator, GeneratorConfig

pytestmark = pytest.mark.timeout(120)

CFG = GeneratorConfig(
    img_resolution=16, z_dim=16, w_dim=16, channel_base=128, channel_max=16, mapping_layers=2
)
FEW = {"projection_steps": 30, "tuning_steps": 30, "w_avg_samples": 256}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Networks this small run fastest on one thread (and the shared CPUs are busy)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def G() -> Generator:
    torch.manual_seed(0)
    G = Generator(CFG).eval().requires_grad_(False)
    with torch.no_grad():  # a random network's images mostly inside [-1, 1], as a trained one's
        for res in G.synthesis.block_resolutions:
            G.synthesis.block(res).torgb.weight.mul_(0.5)
    return G


@pytest.fixture(scope="module")
def loss() -> L.LPIPS:
    torch.manual_seed(1)
    feats = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
    )
    return L.LPIPS(feats, [2, 4], None, name="lpips-test")


def _target(G: Generator, seed: int) -> torch.Tensor:
    z = torch.randn(1, CFG.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G(z).clamp(-1, 1)


def _snapshot(G: Generator) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in G.state_dict().items()}


@pytest.mark.parametrize("seed", [5, 11, 12])
def test_generated_image_is_recovered(G: Generator, loss: L.LPIPS, seed: int) -> None:
    target = _target(G, seed)
    before = _snapshot(G)
    calls: list[tuple[str, int, int]] = []
    params = pti.preset(
        "fast",
        projection_steps=50,
        tuning_steps=80,
        w_avg_samples=256,
        optimize_noise=True,
        w_plus=True,
        stop_distance=0.0,
    )
    r = pti.invert(G, target, loss, params, on_step=lambda *a: calls.append(a))

    assert r.ws.shape == (1, G.num_ws, CFG.w_dim)
    assert r.psnr >= 30.0
    assert r.projection_psnr < r.psnr
    with torch.no_grad():
        w_avg = G.mapping.w_avg  # untrained: zeros; the start is the sampled mean, near it
        start = G.synthesis(pti.w_stats(G, 256, 0)[0].expand(1, G.num_ws, -1))
    assert float(loss(start, target)) > r.projection_distance > r.distance
    assert r.loss_name == "lpips-test" and r.steps == 130 and r.tuning_steps == 80
    assert calls == [("invert", i, 130) for i in range(1, 131)]
    # The tuned copy renders the reconstruction; the caller's generator is bit-for-bit unchanged.
    assert r.generator is not G
    with torch.no_grad():
        recon = r.generator.synthesis(r.ws)
    assert float(L.psnr(recon, target)) == pytest.approx(r.psnr, abs=1e-3)
    after = G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "input generator was modified"
    assert torch.equal(w_avg, before["mapping.w_avg"])
    assert not any(p.requires_grad for p in r.generator.parameters())
    tuned_noise = r.generator.state_dict()["synthesis.b16.conv1.noise_const"]
    assert not torch.equal(tuned_noise, before["synthesis.b16.conv1.noise_const"])  # noise was fit


def test_early_stop_at_the_distance_threshold(G: Generator, loss: L.LPIPS) -> None:
    target = _target(G, seed=6)
    calls: list[int] = []
    params = pti.preset("fast", **FEW, stop_distance=1e9)
    r = pti.invert(G, target, loss, params, on_step=lambda _p, s, _t: calls.append(s))
    assert r.tuning_steps == 0 and r.steps == FEW["projection_steps"]
    assert calls == list(range(1, FEW["projection_steps"] + 1))
    assert r.psnr == pytest.approx(r.projection_psnr)
    # Without stop_distance the loss's own threshold, scaled by stop_factor, decides.
    r = pti.invert(G, target, loss, pti.preset("fast", **FEW, stop_factor=0.0))
    assert r.tuning_steps == FEW["tuning_steps"]
    scaled = pti.preset("fast", **FEW, stop_factor=1e9 / loss.threshold)
    assert pti.invert(G, target, loss, scaled).tuning_steps == 0


def test_cancel_raises_and_leaves_generator_alone(G: Generator, loss: L.LPIPS) -> None:
    target = _target(G, seed=7)
    before = _snapshot(G)
    seen: list[int] = []
    for stop_at in (3, FEW["projection_steps"] + 4):  # during the projection, during the tuning
        seen.clear()
        with pytest.raises(pti.InversionCancelled):
            pti.invert(
                G,
                target,
                loss,
                pti.preset("fast", **FEW, optimize_noise=True),
                on_step=lambda _p, s, _t: seen.append(s),
                should_stop=lambda n=stop_at: len(seen) >= n,
            )
        assert seen[-1] == stop_at
    after = G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_locality_regulariser_keeps_far_latents(G: Generator, loss: L.LPIPS) -> None:
    target = _target(G, seed=8)
    base = {
        "projection_steps": 10,
        "tuning_steps": 15,
        "w_avg_samples": 64,
        "stop_distance": 0.0,
        "tuning_lr": 1e-2,
        "tuning_schedule": "constant",
    }
    z = torch.randn(4, CFG.z_dim, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        far = G.mapping(z)
        ref = G.synthesis(far)

    def drift(weight: float) -> float:
        r = pti.invert(G, target, loss, pti.preset("fast", **base, locality_weight=weight))
        with torch.no_grad():
            return float((r.generator.synthesis(far) - ref).square().mean())

    assert drift(10.0) < drift(0.0)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (torch.zeros(1, 3, 8, 8), r"\[1, 3, 16, 16\]"),
        (torch.zeros(2, 3, 16, 16), r"\[1, 3, 16, 16\]"),
        (torch.zeros(1, 3, 16, 16) + 2.0, r"\[-1, 1\]"),
        (torch.full((1, 3, 16, 16), float("nan")), "NaN"),
    ],
)
def test_bad_targets_are_refused(
    G: Generator, loss: L.LPIPS, bad: torch.Tensor, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        pti.invert(G, bad, loss, pti.preset("fast", **FEW))


def test_presets_and_schedules() -> None:
    ref = pti.PRESETS["reference"]
    assert (ref.projection_steps, ref.tuning_steps) == (450, 350)
    assert (ref.projection_lr, ref.tuning_lr) == (0.01, 3e-4)
    fast = pti.PRESETS["fast"]
    assert fast.projection_steps + fast.tuning_steps <= 0.2 * (450 + 350)
    with pytest.raises(ValueError, match="preset"):
        pti.preset("slow")
    p = pti.preset("fast", projection_steps=100)
    lrs = [pti.projection_lr(p, s / 100) for s in range(100)]
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(p.projection_lr)
    assert lrs[-1] < 0.01 * p.projection_lr and lrs.index(max(lrs)) < 50
    tl = [pti.tuning_lr(p, s) for s in range(p.tuning_steps)]
    assert tl[0] == pytest.approx(p.tuning_lr) and tl[-1] == pytest.approx(0.1 * p.tuning_lr)
    assert all(a >= b for a, b in itertools.pairwise(tl))


def test_noise_regulariser_prefers_white_noise() -> None:
    torch.manual_seed(0)
    white = [torch.randn(32, 32)]
    s = torch.nn.functional.interpolate(torch.randn(1, 1, 8, 8), size=32, mode="bilinear")[0, 0]
    smooth = [(s - s.mean()) / s.std()]
    assert float(pti.noise_regularizer(white)) < 0.01 * float(pti.noise_regularizer(smooth))


def test_original_params_copy_semantics(G: Generator) -> None:
    """`invert` works on a deep copy: even a generator with grads enabled keeps them."""
    G2 = copy.deepcopy(G).requires_grad_(True)
    target = _target(G2, seed=9)
    pti.invert(
        G2,
        target,
        L.PyramidL1(),
        pti.preset("fast", projection_steps=2, tuning_steps=2, w_avg_samples=16),
    )
    assert all(p.requires_grad and p.grad is None for p in G2.parameters())
