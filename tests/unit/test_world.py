"""The procedural world: deterministic by seed, keypoints where the shapes are, speed printed."""

from __future__ import annotations

import time

import pytest
import torch

from gimp_draggan_tools.train import world


def test_same_seed_same_image_in_any_batch() -> None:
    a = world.render([7, 8, 9])
    b = world.render([9, 100, 7])
    assert torch.equal(a.images[0], b.images[2])
    assert torch.equal(a.keypoints[2], b.keypoints[0])
    assert not torch.equal(a.images[0], a.images[1])


def test_shapes_range_and_keypoints_inside() -> None:
    t = time.perf_counter()
    b = world.render(range(200))
    rate = 200 / (time.perf_counter() - t)
    print(f"world.render: {rate:.0f} images/s at 64x64 on {torch.get_num_threads()} threads")
    assert b.images.shape == (200, 3, 64, 64)
    assert b.keypoints.shape == (200, len(world.KEYPOINT_NAMES), 2)
    assert b.images.min() >= -1 and b.images.max() <= 1
    assert (b.keypoints > 0).all() and (b.keypoints < 64).all()


def test_keypoints_sit_on_their_parts() -> None:
    """Keypoints are ordered as on a face, and the mouth's centre pixel is red (lips or tongue)."""
    b = world.render(range(300))
    kp = b.keypoints
    # Geometry: eyes above nose above the mouth's centre above chin; left eye left of right eye.
    # (A wide-open mouth may reach over the nose, so only its centre is ordered.)
    assert (kp[:, 0, 0] < kp[:, 1, 0]).all()
    eyes_y = kp[:, :2, 1].mean(dim=1)
    mouth_y = (kp[:, 5, 1] + kp[:, 6, 1]) / 2
    assert (eyes_y < kp[:, 2, 1]).all() and (kp[:, 2, 1] < mouth_y).all()
    assert (kp[:, 6, 1] < kp[:, 7, 1]).all()
    assert (kp[:, 3, 0] < kp[:, 4, 0]).all() and (kp[:, 5, 1] < kp[:, 6, 1]).all()
    # Appearance: the mouth centre is redder than it is green (dark red interior or tongue).
    mid = ((kp[:, 5] + kp[:, 6]) / 2).long()
    rgb = torch.stack([b.images[i, :, mid[i, 1], mid[i, 0]] for i in range(len(mid))])
    assert (rgb[:, 0] > rgb[:, 1]).float().mean() > 0.95


def test_geometry_varies_widely() -> None:
    """Drag needs parts that move between samples: spreads are several pixels."""
    kp = world.render(range(500)).keypoints
    mouth_open = kp[:, 6, 1] - kp[:, 5, 1]
    assert mouth_open.max() - mouth_open.min() > 6
    assert kp[:, 2, 0].std() > 3 and kp[:, 2, 1].std() > 2.5
    eye_sep = kp[:, 1, 0] - kp[:, 0, 0]
    assert eye_sep.max() - eye_sep.min() > 5


def test_resolution_scales_keypoints() -> None:
    small = world.render([3, 4], 64)
    big = world.render([3, 4], 128)
    assert big.images.shape == (2, 3, 128, 128)
    assert torch.allclose(big.keypoints, small.keypoints * 2)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="seed"):
        world.render([])
    with pytest.raises(ValueError, match="power of two"):
        world.render([1], resolution=48)


def test_grid_tiles_images() -> None:
    b = world.render(range(10))
    g = world.grid(b.images, cols=4)
    assert g.shape == (3 * 64, 4 * 64, 3) and g.dtype.name == "uint8"
    assert (g[:64, :64] == world.to_uint8_hwc(b.images[:1])[0]).all()
