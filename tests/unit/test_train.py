"""The StyleGAN2 trainer: a few real iterations on a tiny configuration, checkpoint round trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gimp_draggan.draggan.networks import Generator, GeneratorConfig
from gimp_draggan_tools.train import trainer as T
from gimp_draggan_tools.train.discriminator import Discriminator, DiscriminatorConfig


def tiny(tmp_path: Path, **kw: object) -> T.TrainConfig:
    base = dict(
        out=str(tmp_path / "run"),
        resolution=32,
        z_dim=32,
        w_dim=32,
        mapping_layers=2,
        g_channel_base=256,
        g_channel_max=32,
        d_channel_base=256,
        d_channel_max=32,
        batch=4,
        r1_interval=2,
        log_every=1,
        device="cpu",
        kimg=0.016,
        checkpoint_minutes=100.0,
        grid_minutes=100.0,
    )
    base.update(kw)
    return T.TrainConfig(**base)  # type: ignore[arg-type]


def _states_equal(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, dict):
            if not _states_equal(x, y):
                return False
        elif isinstance(x, torch.Tensor):
            if not torch.equal(x, y):
                return False
        elif isinstance(x, list):
            pairs = zip(x, y, strict=False)
            if len(x) != len(y) or not all(
                _states_equal(u, v) if isinstance(u, dict) else u == v for u, v in pairs
            ):
                return False
        elif x != y:
            return False
    return True


def test_iterations_are_finite_and_change_weights(tmp_path: Path) -> None:
    tr = T.Trainer(tiny(tmp_path, pl_weight=1.0, pl_interval=2, style_mixing=0.5))
    before = {k: v.clone() for k, v in tr.G.state_dict().items()}
    ema_before = tr.G_ema.synthesis.b4.const.clone()
    seen = set()
    for _ in range(4):
        stats = tr.step()
        seen |= set(stats)
        assert all(math.isfinite(v) for v in stats.values()), stats
    assert {"loss_G", "loss_D", "r1", "pl", "D_real", "D_fake"} <= seen
    assert tr.nimg == 16 and tr.step_count == 4
    assert not torch.equal(before["synthesis.b4.const"], tr.G.synthesis.b4.const)
    assert not torch.equal(ema_before, tr.G_ema.synthesis.b4.const)
    assert not torch.equal(tr.G.mapping.w_avg, torch.zeros_like(tr.G.mapping.w_avg))


def test_checkpoint_roundtrip_is_bit_exact_and_resume_continues(tmp_path: Path) -> None:
    cfg = tiny(tmp_path)
    T.train(cfg)
    ckpt = Path(cfg.out) / T.CHECKPOINT_NAME
    assert ckpt.is_file() and (Path(cfg.out) / "grid-latest.png").is_file()
    assert any((Path(cfg.out) / "ema").glob("ema-*.pt"))
    saved = torch.load(ckpt, weights_only=True)
    assert saved["nimg"] == 16 and saved["format"] == T.CHECKPOINT_FORMAT

    tr = T.Trainer(cfg)
    tr.load(ckpt)
    assert _states_equal(tr.state(), saved)

    # Two trainers resumed from the same checkpoint take identical next steps.
    other = T.Trainer(cfg)
    other.load(ckpt)
    tr.step()
    other.step()
    assert _states_equal(tr.state(), other.state())

    # Resuming train() continues the count instead of starting again.
    T.train(tiny(tmp_path, kimg=0.024))
    assert torch.load(ckpt, weights_only=True)["nimg"] == 24


def test_split_modconv_matches_the_generator_maths() -> None:
    torch.manual_seed(0)
    G = Generator(
        GeneratorConfig(
            img_resolution=32,
            z_dim=32,
            w_dim=32,
            channel_base=256,
            channel_max=32,
            mapping_layers=2,
        )
    )
    z = torch.randn(3, 32)
    ref = G(z)
    with T.split_modconv(True):
        split = G(z)
    assert torch.allclose(ref, split, atol=1e-4)
    assert torch.equal(G(z), ref)  # restored on exit


def test_discriminator_shapes_and_bad_input() -> None:
    D = Discriminator(DiscriminatorConfig(img_resolution=32, channel_base=256, channel_max=32))
    assert D(torch.randn(6, 3, 32, 32)).shape == (6, 1)
    with pytest.raises(ValueError, match=r"\[N, 3, 32, 32\]"):
        D(torch.randn(2, 3, 16, 16))


def test_bad_config_and_cli(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch"):
        T.TrainConfig(batch=1)
    argv = ["--out", str(tmp_path), "--batch", "8", "--no-fused-modconv", "--lr", "0.001"]
    cfg = T.parse_args(argv)
    assert cfg.batch == 8 and cfg.lr == 0.001 and cfg.fused_modconv is False
    assert T.main(["--resolution", "48"]) == 2


def test_frechet_distance_known_values() -> None:
    import numpy as np

    from gimp_draggan_tools.train.quality import frechet_distance, geometry
    from gimp_draggan_tools.train.world import render

    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) < 1e-6
    shifted = frechet_distance(a, a + np.array([2.0, 0.0, 0.0]))
    assert abs(shifted - 4.0) < 1e-6
    scaled = frechet_distance(a, a * 2)  # (2 - 1)^2 per dimension for unit variances
    assert abs(scaled - 3.0) < 0.2
    with pytest.raises(ValueError, match="equal D"):
        frechet_distance(a, a[:, :2])
    kp = render([1, 2]).keypoints
    g = geometry(kp)
    assert torch.allclose(g["mouth_open"], kp[:, 6, 1] - kp[:, 5, 1])
