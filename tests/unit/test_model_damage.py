"""A damaged model is never offered as cached, and a job on it fails with `model_damaged` and the
fix, not with `bad_request` (issue 21)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from service_helpers import TINY, save_tiny_model

from gimp_draggan.cli import main
from gimp_draggan.models import modelcheck, registry
from gimp_draggan.service.executor import PipelineExecutor
from gimp_draggan.service.server import Server, ServerConfig
from gimp_draggan_plugin import protocol as P
from gimp_draggan_plugin.client import Client, DaemonError
from gimp_draggan_plugin.protocol import JobRequest, Params


def _table(tmp_path: Path, model: Path) -> Path:
    """A model table with one downloadable entry whose cached file is `model`'s copy."""
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    for suffix in (".safetensors", ".json"):
        shutil.copy(model.with_suffix(suffix), cache / "models" / f"m{suffix}")
    table = tmp_path / "models.json"
    table.write_text(
        json.dumps(
            {
                "format": "gimp-draggan-models",
                "models": [
                    {
                        "name": "m",
                        "kind": "generator",
                        "filename": "m.safetensors",
                        "licence": "test",
                        "format": "gimp-draggan",
                        "resolution": TINY["img_resolution"],
                        "urls": ["http://127.0.0.1:9/m.safetensors"],
                    }
                ],
            }
        )
    )
    return table


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_the_look_tells_whole_files_from_damaged_ones(tiny: Path, tmp_path: Path) -> None:
    assert modelcheck.problem(tiny) is None
    copy = tmp_path / "t.safetensors"
    shutil.copy(tiny, copy)
    shutil.copy(tiny.with_suffix(".json"), tmp_path / "t.json")
    _truncate(copy)
    assert "truncated" in (modelcheck.problem(copy) or "")
    copy.write_bytes(b"garbage " * 100)
    assert modelcheck.problem(copy) is not None
    pickle = tmp_path / "g.pkl"
    pickle.write_bytes(b"\x80\x04\x95" + b"\0" * 50)
    assert "truncated pickle" in (modelcheck.problem(pickle) or "")
    pickle.write_bytes(b"\x80\x04N.")
    assert modelcheck.problem(pickle) is None
    assert modelcheck.problem(tmp_path / "absent.pkl") is None
    assert "pins 3" in (modelcheck.problem(tiny, pinned_size=3) or "")


def test_a_truncated_model_in_the_cache_is_not_cached(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    table = _table(tmp_path, tiny)
    executor = PipelineExecutor("cpu", cache=str(tmp_path / "cache"), table=str(table))
    assert executor.models()[0]["cached"] is True
    cached = tmp_path / "cache" / "models" / "m.safetensors"
    _truncate(cached)
    row = executor.models()[0]
    assert row["cached"] is False
    assert (
        f"delete {cached} and download it again: gimp-draggan models download m" in row["damaged"]
    )
    with pytest.raises(P.ProtocolError) as refused:
        executor.check_model("m")
    assert refused.value.code == "model_damaged"
    # The command line's list says so too (the packaged table, this cache).
    monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path / "own-cache"))
    embedded = registry.model_path(registry.get_entry("embedded"))
    broken = tmp_path / "own-cache" / "models" / "stylegan2-ffhq-512x512.pkl"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\x80\x04" + b"x" * 1000)
    assert embedded.is_file()
    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows["stylegan2-ffhq-512x512"]["cached"] is False
    assert "models download stylegan2-ffhq-512x512" in rows["stylegan2-ffhq-512x512"]["damaged"]
    assert rows["embedded"]["cached"] is True
    assert not registry.is_cached("stylegan2-ffhq-512x512")


def test_a_model_that_fails_to_load_fails_its_job_as_damaged(
    tmp_path: Path, one_torch_thread: None
) -> None:
    """Whole by the look (sizes agree) but not loadable: the config names another network."""
    model = save_tiny_model(tmp_path / "a")
    other = save_tiny_model(tmp_path / "b")
    doc = json.loads(other.with_suffix(".json").read_text())
    doc["config"]["w_dim"] = 64
    doc["config"]["z_dim"] = 64
    model.with_suffix(".json").write_text(json.dumps(doc))
    assert modelcheck.problem(model) is None
    server = Server(
        ServerConfig(bind="tcp://127.0.0.1:*"), PipelineExecutor("cpu", files={"tiny": model})
    )
    server.start()
    try:
        with Client(server.address) as client:
            # (Whether the first hello still calls it cached depends on whether the worker's
            # warm-up load has run yet: not asserted.)
            with pytest.raises(DaemonError) as failed:
                client.drag(
                    JobRequest.seeded(seed=1, pairs=[((4, 4), (6, 6))], params=Params(steps=1))
                )
            assert failed.value.code == "model_damaged"
            assert f"delete {model}" in failed.value.message
            row = client.hello()["models"][0]
            assert row["cached"] is False and "damaged" in row["damaged"]
            with pytest.raises(DaemonError) as again:
                client.drag(
                    JobRequest.seeded(seed=1, pairs=[((4, 4), (6, 6))], params=Params(steps=1))
                )
            assert again.value.code == "model_damaged"
    finally:
        server.stop()


def test_serve_refuses_a_damaged_model(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GIMP_DRAGGAN_LOG_DIR", str(tmp_path / "log"))
    broken = tmp_path / "broken.safetensors"
    shutil.copy(tiny, broken)
    shutil.copy(tiny.with_suffix(".json"), tmp_path / "broken.json")
    _truncate(broken)
    assert (
        main(["serve", "--model", str(broken), "--device", "cpu", "--bind", "tcp://127.0.0.1:1"])
        == 2
    )
    err = capsys.readouterr().err
    assert f"error: model file {broken} is damaged" in err
    assert f"delete {broken}" in err and "Traceback" not in err
    assert P.ERROR_HINTS["model_damaged"]
