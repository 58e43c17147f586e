"""The StyleGAN2 generator: configurations, names, truncation, the early-stopping synthesis."""

import pytest
import torch

from gimp_draggan.draggan.networks import (
    Generator,
    GeneratorConfig,
    SynthesisNetwork,
    seed_to_z,
    to_uint8,
    upsample2d,
)

TINY = GeneratorConfig(
    img_resolution=32, z_dim=32, w_dim=32, channel_base=256, channel_max=32, mapping_layers=2
)


@pytest.mark.parametrize(("res", "num_ws"), [(64, 10), (256, 14), (512, 16), (1024, 18)])
def test_num_ws_matches_official_configurations(res: int, num_ws: int) -> None:
    synth = SynthesisNetwork(w_dim=8, img_resolution=res, channel_base=4096, channel_max=4)
    assert synth.num_ws == num_ws


def test_ffhq512_parameter_names_and_shapes() -> None:
    G = Generator(GeneratorConfig(img_resolution=512))
    sd = G.state_dict()
    assert sd["mapping.fc7.weight"].shape == (512, 512)
    assert sd["mapping.w_avg"].shape == (512,)
    assert sd["synthesis.b4.const"].shape == (512, 4, 4)
    assert sd["synthesis.b128.conv0.weight"].shape == (256, 512, 3, 3)
    assert sd["synthesis.b512.torgb.weight"].shape == (3, 64, 1, 1)
    assert sd["synthesis.b512.conv1.noise_const"].shape == (512, 512)
    assert sd["synthesis.b64.conv0.resample_filter"].shape == (4, 4)
    assert "synthesis.b4.conv0.weight" not in sd
    n_params = sum(p.numel() for p in G.parameters())
    assert 30_000_000 < n_params < 30_500_000  # the official FFHQ-512 G has ~30.3 M


def test_seed_render_is_deterministic_and_in_range() -> None:
    torch.manual_seed(0)
    G = Generator(TINY).eval()
    z = seed_to_z(3, TINY.z_dim)
    with torch.no_grad():
        a = G(z, truncation_psi=0.7)
        b = G(z, truncation_psi=0.7)
    assert a.shape == (1, 3, 32, 32)
    assert torch.equal(a, b)
    u8 = to_uint8(a)
    assert u8.shape == (1, 32, 32, 3) and u8.dtype == torch.uint8


def test_truncation_pulls_towards_w_avg() -> None:
    torch.manual_seed(0)
    G = Generator(TINY).eval()
    G.mapping.w_avg.normal_()
    z = torch.randn(2, TINY.z_dim)
    full = G.mapping(z)
    half = G.mapping(z, truncation_psi=0.5)
    assert torch.allclose(half, G.mapping.w_avg.lerp(full, 0.5), atol=1e-6)
    cut = G.mapping(z, truncation_psi=0.5, truncation_cutoff=3)
    assert torch.allclose(cut[:, :3], half[:, :3]) and torch.allclose(cut[:, 3:], full[:, 3:])


def test_stopping_after_feature_block_gives_the_same_feature() -> None:
    torch.manual_seed(0)
    G = Generator(TINY).eval()
    ws = G.mapping(torch.randn(1, TINY.z_dim))
    full = G.synthesis.run(ws, feature_res=16, render=True)
    early = G.synthesis.run(ws, feature_res=16, render=False)
    assert early.img is None and full.img is not None
    assert full.feature is not None and early.feature is not None
    assert early.feature.shape == (1, G.synthesis.channels[16], 16, 16)
    assert torch.equal(full.feature, early.feature)


def test_noise_modes_differ_as_documented() -> None:
    torch.manual_seed(0)
    G = Generator(TINY).eval()
    for name, p in G.named_parameters():
        if name.endswith("noise_strength"):
            p.data.fill_(0.5)
    ws = G.mapping(torch.randn(1, TINY.z_dim))
    const = G.synthesis(ws, noise_mode="const")
    assert torch.equal(const, G.synthesis(ws, noise_mode="const"))
    assert not torch.equal(const, G.synthesis(ws, noise_mode="none"))
    rand = G.synthesis(ws, noise_mode="random")
    assert not torch.equal(rand, G.synthesis(ws, noise_mode="random"))


def test_bad_inputs_are_named() -> None:
    G = Generator(TINY)
    with pytest.raises(ValueError, match="ws"):
        G.synthesis(torch.zeros(1, 3, TINY.w_dim))
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(torch.zeros(1, G.num_ws, TINY.w_dim), noise_mode="loud")
    with pytest.raises(ValueError, match="power of two"):
        SynthesisNetwork(w_dim=8, img_resolution=48)


def test_fir_upsampling_keeps_constant_images_constant() -> None:
    from gimp_draggan.draggan.networks import make_resample_filter

    x = torch.full((1, 2, 6, 6), 0.25)
    y = upsample2d(x, make_resample_filter())
    assert y.shape == (1, 2, 12, 12)
    inner = y[:, :, 2:-2, 2:-2]  # borders see zero padding
    assert torch.allclose(inner, torch.full_like(inner, 0.25), atol=1e-6)


def test_config_json_round_trip_and_unknown_keys() -> None:
    d = TINY.to_json_dict()
    assert GeneratorConfig.from_json_dict(d) == TINY
    with pytest.raises(ValueError, match="unknown"):
        GeneratorConfig.from_json_dict({**d, "bogus": 1})
