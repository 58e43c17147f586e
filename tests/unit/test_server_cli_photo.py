"""`gimp-draggan drag IN.png --daemon ADDR` writes the same image as the in-process photo form."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from service_helpers import pipeline_daemon, read_pixels, single_torch_thread

from gimp_draggan.cli import main

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    yield from single_torch_thread()


@pytest.fixture(scope="module")
def daemon(tiny):
    for server, _ in pipeline_daemon(tiny):
        yield server.address


def test_photo_drag_with_daemon_writes_the_same_image(tiny, daemon, tmp_path, capsys):
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:40, 0:48]
    img = np.stack([(x * 5) % 256, (y * 6) % 256, (x + y) * 2 % 256], axis=2).astype(np.uint8)
    img = np.clip(img.astype(int) + rng.integers(-8, 8, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "in.png")
    mask = np.zeros((40, 48), np.uint8)
    mask[6:34, 8:40] = 255
    Image.fromarray(mask).save(tmp_path / "sel.png")
    args = [
        "drag",
        str(tmp_path / "in.png"),
        "--model",
        str(tiny),
        "-p",
        "16,20:24,20",
        "--mask",
        str(tmp_path / "sel.png"),
        "--steps",
        "2",
    ]
    assert main([*args, "-o", str(tmp_path / "local.png")]) == 0
    assert main([*args, "--daemon", daemon, "-o", str(tmp_path / "remote.png")]) == 0
    capsys.readouterr()
    local, remote = read_pixels(tmp_path / "local.png"), read_pixels(tmp_path / "remote.png")
    assert local.shape == remote.shape == (40, 48, 3)
    assert np.array_equal(local, remote)
    outside = mask == 0
    assert np.array_equal(remote[outside], img[outside])  # Nothing outside the selection moved.
