"""`gimp-draggan invert` in-process: a tiny model file, an odd-sized PNG (centre-cropped and
resized), an empty model cache (so the fallback distance is used and named), the --json line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gimp_draggan.cli import main
from gimp_draggan.commands.invert import fit_square, load_image
from gimp_draggan.draggan import pti
from gimp_draggan.draggan.checkpoint import save_generator
from gimp_draggan.draggan.networks import Generator, GeneratorConfig

pytestmark = pytest.mark.timeout(120)

CFG = GeneratorConfig(
    img_resolution=16, z_dim=16, w_dim=16, channel_base=128, channel_max=16, mapping_layers=2
)


@pytest.fixture(autouse=True)
def setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("GIMP_DRAGGAN_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setitem(
        pti.PRESETS,
        "fast",
        pti.InvertParams(projection_steps=6, tuning_steps=5, w_avg_samples=64, stop_distance=0.0),
    )
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _model(tmp_path: Path) -> str:
    torch.manual_seed(0)
    return str(save_generator(Generator(CFG), tmp_path / "tiny.safetensors"))


def test_invert_writes_reconstruction_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 41, 4), dtype=np.uint8)).save(tmp_path / "in.png")
    out = tmp_path / "sub" / "recon.png"
    rc = main(
        [
            "invert",
            str(tmp_path / "in.png"),
            "--model",
            _model(tmp_path),
            "--device",
            "cpu",
            "--json",
            "-o",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0
    info = json.loads(text.strip().splitlines()[-1])
    assert {"seconds", "psnr", "lpips", "steps"} <= set(info)
    assert info["steps"] == 11 and info["tuning_steps"] == 5
    assert info["loss"] == "pyramid-l1" and info["loss_is_lpips"] is False
    assert info["resized"] is True and info["resolution"] == 16
    assert "models download lpips-vgg16" in text and "not LPIPS" in text
    with Image.open(out) as im:
        assert im.size == (16, 16) and im.mode == "RGB"


def test_invert_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.png").write_bytes(b"not a png")
    rc = main(
        [
            "invert",
            str(tmp_path / "bad.png"),
            "--model",
            _model(tmp_path),
            "-o",
            str(tmp_path / "o.png"),
        ]
    )
    assert rc == 1 and "cannot read it as an image" in capsys.readouterr().err
    Image.new("RGB", (16, 16)).save(tmp_path / "ok.png")
    rc = main(
        [
            "invert",
            str(tmp_path / "ok.png"),
            "--model",
            str(tmp_path / "missing.pkl"),
            "-o",
            str(tmp_path / "o.png"),
        ]
    )
    assert rc == 1 and "missing.pkl" in capsys.readouterr().err
    rc = main(["invert", str(tmp_path / "ok.png"), "-o", str(tmp_path / "o.jpg")])
    assert rc == 1 and ".png" in capsys.readouterr().err


def test_fit_square_centre_crops_then_resizes(tmp_path: Path) -> None:
    img = np.zeros((20, 40, 3), np.float32)
    img[:, 10:30] = 1.0  # the centre square is all white, the sides black
    out, changed = fit_square(img, 8)
    assert changed and out.shape == (8, 8, 3)
    assert np.allclose(out, 1.0, atol=1e-3)
    same, changed = fit_square(out, 8)
    assert not changed and same is out
    grey16 = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    loaded = load_image(tmp_path / "g16.png")
    assert loaded.shape == (8, 8, 3)
    assert loaded[7, 7, 0] == pytest.approx(63000 / 65535, abs=1e-6)
