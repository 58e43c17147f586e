"""Command line on top of the service: `drag --daemon` equals in-process, ping, serve, keys."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from service_helpers import pipeline_daemon, read_pixels, single_torch_thread

from gimp_draggan.cli import main
from gimp_draggan_plugin import protocol as P

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    yield from single_torch_thread()


@pytest.fixture(scope="module")
def daemon(tiny):
    for server, _ in pipeline_daemon(tiny):
        yield server.address


@pytest.mark.parametrize("with_mask", [False, True])
def test_seed_drag_with_daemon_writes_the_same_image(tiny, daemon, tmp_path, capsys, with_mask):
    args = [
        "drag",
        "--model",
        str(tiny),
        "--seed",
        "9",
        "-p",
        "10,12:17,12",
        "-p",
        "20,20:20,26",
        "--steps",
        "5",
        "--json",
    ]
    if with_mask:
        mask = np.zeros((32, 32), np.uint8)
        mask[4:28, 6:30] = 255
        Image.fromarray(mask).save(tmp_path / "mask.png")
        args += ["--mask", str(tmp_path / "mask.png")]
    assert main([*args, "-o", str(tmp_path / "local.png")]) == 0
    local_out = capsys.readouterr().out
    assert main([*args, "--daemon", daemon, "-o", str(tmp_path / "remote.png")]) == 0
    remote_out = capsys.readouterr().out
    assert np.array_equal(read_pixels(tmp_path / "local.png"), read_pixels(tmp_path / "remote.png"))
    import json

    local, remote = json.loads(local_out.splitlines()[-1]), json.loads(remote_out.splitlines()[-1])
    assert local["points"] == remote["points"] and local["steps"] == remote["steps"]
    assert remote["daemon"] == daemon and remote["device"] == "cpu"
    assert "drag    1/5" in remote_out  # Progress printed as it streams.


def test_drag_daemon_not_running_says_how_to_start_it(tiny, tmp_path, capsys):
    addr = "tcp://127.0.0.1:1"
    code = main(
        [
            "drag",
            "--model",
            "tiny",
            "--seed",
            "1",
            "-p",
            "1,1:5,5",
            "--daemon",
            addr,
            "-o",
            str(tmp_path / "x.png"),
        ]
    )
    assert code == 1
    assert f"daemon not running at {addr}" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_ping(daemon, capsys):
    assert main(["ping", "--daemon", daemon]) == 0
    out = capsys.readouterr().out
    assert f"protocol {P.PROTOCOL_VERSION}" in out and "device cpu" in out and "tiny" in out
    assert main(["ping", "--daemon", "tcp://127.0.0.1:1"]) == 1
    assert "gimp-draggan serve" in capsys.readouterr().err


def test_keys_command_writes_a_usable_key_dir(tmp_path, capsys):
    assert main(["keys", "--dir", str(tmp_path / "k")]) == 0
    assert (tmp_path / "k" / "allowed_clients" / "client.key").is_file()
    assert main(["keys", "--dir", str(tmp_path / "k")]) == 1  # Never overwrites silently.
    assert "--force" in capsys.readouterr().err


@pytest.fixture
def restore_logging():
    """`serve` sets up the daemon's logging; put the test process's back afterwards."""
    import logging

    logger = logging.getLogger("gimp_draggan")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    for handler in saved[0]:
        logger.addHandler(handler)
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.mark.usefixtures("restore_logging")
def test_serve_refuses_a_network_address_without_keys(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GIMP_DRAGGAN_KEYS", str(tmp_path / "none"))
    monkeypatch.setenv("GIMP_DRAGGAN_LOG_DIR", str(tmp_path / "log"))
    assert main(["serve", "--bind", "tcp://0.0.0.0:5599", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "refusing to listen on tcp://0.0.0.0:5599" in err and "gimp-draggan keys" in err
