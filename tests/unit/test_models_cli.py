"""`gimp-draggan models ...` end to end: real files, a real HTTP server, the real CLI."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from stylegan_pickle_maker import randomize_, stylegan3_kwargs, write_network_pickle

from gimp_draggan.cli import main
from gimp_draggan.draggan.networks import Generator, GeneratorConfig, seed_to_z, to_uint8
from gimp_draggan.models import registry

CFG = GeneratorConfig(
    img_resolution=32, z_dim=32, w_dim=32, channel_base=256, channel_max=32, mapping_layers=2
)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Generator, bytes]:
    """A generator and its NVIDIA-style pickle bytes."""
    torch.manual_seed(1)
    G = randomize_(Generator(CFG).eval().requires_grad_(False), seed=1)
    tmp = tmp_path_factory.mktemp("src")
    path = write_network_pickle(tmp / "net.pkl", G, stylegan3_kwargs(CFG), tmp / "marker")
    return G, path.read_bytes()


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_list_shows_table_and_cache_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = _run(["models", "list", "--cache-dir", str(tmp_path)], capsys)
    assert rc == 0
    assert "stylegan2-ffhq-512x512" in out and "d2b1c92f41ce8a64" in out and "lpips-vgg16" in out
    line = next(s for s in out.splitlines() if s.startswith("stylegan2-ffhq-512x512"))
    assert line.split()[1] == "512" and " no " in line
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "stylegan2-ffhq-512x512.pkl").write_bytes(b"\x80\x04N.")
    (tmp_path / "models" / "stylegan2_lions_512_pytorch.pkl").write_bytes(b"x")
    rc, out, _ = _run(["models", "list", "--cache-dir", str(tmp_path), "--json"], capsys)
    rows = {r["name"]: r for r in json.loads(out)["models"]}
    assert rows["stylegan2-ffhq-512x512"]["cached"] is True
    assert rows["stylegan2-lions-512"]["cached"] is False  # Garbage is damaged, not cached.
    assert "models download stylegan2-lions-512" in rows["stylegan2-lions-512"]["damaged"]
    assert rows["stylegan2-afhqcat-512x512"]["cached"] is False


def test_console_script_lists_models(tmp_path: Path) -> None:
    env = {**os.environ, registry.CACHE_ENV: str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "gimp_draggan", "models", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert str(tmp_path) in proc.stdout and "stylegan2-afhqcat-512x512" in proc.stdout


def test_convert_info_render(
    tmp_path: Path, source: tuple[Generator, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    G, data = source
    pkl = tmp_path / "net.pkl"
    pkl.write_bytes(data)
    out = tmp_path / "conv" / "net.safetensors"
    rc, _, err = _run(["models", "convert", str(pkl), str(out)], capsys)
    assert rc == 0, err
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["provenance"]["source_sha256"] == hashlib.sha256(data).hexdigest()

    for model in (pkl, out):
        rc, text, err = _run(["models", "info", str(model)], capsys)
        assert rc == 0, err
        info = json.loads(text)
        assert info["resolution"] == 32 and info["num_ws"] == G.num_ws == 8
        assert info["z_dim"] == info["w_dim"] == 32 and info["mapping_layers"] == 2
        assert info["channel_base"] == 256 and info["channel_max"] == 32

    with torch.no_grad():
        want = to_uint8(G(seed_to_z(3, 32), truncation_psi=0.7, noise_mode="const"))[0].numpy()
    for model in (pkl, out):
        png = tmp_path / f"{model.suffix[1:]}.png"
        argv = [
            "models",
            "render",
            str(model),
            "--seed",
            "3",
            "--trunc",
            "0.7",
            "--noise-mode",
            "const",
            "--device",
            "cpu",
            "-o",
            str(png),
        ]
        rc, _, err = _run(argv, capsys)
        assert rc == 0, err
        assert np.array_equal(np.asarray(Image.open(png)), want)


def _evil(marker: Path) -> bytes:
    class Evil:
        def __reduce__(self) -> tuple[object, ...]:
            return (os.system, (f"touch {marker}",))

    return pickle.dumps({"G_ema": Evil()})


@pytest.mark.parametrize("action", ["convert", "info", "render"])
def test_unsafe_or_damaged_files_exit_nonzero_and_write_nothing(
    tmp_path: Path,
    source: tuple[Generator, bytes],
    capsys: pytest.CaptureFixture[str],
    action: str,
) -> None:
    marker = tmp_path / "PWNED"
    cases = {"evil": _evil(marker), "truncated": source[1][:5000], "empty": b""}
    for kind, content in cases.items():
        src = tmp_path / f"{kind}.pkl"
        src.write_bytes(content)
        dst = tmp_path / f"{kind}-out"
        argv = {
            "convert": ["models", "convert", str(src), f"{dst}.safetensors"],
            "info": ["models", "info", str(src)],
            "render": ["models", "render", str(src), "--seed", "1", "-o", f"{dst}.png"],
        }[action]
        rc, out, err = _run(argv, capsys)
        assert rc != 0, kind
        assert err.startswith("error: ") and "Traceback" not in err, err
        expect = {
            "evil": "not a trusted StyleGAN checkpoint",
            "truncated": "truncated",
            "empty": "empty",
        }[kind]
        assert expect in err
        assert list(tmp_path.glob(f"{kind}-out*")) == [] and out == ""
    assert not marker.exists()


class _FileHandler(http.server.BaseHTTPRequestHandler):
    body = b""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


@pytest.fixture()
def served_model(
    source: tuple[Generator, bytes], monkeypatch: pytest.MonkeyPatch
) -> Iterator[registry.ModelEntry]:
    """A registry entry for the test pickle, served over HTTP on 127.0.0.1."""
    _FileHandler.body = source[1]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FileHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    entry = registry.ModelEntry(
        name="tiny-test",
        kind="generator",
        description="test",
        domain="test",
        resolution=32,
        num_ws=8,
        format="stylegan2-pkl",
        filename="tiny.pkl",
        urls=(f"http://127.0.0.1:{srv.server_address[1]}/tiny.pkl",),
        size_bytes=len(source[1]),
        sha256=hashlib.sha256(source[1]).hexdigest(),
        sha256_source="the test",
        licence="test",
    )
    table = {**registry.load_table(), "tiny-test": entry}
    monkeypatch.setattr(registry, "load_table", lambda path=None: table)
    yield entry
    srv.shutdown()
    srv.server_close()


def test_download_verify_and_use_by_name(
    tmp_path: Path, served_model: registry.ModelEntry, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = ["--cache-dir", str(tmp_path)]
    rc, _, err = _run(
        ["models", "render", "tiny-test", "--seed", "0", "-o", str(tmp_path / "x.png"), *cache],
        capsys,
    )
    assert rc == 1 and "gimp-draggan models download tiny-test" in err
    rc, out, err = _run(["models", "download", "tiny-test", *cache], capsys)
    assert rc == 0, err
    assert "tiny.pkl" in err  # the progress bar goes to stderr
    path = tmp_path / "models" / "tiny.pkl"
    assert path.is_file()
    rc, out, _ = _run(["models", "verify", "tiny-test", *cache], capsys)
    assert rc == 0 and out.startswith("ok ")
    rc, out, err = _run(["models", "info", "tiny-test", *cache], capsys)
    assert rc == 0 and json.loads(out)["num_ws"] == 8
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    rc, out, _ = _run(["models", "verify", *cache], capsys)
    assert rc == 1 and "BAD  tiny-test" in out and "sha256" in out


def test_download_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(["models", "download", "stylegan9", "--cache-dir", str(tmp_path)], capsys)
    assert rc == 1 and "unknown model" in err
    rc, _, err = _run(
        ["models", "download", "stylegan-human-v2-512", "--cache-dir", str(tmp_path)], capsys
    )
    assert rc == 1 and "by hand" in err and "drive.google.com" in err
