"""The installer's plug-in half in a temporary HOME: GIMP folders per platform, the folder/file
name rule, exec bits, idempotence, --dry-run and --uninstall (install.sh, the real command)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SH = ROOT / "installer" / "install.sh"
sys.path.insert(0, str(ROOT / "installer"))

import gimp_dirs  # noqa: E402
import plugin_files  # noqa: E402

from gimp_draggan_plugin import models  # noqa: E402

MODULES = sorted(
    p.name for p in (ROOT / "gimp_plugin").glob("*.py") if p.name != plugin_files.ENTRY
)


def run_installer(home: Path, *args: str, extra_env: dict[str, str] | None = None):
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"}
    env.update(extra_env or {})
    return subprocess.run(
        [str(INSTALL_SH), *args], env=env, capture_output=True, text=True, timeout=300
    )


def assert_installed(plugins: Path) -> None:
    folder = plugins / "gimp-draggan"
    entry = folder / "gimp-draggan.py"
    assert entry.is_file(), f"no {entry}"
    assert entry.stat().st_mode & stat.S_IXUSR, "entry file lacks the exec bit"
    text = entry.read_bytes()
    assert text.startswith(b"#!/usr/bin/env python3\n") and b"\r\n" not in text
    package = folder / "gimp_draggan_plugin"
    assert sorted(p.name for p in package.glob("*.py")) == MODULES
    assert (package / "zmtp.py").read_bytes() == (ROOT / "gimp_plugin" / "zmtp.py").read_bytes()
    help_map = (folder / "help" / "en" / "gimp-help.xml").read_text()
    assert 'id="plug-in-draggan-drag" ref="index.html"' in help_map
    assert "Paths tool" in (folder / "help" / "en" / "index.html").read_text()
    config = json.loads((folder / "gimp-draggan.json").read_text())
    assert config["address"] == "tcp://127.0.0.1:5589"


@pytest.mark.parametrize(
    ("layout", "platform"),
    [
        (".config/GIMP/3.0", None),
        (".config/GIMP/3.2", None),
        (".var/app/org.gimp.GIMP/config/GIMP/3.0", None),
        ("snap/gimp/current/.config/GIMP/3.0", None),
        ("Library/Application Support/GIMP/3.0", "macos"),
        ("AppData/Roaming/GIMP/3.0", "windows"),
    ],
)
def test_finds_and_installs_each_layout(tmp_path, layout, platform):
    version_dir = tmp_path / layout
    version_dir.mkdir(parents=True)
    args = ["--plugin-only"] + (["--platform", platform] if platform else [])
    out = run_installer(tmp_path, *args)
    assert out.returncode == 0, out.stderr
    assert_installed(version_dir / "plug-ins")


def test_every_gimp_found_at_once(tmp_path):
    native = tmp_path / ".config/GIMP/3.0"
    flatpak = tmp_path / ".var/app/org.gimp.GIMP/config/GIMP/3.0"
    native.mkdir(parents=True)
    flatpak.mkdir(parents=True)
    found = gimp_dirs.find({"HOME": str(tmp_path)}, "linux")
    assert [(d.kind, d.plugins) for d in found] == [
        ("native", native / "plug-ins"),
        ("flatpak", flatpak / "plug-ins"),
    ]
    out = run_installer(tmp_path, "--plugin-only")
    assert out.returncode == 0, out.stderr
    assert_installed(native / "plug-ins")
    assert_installed(flatpak / "plug-ins")


def test_windows_appdata_wins(tmp_path):
    appdata = tmp_path / "Roaming"
    (appdata / "GIMP" / "3.0").mkdir(parents=True)
    found = gimp_dirs.find({"APPDATA": str(appdata), "USERPROFILE": str(tmp_path)}, "windows")
    assert [d.plugins for d in found] == [appdata / "GIMP" / "3.0" / "plug-ins"]


def test_no_gimp_found_says_what_to_do(tmp_path):
    out = run_installer(tmp_path, "--plugin-only")
    assert out.returncode == 1
    assert "no GIMP 3 settings folder found" in out.stderr
    assert ".config/GIMP/3.0" in out.stderr and "--gimp-dir" in out.stderr


def test_gimp_dir_idempotent_update_and_uninstall(tmp_path):
    plugins = tmp_path / "custom" / "plug-ins"
    out = run_installer(tmp_path, "--plugin-only", "--gimp-dir", str(plugins))
    assert out.returncode == 0, out.stderr
    assert_installed(plugins)
    again = run_installer(tmp_path, "--plugin-only", "--gimp-dir", str(plugins))
    assert again.returncode == 0 and "Done: 0 change(s)" in again.stdout
    # a stale module from an older version is removed; a damaged file is rewritten
    package = plugins / "gimp-draggan" / "gimp_draggan_plugin"
    (package / "old_module.py").write_text("x = 1\n")
    (package / "zmtp.py").write_text("broken\n")
    (plugins / "gimp-draggan" / "gimp-draggan.py").chmod(0o644)
    fixed = run_installer(tmp_path, "--plugin-only", "--gimp-dir", str(plugins))
    assert fixed.returncode == 0, fixed.stderr
    assert not (package / "old_module.py").exists()
    assert_installed(plugins)
    gone = run_installer(tmp_path, "--uninstall", "--gimp-dir", str(plugins))
    assert gone.returncode == 0, gone.stderr
    assert not (plugins / "gimp-draggan").exists()
    assert plugins.is_dir()  # GIMP's own folder stays


def test_dry_run_changes_nothing(tmp_path):
    plugins = tmp_path / "plug-ins"
    out = run_installer(tmp_path, "--plugin-only", "--dry-run", "--gimp-dir", str(plugins))
    assert out.returncode == 0, out.stderr
    assert "would create" in out.stdout and "gimp-draggan.py" in out.stdout
    assert not plugins.exists()
    assert not (tmp_path / ".local").exists()


def test_uninstall_dry_run_keeps_files(tmp_path):
    plugins = tmp_path / "plug-ins"
    assert run_installer(tmp_path, "--plugin-only", "--gimp-dir", str(plugins)).returncode == 0
    out = run_installer(tmp_path, "--uninstall", "--dry-run", "--gimp-dir", str(plugins))
    assert out.returncode == 0 and "would remove" in out.stdout
    assert_installed(plugins)


def test_folder_in_the_way(tmp_path):
    plugins = tmp_path / "plug-ins"
    plugins.mkdir()
    (plugins / "gimp-draggan").write_text("not a folder")
    out = run_installer(tmp_path, "--plugin-only", "--gimp-dir", str(plugins))
    assert out.returncode == 1 and "is not a folder" in out.stderr


def test_installed_plugin_imports_its_package(tmp_path):
    """The installed copy finds its helper modules beside the entry file (no project on
    sys.path, no pyzmq): what GIMP's bare Python will do."""
    plugins = tmp_path / "plug-ins"
    assert run_installer(tmp_path, "--plugin-only", "--gimp-dir", str(plugins)).returncode == 0
    folder = plugins / "gimp-draggan"
    code = (
        "import sys; sys.modules['zmq'] = None; sys.path.insert(0, sys.argv[1]); "
        "import gimp_draggan_plugin.flow as f, gimp_draggan_plugin.transport as t; "
        "assert f.__file__.startswith(sys.argv[1]), f.__file__; "
        "assert not t.have_pyzmq(); print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code, str(folder)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_model_dropdown_table_from_the_daemons_models(tmp_path):
    """The installer writes the Model dropdown's table beside the plug-in from the daemon's
    `models list --json` (here a stand-in `gimp-draggan` on PATH); the plug-in reads it back."""
    rows = [
        {"name": "lpips-vgg16", "kind": "lpips-backbone", "cached": True},
        {
            "name": "stylegan2-ffhq-512x512",
            "kind": "generator",
            "resolution": 512,
            "domain": "human faces",
            "licence": "NVIDIA Source Code License (non-commercial)",
            "licence_short": "NVIDIA, non-commercial",
            "download_bytes": 364_000_000,
            "downloadable": True,
            "cached": False,
        },
        {"name": "embedded", "kind": "generator", "resolution": 64, "cached": True},
    ]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "gimp-draggan"
    fake.write_text(
        "#!/bin/sh\n"
        '[ "$1 $2 $3" = "models list --json" ] || exit 3\n'
        f"cat <<'END'\n{json.dumps({'models': rows})}\nEND\n"
    )
    fake.chmod(0o755)
    plugins = tmp_path / "plug-ins"
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    out = run_installer(
        tmp_path, "--plugin-only", "--gimp-dir", str(plugins), extra_env={"PATH": path}
    )
    assert out.returncode == 0, out.stderr
    folder = plugins / "gimp-draggan"
    found = models.read_table(folder)
    assert [m.name for m in found] == ["stylegan2-ffhq-512x512", "embedded"]
    labels = [c.label for c in models.choices(found)]
    assert labels == [
        "The daemon's default",
        "embedded \u2014 64 px",
        "stylegan2-ffhq-512x512 \u2014 download (364 MB) \u00b7 512 px human faces "
        "(NVIDIA, non-commercial)",
    ]
    assert json.loads((folder / "gimp-draggan.json").read_text())["serve_command"] == [
        str(fake),
        "serve",
    ]
