"""The installer's daemon half: torch choice, service files, plug-in config, venv, uninstall.

Everything goes into a temporary HOME. Service managers are not usable here, so the service test
puts recording stand-ins for systemctl on PATH and checks the calls the installer makes.
"""

from __future__ import annotations

import argparse
import json
import os
import plistlib
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "installer"))

import daemon_env  # noqa: E402
import daemon_part  # noqa: E402
import plugin_config  # noqa: E402
import service  # noqa: E402
from actions import Actions, InstallError  # noqa: E402


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plugin-only", action="store_true")
    daemon_part.add_arguments(parser)
    return parser.parse_args(list(argv))


def home_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "PATH": os.environ["PATH"]}


# ---- torch choice -------------------------------------------------------------------------------
def test_torch_choice_follows_the_hardware_and_the_overrides() -> None:
    cuda = daemon_env.choose_torch("linux", "x86_64", nvidia="/usr/bin/nvidia-smi")
    assert (cuda.kind, cuda.index_url) == ("cuda", None)
    assert "NVIDIA driver found (/usr/bin/nvidia-smi)" in cuda.line()
    win = daemon_env.choose_torch("windows", "AMD64", nvidia=r"C:\nvidia-smi.exe")
    assert win.kind == "cuda" and win.index_url == daemon_env.TORCH_INDEX_CUDA_WINDOWS
    mps = daemon_env.choose_torch("macos", "arm64")
    assert mps.kind == "mps" and "Apple silicon" in mps.line()
    assert daemon_env.choose_torch("macos", "x86_64").kind == "cpu"
    cpu = daemon_env.choose_torch("linux", "x86_64")
    assert cpu.kind == "cpu" and cpu.index_url == daemon_env.TORCH_INDEX_CPU
    assert "no NVIDIA driver" in cpu.line()
    forced = daemon_env.choose_torch("linux", "x86_64", cpu=True, nvidia="/usr/bin/nvidia-smi")
    assert forced.kind == "cpu" and "--cpu" in forced.line()
    given = daemon_env.choose_torch("linux", "x86_64", torch_spec="torch==2.13.0", nvidia="x")
    assert (given.kind, given.requirement, given.index_url) == ("given", "torch==2.13.0", None)
    with pytest.raises(ValueError, match="--torch"):
        daemon_env.choose_torch("linux", "x86_64", torch_spec="--index-url=x")


def test_nvidia_driver_is_found_by_tool_or_proc_file() -> None:
    def no_tool(_name: str) -> None:
        return None

    assert daemon_env.find_nvidia_driver("linux", no_tool, lambda p: False) is None
    proc = daemon_env.find_nvidia_driver("linux", no_tool, lambda p: p == daemon_env.NVIDIA_PROC)
    assert proc == daemon_env.NVIDIA_PROC
    assert (
        daemon_env.find_nvidia_driver("linux", lambda n: "/x/nvidia-smi", lambda p: False)
        == "/x/nvidia-smi"
    )


def test_data_dir_per_platform(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "USERPROFILE": str(tmp_path / "u")}
    assert daemon_env.data_dir(env, "linux") == tmp_path / ".local/share/gimp-draggan"
    assert daemon_env.data_dir({**env, "XDG_DATA_HOME": "/x"}, "linux") == Path("/x/gimp-draggan")
    assert (
        daemon_env.data_dir(env, "macos") == tmp_path / "Library/Application Support/gimp-draggan"
    )
    assert daemon_env.data_dir(env, "windows") == tmp_path / "u/AppData/Local/gimp-draggan"


# ---- service files ------------------------------------------------------------------------------
def test_systemd_unit_quotes_paths_with_spaces(tmp_path: Path) -> None:
    cmd = ["/home/a b/venv/bin/python", "-m", "gimp_draggan", "serve", "--bind", "tcp://*:5589"]
    plan = service.plan_service("linux", cmd, tmp_path, tmp_path / "data", {})
    assert plan.file.path == tmp_path / ".config/systemd/user/gimp-draggan.service"
    lines = plan.file.text.splitlines()
    assert (
        'ExecStart="/home/a b/venv/bin/python" -m gimp_draggan serve --bind tcp://*:5589' in lines
    )
    assert "WantedBy=default.target" in lines and "Restart=on-failure" in lines
    assert ("systemctl", "--user", "enable", "gimp-draggan.service") in plan.start
    assert service._systemd_arg("50%") == "50%%"


def test_launchd_plist_runs_the_daemon_at_login(tmp_path: Path) -> None:
    cmd = ["/Users/a/venv/bin/python", "-m", "gimp_draggan", "serve"]
    plan = service.plan_service("macos", cmd, tmp_path, tmp_path / "data", {})
    assert plan.file.path == tmp_path / "Library/LaunchAgents/org.gimp-draggan.daemon.plist"
    body = plistlib.loads(plan.file.text.encode())
    assert body["ProgramArguments"] == cmd
    assert body["RunAtLoad"] is True and body["Label"] == service.LAUNCHD_LABEL
    assert plan.start[0][:2] == ("launchctl", "bootstrap")


def test_windows_task_runs_pythonw_at_logon(tmp_path: Path) -> None:
    cmd = [r"C:\Users\a b\gimp-draggan\venv\Scripts\python.exe", "-m", "gimp_draggan", "serve"]
    env = {"USERNAME": "ann", "USERDOMAIN": "PC"}
    plan = service.plan_service("windows", cmd, tmp_path, tmp_path / "data", env)
    assert plan.file.encoding == "utf-16"
    ns = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
    root = ET.fromstring(plan.file.text.split("\n", 1)[1])
    assert (
        root.find("t:Actions/t:Exec/t:Command", ns).text
        == r"C:\Users\a b\gimp-draggan\venv\Scripts\pythonw.exe"
    )
    assert root.find("t:Actions/t:Exec/t:Arguments", ns).text == "-m gimp_draggan serve"
    assert root.find("t:Triggers/t:LogonTrigger/t:UserId", ns).text == r"PC\ann"
    assert (
        "schtasks",
        "/Create",
        "/TN",
        service.TASK_NAME,
        "/XML",
        str(plan.file.path),
        "/F",
    ) in plan.start


def fake_tool(bin_dir: Path, name: str, log: Path) -> None:
    """A stand-in for a service manager that records its arguments."""
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    tool.chmod(0o755)


def test_service_install_and_uninstall_call_systemctl(tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "calls.txt"
    fake_tool(tmp_path / "bin", "systemctl", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    plan = service.plan_service(
        "linux", ["/v/python", "-m", "gimp_draggan", "serve"], tmp_path, tmp_path / "data", {}
    )
    out: list[str] = []
    service.install_service(Actions(say=out.append), plan)
    assert plan.file.path.read_text() == plan.file.text
    assert log.read_text().splitlines() == [
        "--user daemon-reload",
        "--user enable gimp-draggan.service",
        "--user restart gimp-draggan.service",
    ]
    service.uninstall_service(Actions(say=out.append), plan)
    assert not plan.file.path.exists()
    assert log.read_text().splitlines()[3:] == [
        "--user disable --now gimp-draggan.service",
        "--user daemon-reload",
    ]


def test_service_without_its_manager_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    plan = service.plan_service("linux", ["/v/python"], tmp_path, tmp_path / "data", {})
    with pytest.raises(InstallError, match="leave out --service"):
        service.install_service(Actions(say=lambda s: None), plan)
    assert not plan.file.path.exists()


# ---- plug-in config -----------------------------------------------------------------------------
def test_plugin_config_with_curve_keys_is_private(tmp_path: Path) -> None:
    import zmq.auth

    server_pub, _ = zmq.auth.create_certificates(str(tmp_path), "server")
    _, client_secret = zmq.auth.create_certificates(str(tmp_path), "client")
    cfg = plugin_config.make_config(
        "tcp://gpu-box:5589", ["x", "serve"], Path(client_secret), Path(server_pub)
    )
    path = plugin_config.write_config(Actions(say=lambda s: None), tmp_path / "plug", cfg)
    body = json.loads(path.read_text())
    pub, sec = zmq.auth.load_certificate(client_secret)
    assert body["curve"] == {
        "public": pub.decode(),
        "secret": sec.decode(),
        "server_public": zmq.auth.load_certificate(server_pub)[0].decode(),
    }
    assert body["address"] == "tcp://gpu-box:5589" and body["serve_command"] == ["x", "serve"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(ValueError, match="go together"):
        plugin_config.make_config("tcp://h:1", (), Path(client_secret), None)
    with pytest.raises(ValueError, match="secret"):
        plugin_config.make_config("tcp://h:1", (), Path(server_pub), Path(server_pub))


# ---- whole daemon half --------------------------------------------------------------------------
def test_dry_run_prints_every_step_and_changes_nothing(tmp_path: Path, monkeypatch) -> None:
    env = home_env(tmp_path)
    plug = tmp_path / "home/.config/GIMP/3.0/plug-ins/gimp-draggan"
    out: list[str] = []
    args = parse("--service", "--torch", "torch==2.13.0")
    steps = daemon_part.install(args, [plug], Actions(dry_run=True, say=out.append), "linux", env)
    text = "\n".join(out)
    venv = tmp_path / "home/.local/share/gimp-draggan/venv"
    assert "torch: as given (torch==2.13.0) — --torch given" in text
    assert f"would run {sys.executable} -m venv {venv}" in text
    assert "pip install --disable-pip-version-check torch==2.13.0" in text
    assert f"would create {plug / 'gimp-draggan.json'}" in text
    assert "would run systemctl --user enable gimp-draggan.service" in text
    assert "starts at login" in steps[0]
    assert list((tmp_path / "home").iterdir()) == []


def test_real_install_is_idempotent_and_uninstall_removes_it(tmp_path: Path) -> None:
    env = home_env(tmp_path)
    plug = tmp_path / "home/.config/GIMP/3.0/plug-ins/gimp-draggan"
    plug.mkdir(parents=True)
    args = parse("--torch", "torch==2.13.0", "--system-site-packages")
    out: list[str] = []
    steps = daemon_part.install(args, [plug], Actions(say=out.append), "linux", env)
    data = tmp_path / "home/.local/share/gimp-draggan"
    python = data / "venv/bin/python"
    where = subprocess.run(
        [str(python), "-c", "import gimp_draggan; print(gimp_draggan.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(data / "venv")), where
    config = json.loads((plug / "gimp-draggan.json").read_text())
    assert config["address"] == "tcp://127.0.0.1:5589"
    assert config["serve_command"] == [str(python), "-m", "gimp_draggan", "serve"]
    record = daemon_env.InstallRecord.load(data / "install.json")
    assert record is not None and record.venv == str(data / "venv")
    assert any("demo" in s for s in steps)

    again: list[str] = []
    daemon_part.install(args, [plug], Actions(say=again.append), "linux", env)
    assert f"venv already at {data / 'venv'} (kept)" in again
    assert f"unchanged {plug / 'gimp-draggan.json'}" in again

    daemon_part.uninstall([plug], Actions(say=out.append), "linux", env)
    assert not (plug / "gimp-draggan.json").exists()
    assert not data.exists()


# ---- the real command, other platforms (folders laid out as there; --dry-run) --------------------
def install_sh(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", **extra}
    return subprocess.run(
        [str(ROOT / "installer/install.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_macos_service_dry_run(tmp_path: Path) -> None:
    (tmp_path / "Library/Application Support/GIMP/3.0").mkdir(parents=True)
    out = install_sh(tmp_path, "--platform", "macos", "--service", "--dry-run")
    assert out.returncode == 0, out.stderr
    agent = tmp_path / "Library/LaunchAgents/org.gimp-draggan.daemon.plist"
    venv_python = tmp_path / "Library/Application Support/gimp-draggan/venv/bin/python"
    assert f"would create {agent}" in out.stdout
    assert "would run launchctl bootstrap gui/" in out.stdout
    assert f"-m venv '{venv_python.parent.parent}'" in out.stdout
    assert "torch: " in out.stdout and "Next: The daemon starts at login" in out.stdout
    assert not (tmp_path / "Library/LaunchAgents").exists()


def test_windows_service_dry_run(tmp_path: Path) -> None:
    roaming = tmp_path / "AppData/Roaming"
    (roaming / "GIMP/3.0").mkdir(parents=True)
    out = install_sh(
        tmp_path,
        "--platform",
        "windows",
        "--service",
        "--cpu",
        "--dry-run",
        APPDATA=str(roaming),
        USERPROFILE=str(tmp_path),
        USERNAME="ann",
    )
    assert out.returncode == 0, out.stderr
    data = tmp_path / "AppData/Local/gimp-draggan"
    assert f"would create {data / 'gimp-draggan-task.xml'}" in out.stdout
    assert "would run schtasks /Create /TN 'gimp-draggan daemon' /XML" in out.stdout
    assert "torch: CPU build (torch) — --cpu given" in out.stdout
    assert "Scripts/python.exe" in out.stdout
    assert not data.exists()


def test_plugin_only_writes_config_without_venv(tmp_path: Path) -> None:
    plugins = tmp_path / ".config/GIMP/3.0/plug-ins"
    plugins.parent.mkdir(parents=True)
    out = install_sh(tmp_path, "--plugin-only", "--daemon", "tcp://gpu-box:5589")
    assert out.returncode == 0, out.stderr
    config = json.loads((plugins / "gimp-draggan/gimp-draggan.json").read_text())
    assert config["address"] == "tcp://gpu-box:5589"
    assert "torch:" not in out.stdout
    assert not (tmp_path / ".local/share/gimp-draggan/venv").exists()
    bad = install_sh(tmp_path, "--plugin-only", "--daemon", "gpu-box:5589")
    assert bad.returncode == 1 and "tcp://HOST:PORT" in bad.stderr


def test_uninstall_stops_the_service(tmp_path: Path) -> None:
    unit = tmp_path / ".config/systemd/user/gimp-draggan.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\n")
    (tmp_path / ".config/GIMP/3.0").mkdir(parents=True)
    out = install_sh(tmp_path, "--uninstall", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "would run systemctl --user disable --now gimp-draggan.service" in out.stdout
    assert f"would remove {unit}" in out.stdout and unit.exists()


def test_flatpak_gimp_gets_the_service_hint(tmp_path: Path) -> None:
    flatpak = tmp_path / "home/.var/app/org.gimp.GIMP/config/GIMP/3.0/plug-ins/gimp-draggan"
    args = parse("--torch", "torch==2.13.0")
    steps = daemon_part.install(
        args, [flatpak], Actions(dry_run=True, say=lambda s: None), "linux", home_env(tmp_path)
    )
    assert "re-run with --service" in steps[0]
    with_service = daemon_part.install(
        parse("--service"),
        [flatpak],
        Actions(dry_run=True, say=lambda s: None),
        "linux",
        home_env(tmp_path),
    )
    assert not any("--service" in s for s in with_service)


def test_windows_wrapper_runs_the_same_script() -> None:
    """install.ps1 cannot run here; check it finds Python 3.10+ and forwards every argument."""
    text = (ROOT / "installer/install.ps1").read_text()
    assert '"install.py"' in text and "$script @args" in text
    assert "sys.version_info >= (3, 10)" in text and "exit $LASTEXITCODE" in text
