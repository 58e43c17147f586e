"""The drag engine on tiny generators: tracking, motion supervision, mask, stopping, cancel,
determinism and input checks."""

import math

import pytest
import torch

from gimp_draggan.draggan.drag import (
    DragParams,
    DragSession,
    FeatureGrid,
    default_feature_res,
    pixel_radii,
    track_handles,
)
from gimp_draggan.draggan.networks import Generator, GeneratorConfig, seed_to_z

CFG = GeneratorConfig(
    img_resolution=32, z_dim=32, w_dim=32, channel_base=256, channel_max=32, mapping_layers=2
)
FAST = DragParams(lr=0.01)  # The tiny random generators need a larger step than the paper's.


@pytest.fixture(scope="module")
def gen() -> Generator:
    torch.manual_seed(1)
    return Generator(CFG).eval()


@pytest.fixture(scope="module")
def ws(gen: Generator) -> torch.Tensor:
    return gen.mapping(seed_to_z(1, CFG.z_dim), truncation_psi=0.7).detach()


# ----------------------------------------------------------------------------------------------
# Scaling rules.


def test_radii_scale_with_resolution_as_the_official_code() -> None:
    p = DragParams()
    assert pixel_radii(p, 512) == pixel_radii(p, 512).__class__(r1=3, r2=12, stop=2.0)
    r256 = pixel_radii(p, 256)
    assert (r256.r1, r256.r2, r256.stop) == (2, 6, 2.0)  # round(1.5) = 2 (half to even)
    r1024 = pixel_radii(p, 1024)
    assert (r1024.r1, r1024.r2, r1024.stop) == (6, 24, 4.0)
    r64 = pixel_radii(p, 64)
    assert (r64.r1, r64.r2, r64.stop) == (2, 2, 2.0)  # floors for small models


def test_stop_floor_lowers_the_small_model_stop_distance_only() -> None:
    low = DragParams(stop_floor=1.0)
    assert pixel_radii(low, 64).stop == 1.0
    assert pixel_radii(low, 512).stop == 2.0  # 2/512*H dominates from 256 px up
    with pytest.raises(ValueError, match="stop_floor"):
        DragParams(stop_floor=0.0).validate()


def test_feature_block_choice() -> None:
    assert [default_feature_res(r) for r in (1024, 512, 256, 128)] == [128] * 4
    assert default_feature_res(64) == 32
    assert default_feature_res(32) == 16


# ----------------------------------------------------------------------------------------------
# Tracking.


def _refs(grid: FeatureGrid, feat: torch.Tensor, handles: list[tuple[int, int]]) -> torch.Tensor:
    xs = torch.tensor([x for x, _ in handles])
    ys = torch.tensor([y for _, y in handles])
    return grid.pixels(feat, xs, ys).t()


def test_tracking_finds_known_shifts_at_full_resolution() -> None:
    torch.manual_seed(0)
    f0 = torch.randn(1, 16, 32, 32)
    grid = FeatureGrid(32, 32, torch.device("cpu"))
    handles = [(10, 12), (20, 5), (16, 16)]
    refs = _refs(grid, f0, handles)
    for dx, dy in [(0, 0), (3, -2), (-5, 4), (6, 6)]:
        f1 = torch.roll(f0, shifts=(dy, dx), dims=(2, 3))
        found = track_handles(grid, f1, refs, handles, radius=6)
        assert found == [(x + dx, y + dy) for x, y in handles]


def test_tracking_through_the_bilinear_resize() -> None:
    torch.manual_seed(0)
    f0 = torch.randn(1, 16, 16, 16)
    grid = FeatureGrid(16, 32, torch.device("cpu"))  # 1 feature pixel = 2 image pixels
    handles = [(10, 12), (17, 20)]
    refs = _refs(grid, f0, handles)
    f1 = torch.roll(f0, shifts=(1, -2), dims=(2, 3))
    assert track_handles(grid, f1, refs, handles, radius=6) == [(6, 14), (13, 22)]


def test_tracking_window_is_the_r2_square() -> None:
    torch.manual_seed(0)
    f0 = torch.randn(1, 16, 32, 32)
    grid = FeatureGrid(32, 32, torch.device("cpu"))
    refs = _refs(grid, f0, [(10, 10)])
    f1 = torch.roll(f0, shifts=(0, 5), dims=(2, 3))
    assert track_handles(grid, f1, refs, [(10, 10)], radius=5) == [(15, 10)]
    assert track_handles(grid, f1, refs, [(10, 10)], radius=4) != [(15, 10)]  # out of reach


def test_tracking_near_the_border_stays_inside() -> None:
    torch.manual_seed(0)
    f0 = torch.randn(1, 16, 32, 32)
    grid = FeatureGrid(32, 32, torch.device("cpu"))
    corners = [(0, 0), (31, 31), (0, 31), (31, 0)]
    refs = _refs(grid, f0, corners)
    for dx, dy in [(-3, -3), (3, 3), (-4, 2)]:
        f1 = torch.roll(f0, shifts=(dy, dx), dims=(2, 3))  # content leaves the image
        for x, y in track_handles(grid, f1, refs, corners, radius=6):
            assert 0 <= x <= 31 and 0 <= y <= 31
    edge = [(0, 5)]
    f1 = torch.roll(f0, shifts=(0, 2), dims=(2, 3))
    assert track_handles(grid, f1, _refs(grid, f0, edge), edge, radius=6) == [(2, 5)]


# ----------------------------------------------------------------------------------------------
# Motion supervision and the mask.


@pytest.mark.parametrize(("handle", "target"), [((10, 16), (18, 16)), ((20, 20), (14, 14))])
def test_drag_brings_the_handle_to_its_target(
    gen: Generator, ws: torch.Tensor, handle: tuple[int, int], target: tuple[int, int]
) -> None:
    s = DragSession(gen, ws, [handle], [target], params=FAST)
    start = math.dist(handle, target)
    result = s.run(max_steps=40)
    assert result.converged and not result.cancelled
    assert result.distances[0] <= 2.0 and start >= 8
    assert 0 < result.steps < 40
    assert result.image.shape == (1, 3, 32, 32)


def test_two_pairs_move_together(gen: Generator, ws: torch.Tensor) -> None:
    s = DragSession(gen, ws, [(8, 8), (24, 24)], [(14, 8), (24, 18)], params=FAST)
    result = s.run(max_steps=60)
    assert result.converged
    assert all(d <= 2.0 for d in result.distances)  # both from 6 px


def test_mask_keeps_the_fixed_region(gen: Generator, ws: torch.Tensor) -> None:
    with torch.no_grad():
        img0 = gen.synthesis(ws)
    mask = torch.zeros(32, 32)
    mask[8:25, 4:32] = 1  # a band around the drag path
    changes = []
    for m in (None, mask):
        params = DragParams(lr=0.01, stop_distance=0.0001)  # never stops early: 20 steps each
        result = DragSession(gen, ws, [(8, 16)], [(28, 16)], mask=m, params=params).run(20)
        assert result.steps == 20
        diff = (result.image - img0).abs().mean(dim=1)[0]
        changes.append(diff[mask == 0].mean().item())
    free, masked = changes
    assert free > 0.02  # the unmasked drag does change the outside ...
    assert masked <= 0.35 * free  # ... and the mask term keeps it to a third of that at most


# ----------------------------------------------------------------------------------------------
# Stopping, cancelling, reports, determinism.


def test_already_within_stop_distance_takes_no_step(gen: Generator, ws: torch.Tensor) -> None:
    s = DragSession(gen, ws, [(10, 10)], [(11.5, 10.5)])
    before = s.ws
    reports = []
    result = s.run(on_step=reports.append)
    assert result.converged and result.steps == 0
    assert len(reports) == 1 and not reports[0].optimised and reports[0].loss is None
    assert torch.equal(result.ws, before)


def test_max_steps_then_a_later_run_goes_on(gen: Generator, ws: torch.Tensor) -> None:
    s = DragSession(gen, ws, [(4, 4)], [(28, 28)])  # paper lr: far from done in 5 steps
    first = s.run(max_steps=3)
    assert first.steps == 3 and not first.converged and not first.cancelled
    assert [r.step for r in first.reports] == [1, 2, 3]
    second = s.run(max_steps=2)
    assert second.steps == 5
    assert not torch.equal(second.ws, first.ws)


def test_cancel_then_resume_equals_an_uninterrupted_run(gen: Generator, ws: torch.Tensor) -> None:
    calls = []

    def stop_after_two() -> bool:
        calls.append(1)
        return len(calls) > 2

    s = DragSession(gen, ws, [(10, 16)], [(24, 16)], params=FAST)
    cancelled = s.run(max_steps=10, should_stop=stop_after_two)
    assert cancelled.cancelled and cancelled.steps == 2 and len(calls) == 3
    resumed = s.run(max_steps=3)
    assert resumed.steps == 5 and not resumed.cancelled

    straight = DragSession(gen, ws, [(10, 16)], [(24, 16)], params=FAST).run(max_steps=5)
    assert resumed.points == straight.points
    torch.testing.assert_close(resumed.ws, straight.ws, rtol=0, atol=1e-6)


def test_cancel_before_the_first_step(gen: Generator, ws: torch.Tensor) -> None:
    s = DragSession(gen, ws, [(10, 16)], [(24, 16)])
    result = s.run(should_stop=lambda: True)
    assert result.cancelled and result.steps == 0 and result.points == [(10.0, 16.0)]


def test_reports_and_previews(gen: Generator, ws: torch.Tensor) -> None:
    s = DragSession(gen, ws, [(4, 4)], [(28, 28)])
    reports = []
    s.run(max_steps=4, on_step=reports.append, preview_every=2)
    assert [r.step for r in reports] == [1, 2, 3, 4]
    assert [r.preview is not None for r in reports] == [False, True, False, True]
    preview = reports[1].preview
    assert preview is not None and preview.shape == (32, 32, 3) and preview.dtype == torch.uint8
    for r in reports:
        assert len(r.points) == 1 and len(r.distances) == 1 and r.loss is not None
        assert r.distances[0] == pytest.approx(math.dist(r.points[0], (28, 28)))
        assert 0 < r.step_seconds <= r.elapsed
    assert reports[-1].elapsed >= reports[0].elapsed


def test_deterministic_on_cpu(gen: Generator, ws: torch.Tensor) -> None:
    runs = [
        DragSession(gen, ws, [(10, 16)], [(20, 12)], params=FAST).run(max_steps=6) for _ in range(2)
    ]
    assert torch.equal(runs[0].ws, runs[1].ws)
    assert torch.equal(runs[0].image, runs[1].image)
    assert runs[0].points == runs[1].points


# ----------------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize(
    ("handles", "targets", "message"),
    [
        ([(-1, 5)], [(10, 5)], r"handles\[0\].*outside the 32x32 image"),
        ([(5, 5)], [(32, 5)], r"targets\[0\].*outside"),
        ([(5, 5), (6, 40)], [(10, 5), (6, 6)], r"handles\[1\].*outside"),
        ([(float("nan"), 5)], [(10, 5)], r"handles.*NaN"),
        ([(5, 5)], [(10, float("inf"))], r"targets.*NaN or inf"),
        ([], [], r"no handle/target pairs"),
        ([(5, 5)], [(10, 5), (3, 3)], r"1 handles but 2 targets"),
        ([(5, 5)], [(5, 5)], r"pair 0: handle \(5, 5\) is already on its target"),
        ([(5, 5, 1)], [(5, 6, 1)], r"handles: expected a list of \(x, y\) points"),
    ],
)
def test_bad_points(
    gen: Generator, ws: torch.Tensor, handles: list, targets: list, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        DragSession(gen, ws, handles, targets)


def test_bad_mask(gen: Generator, ws: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"mask: expected shape \[32, 32\]"):
        DragSession(gen, ws, [(5, 5)], [(9, 5)], mask=torch.ones(16, 16))
    with pytest.raises(ValueError, match=r"mask: no pixel may move"):
        DragSession(gen, ws, [(5, 5)], [(9, 5)], mask=torch.zeros(32, 32))
    with pytest.raises(ValueError, match=r"mask: values must be finite and in \[0, 1\]"):
        DragSession(gen, ws, [(5, 5)], [(9, 5)], mask=torch.full((32, 32), 255.0))


def test_bad_latent_and_params(gen: Generator, ws: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"ws: expected shape \[1, 8, 32\]"):
        DragSession(gen, ws[:, :5], [(5, 5)], [(9, 5)])
    with pytest.raises(ValueError, match=r"ws: latent contains NaN"):
        DragSession(gen, ws * float("nan"), [(5, 5)], [(9, 5)])
    with pytest.raises(ValueError, match=r"num_optimised_ws = 9 exceeds"):
        DragSession(gen, ws, [(5, 5)], [(9, 5)], params=DragParams(num_optimised_ws=9))
    with pytest.raises(ValueError, match=r"feature_res = 24 is not a block resolution"):
        DragSession(gen, ws, [(5, 5)], [(9, 5)], params=DragParams(feature_res=24))
    with pytest.raises(ValueError, match=r"DragParams.lr must be a positive number"):
        DragSession(gen, ws, [(5, 5)], [(9, 5)], params=DragParams(lr=float("nan")))
    with pytest.raises(ValueError, match=r"max_steps \(-1\)"):
        DragSession(gen, ws, [(5, 5)], [(9, 5)]).run(max_steps=-1)
