"""tests/bench/bench_gpu.py on the CPU with its tiny model: the JSON contract, fp32 accepted
with real timings, a failing or drifting mode reported as rejected instead of raised."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

PATH = Path(__file__).resolve().parents[1] / "bench" / "bench_gpu.py"
ROW_KEYS = {
    "sec_per_step",
    "step_ms_min",
    "edit_seconds",
    "edit_timings",
    "peak_gpu_mb",
    "edit_peak_gpu_mb",
    "accepted",
    "reason",
    "handle_dx_px",
    "psnr_db",
}


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", PATH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = mod
    spec.loader.exec_module(mod)
    return mod


def _run(bench: ModuleType, capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    assert bench.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, "stdout must be exactly one JSON line"
    return json.loads(lines[0])


def test_tiny_cpu_run_with_a_photo_edit(
    bench: ModuleType, capsys: pytest.CaptureFixture[str], one_torch_thread: None
) -> None:
    out = _run(
        bench,
        capsys,
        ["--device", "cpu", "--tiny", "--steps", "3", "--photo", "--edit-steps", "20"],
    )
    assert out["device"] == "cpu" and out["res"] == 32 and out["tiny"] is True
    assert out["torch"] == torch.__version__ and out["commit"] and out["device_name"]
    assert out["tolerance"] == {"handle_px": 1.0, "psnr_db": 30.0}
    assert out["official"] is None
    assert list(out["modes"]) == ["fp32", "tf32", "bf16", "fp16"]
    for mode, row in out["modes"].items():
        assert set(row) >= ROW_KEYS, mode
        assert isinstance(row["accepted"], bool)
        assert row["accepted"] or row["reason"], f"{mode} rejected without a reason"
        assert row["peak_gpu_mb"] is None and row["edit_peak_gpu_mb"] is None  # no GPU here
    fp32 = out["modes"]["fp32"]
    assert fp32["accepted"] and fp32["reason"] is None
    assert fp32["sec_per_step"] > 0 and fp32["step_ms_min"] > 0
    assert fp32["handle_dx_px"] == 0.0
    assert fp32["edit_seconds"] > 0
    assert fp32["edit_timings"]["invert"] > 0 and fp32["edit_timings"]["drag"] > 0
    assert fp32["edit_points_dx_px"] == 0.0
    # TF32 does not exist on a CPU: the same maths, so within any tolerance.
    tf32 = out["modes"]["tf32"]
    assert tf32["accepted"] and tf32["handle_dx_px"] == 0.0 and tf32["sec_per_step"] > 0


def test_a_failing_mode_is_rejected_not_raised(
    bench: ModuleType,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    one_torch_thread: None,
) -> None:
    real = bench.drag_mode

    def drag_mode(G, ws, pairs, mode, device, steps):  # type: ignore[no-untyped-def]
        if mode == "fp16":
            raise RuntimeError("no fp16 kernel here")
        return real(G, ws, pairs, mode, device, steps)

    monkeypatch.setattr(bench, "drag_mode", drag_mode)
    out = _run(bench, capsys, ["--device", "cpu", "--tiny", "--steps", "1", "--modes", "fp16"])
    assert list(out["modes"]) == ["fp32", "fp16"]  # fp32 always runs: the yardstick
    assert out["modes"]["fp32"]["accepted"]
    fp16 = out["modes"]["fp16"]
    assert not fp16["accepted"] and fp16["sec_per_step"] is None
    assert fp16["reason"].startswith("drag failed: RuntimeError: no fp16 kernel here")


def test_judge_rejects_drift_beyond_the_tolerance(bench: ModuleType) -> None:
    img = torch.zeros(1, 3, 8, 8)
    base = {"points": [(3.0, 3.0), (5.0, 5.0)], "image": img}
    near = {"points": [(3.5, 3.0), (5.0, 5.0)], "image": img + 0.01}
    ok, why, figures = bench.judge(near, base, 1.0, 30.0)
    assert ok and why is None and figures["handle_dx_px"] == 0.5
    far = {"points": [(3.0, 3.0), (5.0, 6.5)], "image": img}
    ok, why, _ = bench.judge(far, base, 1.0, 30.0)
    assert not ok and "1.50 px" in why
    blurred = {"points": base["points"], "image": img + 0.2}  # 20 dB
    ok, why, figures = bench.judge(blurred, base, 1.0, 30.0)
    assert not ok and "dB" in why and figures["psnr_db"] == pytest.approx(20.0, abs=0.1)
    broken = {"points": base["points"], "image": img * float("nan")}
    ok, why, _ = bench.judge(broken, base, 1.0, 30.0)
    assert not ok and "non-finite" in why


def test_precision_restores_the_tf32_flags(bench: ModuleType) -> None:
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with bench.precision("tf32", "cpu"):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    with bench.precision("fp32", "cpu"):
        assert not torch.backends.cudnn.allow_tf32
    with bench.precision("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu")
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
