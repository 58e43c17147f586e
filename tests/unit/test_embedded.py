"""The shipped `embedded` model and keypoint detector: load, render, detect, and one real drag."""

from __future__ import annotations

import json

import pytest
import torch

from gimp_draggan.draggan.checkpoint import config_path, load_generator
from gimp_draggan.draggan.drag import DragParams, DragSession
from gimp_draggan.draggan.networks import seed_to_z
from gimp_draggan.faces import keypoints
from gimp_draggan.models.registry import load_table, resolve
from gimp_draggan_tools.train import keypoints as keypoint_training
from gimp_draggan_tools.train import world


def _model():
    return load_generator(resolve("embedded")).eval()


def test_embedded_is_registered_shipped_and_small() -> None:
    table = load_table()
    assert next(iter(table)) == "embedded"
    path = resolve("embedded")
    assert path.name == "embedded.safetensors" and path.parent.name == "assets"
    size = path.stat().st_size + config_path(path).stat().st_size
    assert size <= 20 * 1024 * 1024
    doc = json.loads(config_path(path).read_text())
    prov = doc["provenance"]
    assert prov["images_seen"] > 10_000 and prov["wall_time_s"] > 0
    assert doc["num_ws"] == 10 and doc["config"]["img_resolution"] == 64


def test_renders_a_deterministic_face_like_image() -> None:
    G = _model()
    z = seed_to_z(1, G.z_dim)
    with torch.no_grad():
        a = G(z, truncation_psi=0.7, noise_mode="const")
        b = G(z, truncation_psi=0.7, noise_mode="const")
        other = G(seed_to_z(2, G.z_dim), truncation_psi=0.7, noise_mode="const")
    assert a.shape == (1, 3, 64, 64)
    assert torch.equal(a, b)
    assert (a - other).abs().mean() > 0.05
    # Statistics of the world's images: mid-grey mean, clear contrast, nearly all in range.
    real = world.render(range(64)).images
    assert abs(a.mean() - real.mean()) < 0.4
    assert 0.1 < a.std() < 0.8
    assert (a.abs() <= 1.05).float().mean() > 0.99


def test_keypoint_detector_is_accurate_on_held_out_world_images() -> None:
    net = keypoints.load_detector()
    acc = keypoint_training.measure(net, n=128)
    print(f"detector held-out error: {acc.mean_px:.3f} px mean, p95 {acc.p95_px:.3f}")
    assert acc.mean_px < 0.6


def test_detector_finds_a_face_in_generated_images() -> None:
    """On generated samples the keypoints land in a face-like arrangement."""
    G = _model()
    net = keypoints.load_detector()
    z = torch.randn(16, G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        kp = keypoints.detect(net, G(z, truncation_psi=0.7, noise_mode="const"))
    assert (kp[:, 0, 0] < kp[:, 1, 0]).float().mean() > 0.9  # left eye left
    assert (kp[:, :2, 1].mean(1) < kp[:, 6, 1]).float().mean() > 0.9  # eyes above mouth


def test_short_real_drag_moves_a_detected_keypoint_towards_its_target() -> None:
    G = _model()
    net = keypoints.load_detector()
    ws = G.mapping(seed_to_z(3, G.z_dim), truncation_psi=0.7).detach()
    with torch.no_grad():
        kp = keypoints.detect(net, G.synthesis(ws, noise_mode="const"))[0]
    chin = kp[7]
    target = chin + torch.tensor([0.0, 5.0])
    handle = (chin - 0.5).clamp(0, 63)
    session = DragSession(
        G,
        ws,
        [handle.tolist()],
        [(target - 0.5).clamp(0, 63).tolist()],
        params=DragParams(max_steps=40),
    )
    result = session.run()
    after = keypoints.detect(net, result.image)[0, 7]
    before_d = (chin - target).norm().item()
    after_d = (after - target).norm().item()
    print(
        f"chin drag: detected distance to target {before_d:.2f} -> {after_d:.2f} px, "
        f"{result.steps} steps"
    )
    assert after_d < 0.6 * before_d


def test_eval_drag_bench_prints_the_contract_keys(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "eval_drag.py"
    spec = importlib.util.spec_from_file_location("eval_drag", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--n", "1", "--steps", "3", "--points", "5", "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"n", "res", "points", "md_before", "md_after", "outside_change", "sec_per_edit"} <= set(
        last
    )
    assert last["n"] == 1 and last["res"] == 64 and last["points"] == "5"
    assert last["md_before"] >= 3.0  # --min-md default: targets far enough to measure
