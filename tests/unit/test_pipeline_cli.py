"""`gimp-draggan drag IN.png …`: the photo form of the drag command, in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from gimp_draggan.cli import main
from gimp_draggan.draggan import pti
from gimp_draggan.draggan.checkpoint import save_generator
from gimp_draggan.draggan.networks import Generator, GeneratorConfig

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(autouse=True)
def small(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("GIMP_DRAGGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(
        pti.PRESETS,
        "fast",
        pti.InvertParams(projection_steps=3, tuning_steps=2, w_avg_samples=64),
    )
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    cfg = GeneratorConfig(
        img_resolution=32, z_dim=32, w_dim=32, channel_base=256, channel_max=32, mapping_layers=2
    )
    model = save_generator(Generator(cfg), tmp_path / "tiny.safetensors")
    photo = tmp_path / "cat.png"
    Image.fromarray(skimage.data.chelsea()).save(photo)  # 451 x 300
    mask = np.zeros((300, 451), np.uint8)
    mask[60:200, 120:300] = 255
    Image.fromarray(mask).save(tmp_path / "sel.png")
    Image.fromarray(mask[:100]).save(tmp_path / "small.png")
    return {
        "model": model,
        "photo": photo,
        "mask": tmp_path / "sel.png",
        "small": tmp_path / "small.png",
        "out": tmp_path / "out" / "edited.png",
    }


def test_photo_form_writes_the_full_image_changed_only_in_the_mask(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "drag",
            str(files["photo"]),
            "-p",
            "200,120:212,125",
            "--mask",
            str(files["mask"]),
            "--model",
            str(files["model"]),
            "--steps",
            "2",
            "--lr",
            "0.05",
            "--device",
            "cpu",
            "--json",
            "-o",
            str(files["out"]),
        ]
    )
    assert code == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"steps", "points", "distances", "device", "session", "timings"} <= set(info)
    assert info["framing"] == "square"  # A model file has no face alignment.
    before = np.asarray(Image.open(files["photo"]))
    after = np.asarray(Image.open(files["out"]))
    assert after.shape == before.shape == (300, 451, 3)  # full size, opaque -> RGB
    keep = np.asarray(Image.open(files["mask"])) == 0
    assert np.array_equal(after[keep], before[keep])
    assert not np.array_equal(after[~keep], before[~keep])
    x, y, w, h = info["patch"]
    assert (x, y, w, h) == (120, 60, 180, 140)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mask", "small"], "must be 451x300"),
        (["--seed", "3"], "not both"),
        (["-p", "900,10:10,10"], "outside the 451x300 image"),
    ],
)
def test_photo_form_errors_are_sentences(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    extra = [str(files[a]) if a in files else a for a in extra]
    pairs = [] if "-p" in extra else ["-p", "200,120:212,125"]
    code = main(
        [
            "drag",
            str(files["photo"]),
            *pairs,
            *extra,
            "--model",
            str(files["model"]),
            "-o",
            str(files["out"]),
        ]
    )
    assert code == 1
    assert message in capsys.readouterr().err
    assert not files["out"].exists()
