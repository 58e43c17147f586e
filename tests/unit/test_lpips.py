"""LPIPS wiring (scaling, channel unit-normalisation, heads, spatial mean, layer sum), backbone
loading from torchvision-style files, the shipped heads, and the download-free fallback."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gimp_draggan.draggan import lpips as L


def test_one_pixel_case_by_hand() -> None:
    """One tap, a conv that picks R and G: features (3, 4) vs (4, 3) after scaling.

    Unit-normalised: (0.6, 0.8) vs (0.8, 0.6); squared difference (0.04, 0.04); heads (1, 2)
    give 0.04 + 0.08 = 0.12 at the first pixel, 0 at the second (equal pixels): mean 0.06.
    """
    conv = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).reshape(2, 3, 1, 1))
    net = L.LPIPS(nn.Sequential(conv), [1], [torch.tensor([1.0, 2.0])])
    shift, scale = torch.tensor(L.LPIPS_SHIFT), torch.tensor(L.LPIPS_SCALE)

    def raw(*scaled: float) -> torch.Tensor:  # pixel whose scaled value is `scaled`
        return shift + scale * torch.tensor(scaled)

    x = torch.stack([raw(3, 4, 0), raw(1, 1, 1)], dim=1).reshape(1, 3, 1, 2)
    y = torch.stack([raw(4, 3, 0), raw(1, 1, 1)], dim=1).reshape(1, 3, 1, 2)
    assert float(net(x, y)) == pytest.approx(0.06, abs=1e-6)
    assert float(net(x, x)) == 0.0


def _reference(
    x: np.ndarray,
    y: np.ndarray,
    layers: list[tuple[np.ndarray, np.ndarray]],
    heads: list[np.ndarray],
) -> float:
    """LPIPS written out in numpy, pixel by pixel, for 1x1-conv + ReLU layers (one tap each)."""
    shift = np.array(L.LPIPS_SHIFT)[:, None, None]
    scale = np.array(L.LPIPS_SCALE)[:, None, None]
    hx, hy = (x - shift) / scale, (y - shift) / scale
    total = 0.0
    for (w, b), head in zip(layers, heads, strict=True):
        hx = np.maximum(np.einsum("oi,ihw->ohw", w, hx) + b[:, None, None], 0)
        hy = np.maximum(np.einsum("oi,ihw->ohw", w, hy) + b[:, None, None], 0)
        _, hh, ww = hx.shape
        acc = 0.0
        for i in range(hh):
            for j in range(ww):
                fx = hx[:, i, j] / (np.sqrt((hx[:, i, j] ** 2).sum()) + L.UNIT_NORM_EPS)
                fy = hy[:, i, j] / (np.sqrt((hy[:, i, j] ** 2).sum()) + L.UNIT_NORM_EPS)
                acc += float((head * (fx - fy) ** 2).sum())
        total += acc / (hh * ww)
    return total


def test_two_tap_network_matches_numpy_reference() -> None:
    rng = np.random.default_rng(1)
    layers = [
        (rng.normal(size=(4, 3)), rng.normal(size=4) * 0.1),
        (rng.normal(size=(5, 4)), rng.normal(size=5) * 0.1),
    ]
    heads = [rng.uniform(0, 1, size=4), rng.uniform(0, 1, size=5)]
    mods: list[nn.Module] = []
    for w, b in layers:
        conv = nn.Conv2d(w.shape[1], w.shape[0], 1)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(w).reshape(*w.shape, 1, 1))
            conv.bias.copy_(torch.from_numpy(b))
        mods += [conv, nn.ReLU()]
    net = L.LPIPS(nn.Sequential(*mods), [2, 4], [torch.from_numpy(h) for h in heads]).double()
    x = rng.uniform(-1, 1, size=(2, 3, 5, 6))
    y = rng.uniform(-1, 1, size=(2, 3, 5, 6))
    got = net(torch.from_numpy(x), torch.from_numpy(y))
    assert got.shape == (2,)
    for n in range(2):
        assert float(got[n]) == pytest.approx(_reference(x[n], y[n], layers, heads), rel=1e-6)


def test_gradient_reaches_the_input_not_the_network() -> None:
    spec = L.BACKBONES["alexnet"]
    net = L.LPIPS(L.build_backbone(spec), spec.taps, None)
    assert all(not p.requires_grad for p in net.parameters())
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    net(x * 2 - 1, torch.zeros(1, 3, 64, 64)).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_against_a_fixed_image_matches_the_pair_form() -> None:
    torch.manual_seed(0)
    spec = L.BACKBONES["alexnet"]
    y = torch.rand(1, 3, 64, 64) * 2 - 1
    x = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_(True)
    for net in (L.LPIPS(L.build_backbone(spec), spec.taps, L.load_heads("alexnet")), L.PyramidL1()):
        d = net.against(y)(x)
        assert torch.allclose(d, net(x, y))
        (grad,) = torch.autograd.grad(d.sum(), x)
        assert float(grad.abs().sum()) > 0


def test_bad_shapes_are_refused() -> None:
    net = L.PyramidL1()
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        net(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match="heads"):
        L.LPIPS(nn.Sequential(nn.ReLU()), [1], [torch.ones(1), torch.ones(1)])


def test_shipped_heads_have_lpips_v01_widths() -> None:
    for name, spec in L.BACKBONES.items():
        heads = L.load_heads(name)
        assert [h.shape[0] for h in heads] == list(spec.channels)
        assert all(float(h.min()) >= 0 for h in heads)  # LPIPS clamps its heads non-negative
        assert all(float(h.max()) > 0 for h in heads)


def _torchvision_style_file(path: Path, spec: L.BackboneSpec, seed: int) -> dict:
    """A state dict laid out like torchvision's: features.N.* plus classifier keys."""
    torch.manual_seed(seed)
    feats = L.build_backbone(spec)
    sd = {f"features.{k}": v.clone() for k, v in feats.state_dict().items()}
    sd["classifier.1.weight"] = torch.zeros(4, 4)
    torch.save(sd, path)
    return sd


def test_lpips_from_torchvision_style_file(tmp_path: Path) -> None:
    spec = L.BACKBONES["alexnet"]
    sd = _torchvision_style_file(tmp_path / "alexnet.pth", spec, seed=3)
    net = L.lpips_from_file("alexnet", tmp_path / "alexnet.pth")
    assert net.name == "lpips-alexnet" and net.is_lpips
    first = net.slices[0][0]
    assert torch.equal(first.weight, sd["features.0.weight"])
    assert torch.equal(net.slices[4][0].bias, sd["features.10.bias"])
    # Same numbers as wiring the loaded backbone by hand with the shipped heads.
    feats = L.build_backbone(spec)
    feats.load_state_dict({k[len("features.") :]: v for k, v in sd.items() if k[0] == "f"})
    manual = L.LPIPS(feats, spec.taps, L.load_heads("alexnet"))
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.allclose(net(x, y), manual(x, y))


def test_load_perceptual_uses_given_weights(tmp_path: Path) -> None:
    _torchvision_style_file(tmp_path / "alexnet.pth", L.BACKBONES["alexnet"], seed=0)
    choice = L.load_perceptual("alexnet", tmp_path / "alexnet.pth")
    assert isinstance(choice.loss, L.LPIPS) and choice.loss.name == "lpips-alexnet"
    assert "alexnet.pth" in choice.reason
    with pytest.raises(ValueError, match="backbone"):
        L.load_perceptual("resnet")


def test_wrong_backbone_file_is_refused(tmp_path: Path) -> None:
    _torchvision_style_file(tmp_path / "alexnet.pth", L.BACKBONES["alexnet"], seed=0)
    with pytest.raises(ValueError, match="vgg16"):
        L.lpips_from_file("vgg16", tmp_path / "alexnet.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        L.lpips_from_file("alexnet", tmp_path / "junk.pth")


def test_fallback_without_cached_backbone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GIMP_DRAGGAN_CACHE", str(tmp_path / "empty"))
    choice = L.load_perceptual("vgg16")
    assert isinstance(choice.loss, L.PyramidL1)
    assert "models download lpips-vgg16" in choice.reason


def test_pyramid_threshold_matches_its_definition() -> None:
    """`PyramidL1.threshold` is the distance of Gaussian noise at 30 dB PSNR (256 px)."""
    g = torch.Generator().manual_seed(0)
    sigma = 2.0 / math.pow(10.0, 30.0 / 20.0)
    x = torch.zeros(1, 3, 256, 256)
    noise = torch.randn(1, 3, 256, 256, generator=g) * sigma
    assert float(L.PyramidL1()(x, x + noise)) == pytest.approx(L.PyramidL1.threshold, abs=0.002)


def test_pyramid_distance_grows_with_error_and_sees_detail() -> None:
    torch.manual_seed(0)
    net = L.PyramidL1()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    small, large = x + 0.01 * torch.randn_like(x), x + 0.1 * torch.randn_like(x)
    assert float(net(x, x)) == 0.0
    assert 0 < float(net(x, small)) < float(net(x, large))
    # A one-pixel-period stripe pattern has tiny mean colour error but a clear distance.
    stripes = torch.zeros(1, 3, 64, 64)
    stripes[..., ::2] = 0.1
    assert float(net(stripes, torch.full_like(stripes, 0.05))) > 0.04


def test_psnr() -> None:
    x = torch.zeros(1, 3, 4, 4)
    assert float(L.psnr(x, x + 0.02)) == pytest.approx(10 * np.log10(4 / 0.0004), rel=1e-5)
