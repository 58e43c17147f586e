"""`gimp-draggan drag` (seed form) on a tiny generator saved by the test."""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gimp_draggan.cli import main
from gimp_draggan.commands.drag import load_mask, pair_argument, parse_pair
from gimp_draggan.draggan.checkpoint import save_generator
from gimp_draggan.draggan.networks import Generator, GeneratorConfig

CFG = GeneratorConfig(
    img_resolution=32, z_dim=32, w_dim=32, channel_base=256, channel_max=32, mapping_layers=2
)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    return save_generator(Generator(CFG), tmp_path_factory.mktemp("m") / "tiny.safetensors")


def test_parse_pair() -> None:
    assert parse_pair("10,16:18.5,16") == ((10.0, 16.0), (18.5, 16.0))
    for bad, message in [
        ("10,16", "expected HANDLE:TARGET"),
        ("10,16:18", "the target '18' must be X,Y"),
        ("a,16:18,16", "the handle 'a,16' must be two numbers"),
        ("1,2:3,4:5,6", "expected HANDLE:TARGET"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_pair(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        pair_argument("nonsense")


def test_load_mask(tmp_path: Path) -> None:
    a = np.zeros((32, 32), dtype=np.uint8)
    a[4:10, 2:30] = 255
    Image.fromarray(a).save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png", 32, 32)
    assert m.shape == (32, 32) and m.dtype == np.float32
    assert m[5, 5] == 1.0 and m[20, 5] == 0.0
    with pytest.raises(ValueError, match=r"is 32x32 but must be 64x64"):
        load_mask(tmp_path / "m.png", 64, 64)
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read it as an image"):
        load_mask(tmp_path / "junk.png", 32, 32)


def test_seed_drag_json(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out.png"
    a = np.zeros((32, 32), dtype=np.uint8)
    a[8:25, 4:32] = 255
    Image.fromarray(a).save(tmp_path / "mask.png")
    rc = main(
        [
            "drag",
            "--model",
            str(model),
            "--seed",
            "1",
            "-p",
            "10,16:18,16",
            "-p",
            "20,8:20,4",
            "--steps",
            "4",
            "--lr",
            "0.01",
            "--mask",
            str(tmp_path / "mask.png"),
            "--device",
            "cpu",
            "--json",
            "-o",
            str(out),
        ]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    info = json.loads(lines[-1])
    assert info["steps"] == 4 and info["device"] == "cpu"
    assert isinstance(info["sec_per_step"], float) and info["sec_per_step"] > 0
    assert len(info["points"]) == 2 and all(len(p) == 2 for p in info["points"])
    assert len(info["distances"]) == 2
    assert info["resolution"] == 32 and info["seed"] == 1
    assert sum(line.startswith("step ") for line in lines) == 4
    with Image.open(out) as im:
        assert im.size == (32, 32) and im.mode == "RGB"


def test_seed_drag_bad_input(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["drag", "--model", str(model), "--device", "cpu", "-o", str(tmp_path / "o.png")]
    assert main([*base, "--seed", "1", "-p", "40,16:18,16"]) == 1
    assert "handles[0] = (40, 16) is outside the 32x32 image" in capsys.readouterr().err
    assert main([*base, "-p", "10,16:18,16"]) == 1
    assert "give --seed N" in capsys.readouterr().err
    assert main([*base, "--seed", "1", "-p", "10,16:10,16"]) == 1
    assert "already on its target" in capsys.readouterr().err
    assert (
        main(
            [
                "drag",
                "--model",
                str(tmp_path / "missing.safetensors"),
                "--seed",
                "1",
                "-p",
                "1,1:5,5",
                "-o",
                str(tmp_path / "o.png"),
            ]
        )
        == 1
    )
    assert "neither a file nor a known model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--seed", "1", "-p", "10:18"])
    assert not (tmp_path / "o.png").exists()
