"""`gimp-draggan doctor` on installs the tests build in a temporary HOME: a good one, and the
broken ones users meet (no exec bit, wrong folder name, loose file, GIMP not restarted),
each reported with the right fix. The daemon check talks to a real daemon on 127.0.0.1."""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from gimp_draggan.doctor import gimp as doctor_gimp
from gimp_draggan.doctor import host as doctor_host
from gimp_draggan.doctor import report as doctor
from gimp_draggan.doctor.base import Check, Context
from gimp_draggan_plugin import protocol

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "installer"))

import daemon_env  # noqa: E402
import gimp_dirs  # noqa: E402
import plugin_config  # noqa: E402
import plugin_files  # noqa: E402
from actions import Actions  # noqa: E402


def make_ctx(home: Path, **kw: Any) -> Context:
    env = {"HOME": str(home), "PATH": str(home / "bin")}
    return Context(
        env=env, platform="linux", sysroot=home / "sysroot", ask_gimp=False, timeout_s=20.0, **kw
    )


def install_plugin(home: Path) -> Path:
    """The plug-in, installed by the installer's own code into ~/.config/GIMP/3.0/plug-ins."""
    plugins = home / ".config/GIMP/3.0/plug-ins"
    plugins.mkdir(parents=True)
    quiet = Actions(say=lambda s: None)
    plug = plugin_files.install(quiet, ROOT / "gimp_plugin", plugins)
    plugin_config.write_config(quiet, plug, plugin_config.PluginConfig("tcp://127.0.0.1:5589"))
    return plugins


def rows(checks: list[Check], name: str) -> list[Check]:
    return [c for c in checks if c.name == name]


def test_layout_matches_the_installer(tmp_path: Path) -> None:
    assert (
        doctor_gimp.PLUGIN_NAME,
        doctor_gimp.ENTRY,
        doctor_gimp.PACKAGE,
        doctor_gimp.SHEBANG,
    ) == (plugin_files.NAME, plugin_files.ENTRY, plugin_files.PACKAGE, plugin_files.SHEBANG)
    assert doctor_gimp.CONFIG_NAME == plugin_config.CONFIG_NAME
    assert doctor_gimp.VERSIONS == gimp_dirs.LAYOUT.VERSIONS
    env = {
        "HOME": str(tmp_path),
        "APPDATA": str(tmp_path / "roaming"),
        "USERPROFILE": str(tmp_path),
        "LOCALAPPDATA": str(tmp_path / "local"),
    }
    for platform in ("linux", "macos", "windows"):
        ctx = Context(env=env, platform=platform)
        assert doctor_gimp.config_roots(ctx) == gimp_dirs.config_roots(env, platform)
        assert doctor_host.data_dir(ctx) == daemon_env.data_dir(env, platform)


def test_good_install_is_reported_ok(tmp_path: Path) -> None:
    plugins = install_plugin(tmp_path)
    checks = doctor_gimp.gimp_checks(make_ctx(tmp_path))
    plugin = rows(checks, "plugin")
    assert [c.status for c in plugin] == ["ok"], plugin
    transport = rows(checks, "transport")
    assert [c.status for c in transport] == ["ok"] and "no pyzmq needed" in transport[0].detail
    assert rows(checks, "config")[0].status == "ok"
    assert rows(checks, "gimp")[0].status == "ok"  # GIMP 3's settings folder exists
    # GIMP has not started since: no pluginrc yet -> restart it.
    registered = rows(checks, "registered")[0]
    assert registered.status == "warn" and "restart GIMP" in registered.fix
    rc = plugins.parent / "pluginrc"
    rc.write_text(f'(plug-in-def "x"\n    (proc-def "{doctor_gimp.PROCEDURE}" 1\n')
    assert rows(doctor_gimp.gimp_checks(make_ctx(tmp_path)), "registered")[0].status == "ok"


def test_missing_exec_bit_says_chmod(tmp_path: Path) -> None:
    plugins = install_plugin(tmp_path)
    entry = plugins / "gimp-draggan/gimp-draggan.py"
    entry.chmod(0o644)
    [row] = rows(doctor_gimp.gimp_checks(make_ctx(tmp_path)), "plugin")
    assert row.status == "fail" and "not executable" in row.detail
    assert row.fix.startswith(f"chmod +x '{entry}'")


def test_wrong_folder_name_says_rename(tmp_path: Path) -> None:
    plugins = install_plugin(tmp_path)
    (plugins / "gimp-draggan").rename(plugins / "gimp-draggan-main")
    [row] = rows(doctor_gimp.gimp_checks(make_ctx(tmp_path)), "plugin")
    assert row.status == "fail" and "do not share a name" in row.detail
    assert (
        f"rename the folder {plugins / 'gimp-draggan-main'} to {plugins / 'gimp-draggan'}"
        in row.fix
    )


def test_loose_file_and_missing_plugin(tmp_path: Path) -> None:
    plugins = install_plugin(tmp_path)
    entry = plugins / "gimp-draggan/gimp-draggan.py"
    entry.rename(plugins / "gimp-draggan.py")
    (plugins / "gimp-draggan").rename(plugins / "elsewhere-lib")
    loose = [
        r
        for r in rows(doctor_gimp.gimp_checks(make_ctx(tmp_path)), "plugin")
        if "loose" in r.detail
    ]
    assert loose and loose[0].status == "fail" and "gimp-draggan/gimp-draggan.py" in loose[0].fix
    (plugins / "gimp-draggan.py").unlink()
    [row] = rows(doctor_gimp.gimp_checks(make_ctx(tmp_path)), "plugin")
    assert row.status == "fail" and row.detail.startswith("plug-in not installed")
    assert "install.sh" in row.fix


def test_registered_check_tells_restart_from_load_failure(tmp_path: Path) -> None:
    plugins = install_plugin(tmp_path)
    rc = plugins.parent / "pluginrc"
    rc.write_text('(plug-in-def "other")\n')
    entry = plugins / "gimp-draggan/gimp-draggan.py"
    os.utime(rc, (entry.stat().st_mtime - 100,) * 2)  # GIMP ran before the install
    row = doctor_gimp.check_registered(plugins.parent, "native 3.0")
    assert row.status == "warn" and "restart GIMP" in row.fix
    os.utime(rc, (entry.stat().st_mtime + 100,) * 2)  # GIMP ran after it, still no procedure
    row = doctor_gimp.check_registered(plugins.parent, "native 3.0")
    assert row.status == "fail" and "--verbose" in row.fix


def fake_console(home: Path, body: str) -> tuple[str, ...]:
    tool = home / "bin" / "gimp-console-3.0"
    tool.parent.mkdir(exist_ok=True)
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(0o755)
    return (str(tool),)


def test_ask_gimp_reads_the_pdb_answer(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    assert doctor_gimp.ask_gimp(ctx) == []  # no GIMP console anywhere
    fake_console(
        tmp_path,
        'echo "DRAGGAN-DOCTOR True"; '
        f'echo "DRAGGAN-DOCTOR-TRANSPORT {protocol.PROTOCOL_VERSION} False 3.12.1"',
    )
    pdb, python = doctor_gimp.ask_gimp(make_ctx(tmp_path))
    assert (pdb.name, pdb.status) == ("gimp-pdb", "ok")
    assert python.status == "ok" and "3.12.1" in python.detail and "no pyzmq" in python.detail
    fake_console(
        tmp_path,
        'echo "DRAGGAN-DOCTOR False"; echo "DRAGGAN-DOCTOR-TRANSPORT-ERROR ImportError(\'zmtp\')"',
    )
    pdb, python = doctor_gimp.ask_gimp(make_ctx(tmp_path))
    assert pdb.status == "fail" and "install.sh" in pdb.fix
    assert python.status == "fail" and "zmtp" in python.detail
    slow = fake_console(tmp_path, "sleep 30")
    ctx = Context(env=ctx.env, platform="linux", gimp_console=slow, timeout_s=0.5)
    [row] = doctor_gimp.ask_gimp(ctx)
    assert row.status == "info" and "did not answer" in row.detail


def test_old_gimp_only_is_a_failure(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "gimp"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "GNU Image Manipulation Program version 2.10.34"\n')
    fake.chmod(0o755)
    row = doctor_gimp.check_gimp(make_ctx(tmp_path))
    assert row.status == "fail" and "older GIMP" in row.detail and "2.10.34" in row.detail
    assert "gimp.org" in row.fix


class HelloOnly:
    """Just enough of an executor for `hello`."""

    def info(self) -> dict[str, Any]:
        return {"device": "cpu", "default_model": "embedded", "models": []}


def test_daemon_check_against_a_real_daemon(tmp_path: Path) -> None:
    from gimp_draggan.service.server import Server, ServerConfig

    record = {"serve_command": ["/venv/bin/python", "-m", "gimp_draggan", "serve"]}
    down = doctor_host.check_daemon("tcp://127.0.0.1:9", record)
    assert down.status == "fail" and "/venv/bin/python -m gimp_draggan serve" in down.fix
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*"), HelloOnly())  # type: ignore[arg-type]
    address = server.start()
    try:
        row = doctor_host.check_daemon(address, record)
    finally:
        server.stop()
    assert row.status == "ok", row
    assert f"protocol {protocol.PROTOCOL_VERSION}" in row.detail and "device cpu" in row.detail


def test_corrupt_download_is_a_failure(tmp_path: Path) -> None:
    from gimp_draggan.models import registry

    entry = next(e for e in registry.load_table().values() if e.sha256 and e.urls)
    path = tmp_path / "models" / entry.filename
    path.parent.mkdir()
    path.write_bytes(b"not the model")
    bad = [
        r
        for r in doctor_host.check_models(str(tmp_path))
        if entry.name in r.detail and r.status == "fail"
    ]
    assert bad and f"delete {path}" in bad[0].fix
    assert f"models download {entry.name}" in bad[0].fix


def test_face_detector_check_runs_it_and_names_the_fix(tmp_path: Path, monkeypatch) -> None:
    from gimp_draggan.faces import blazeface

    assert doctor_host.check_faces().status == "ok"
    monkeypatch.setattr(blazeface, "_ASSETS", tmp_path)  # the shipped files are gone
    blazeface.network.cache_clear()
    try:
        row = doctor_host.check_faces()
    finally:
        monkeypatch.undo()
        blazeface.network.cache_clear()
    assert row.status == "fail" and "face_detection" in row.detail
    assert "re-install gimp-draggan" in row.fix


def test_bundle_holds_report_logs_and_no_secret(tmp_path: Path, monkeypatch) -> None:
    plugins = install_plugin(tmp_path)
    secret = "S" * 40
    config = plugin_config.PluginConfig("tcp://gpu:5589", (), "P" * 40, secret, "Q" * 40)
    plugin_config.write_config(Actions(say=lambda s: None), plugins / "gimp-draggan", config)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "serve.log").write_text("daemon started\n")
    monkeypatch.setenv("GIMP_DRAGGAN_LOG_DIR", str(logs))
    checks = [Check("disk", "ok", "fine"), Check("daemon", "fail", "down", "start it")]
    path = doctor.write_bundle(tmp_path / "out/bundle.zip", checks, make_ctx(tmp_path))
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        assert {"report.txt", "report.json", "logs/serve.log", "plugin-config-0.json"} <= names
        assert json.loads(z.read("report.json"))["ok"] is False
        assert secret not in z.read("plugin-config-0.json").decode()
        assert b"daemon started" in z.read("logs/serve.log")


def test_cli_json_exit_code(tmp_path: Path, monkeypatch, capsys) -> None:
    from gimp_draggan.cli import main

    install_plugin(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("GIMP_DRAGGAN_CACHE", str(tmp_path / "cache"))
    code = main(["doctor", "--json", "--no-gimp-query", "--daemon", "tcp://127.0.0.1:9"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["ok"] is False  # no daemon listens on port 9
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["plugin"] == "ok" and statuses["daemon"] == "fail"
    assert all(c["fix"] for c in report["checks"] if c["status"] in ("warn", "fail"))


@pytest.mark.parametrize("status", ["warn", "fail"])
def test_problem_rows_need_a_fix(status: str) -> None:
    with pytest.raises(ValueError, match="needs a fix"):
        Check("x", status, "broken")


def test_flatpak_gimp_without_service_is_warned(tmp_path: Path) -> None:
    plugins = tmp_path / ".var/app/org.gimp.GIMP/config/GIMP/3.0/plug-ins"
    plugins.mkdir(parents=True)
    plugin_files.install(Actions(say=lambda s: None), ROOT / "gimp_plugin", plugins)
    folders = doctor_gimp.plugin_folders(make_ctx(tmp_path))
    [row] = doctor.sandbox_service(folders, {})
    assert row.status == "warn" and "--service" in row.fix
    [row] = doctor.sandbox_service(folders, {"service_files": ["/u/gimp-draggan.service"]})
    assert row.status == "ok"
    assert doctor.sandbox_service(doctor_gimp.plugin_folders(make_ctx(tmp_path / "x")), {}) == []
