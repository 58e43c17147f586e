"""The daemon's own Python: a venv in the user's data folder with the right torch build in it.

The daemon needs torch, which must never go into GIMP's Python (GIMP's bundled Pythons have no pip,
and the Flatpak's is sealed). So the installer makes a venv of its own and installs the project
there. The torch build is chosen from what the machine has — CUDA when an NVIDIA driver is present,
MPS on Apple silicon, else CPU — and said in one line; `--torch SPEC` or `--cpu` override it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from actions import Actions, python_in_venv

APP = "gimp-draggan"
RECORD_NAME = "install.json"

# PyPI's Linux torch wheels are CUDA builds; its Windows wheels are CPU-only, so CUDA on Windows
# (and the small CPU-only build on Linux) comes from PyTorch's own index.
TORCH_INDEX_CPU = "https://download.pytorch.org/whl/cpu"
TORCH_INDEX_CUDA_WINDOWS = "https://download.pytorch.org/whl/cu128"
NVIDIA_PROC = "/proc/driver/nvidia/version"


def home_dir(env: Mapping[str, str], platform: str) -> Path:
    """The user's home as the environment says (tests point HOME/USERPROFILE at a temp dir)."""
    key = "USERPROFILE" if platform == "windows" else "HOME"
    value = env.get(key) or env.get("HOME")
    if not value:
        raise ValueError(f"{key} is not set: the installer needs it to find the user's folders")
    return Path(value)


def data_dir(env: Mapping[str, str], platform: str) -> Path:
    """Where the daemon's venv and the install record live, per platform convention."""
    home = home_dir(env, platform)
    if platform == "windows":
        base = env.get("LOCALAPPDATA")
        return (Path(base) if base else home / "AppData" / "Local") / APP
    if platform == "macos":
        return home / "Library" / "Application Support" / APP
    base = env.get("XDG_DATA_HOME")
    return (Path(base) if base else home / ".local" / "share") / APP


@dataclass(frozen=True)
class TorchChoice:
    kind: str  # "cuda" | "mps" | "cpu" | "given" (--torch SPEC)
    requirement: str  # what pip installs, e.g. "torch" or "torch==2.13.0"
    index_url: str | None  # None = the user's configured index (PyPI by default)
    reason: str  # why this build, for a person

    def line(self) -> str:
        """The one line the installer prints about torch."""
        where = f" from {self.index_url}" if self.index_url else ""
        label = {
            "cuda": "CUDA build",
            "mps": "Apple MPS build",
            "cpu": "CPU build",
            "given": "as given",
        }[self.kind]
        return f"torch: {label} ({self.requirement}{where}) — {self.reason}"


def find_nvidia_driver(
    platform: str,
    which: Callable[[str], str | None] = shutil.which,
    exists: Callable[[str], bool] = os.path.exists,
) -> str | None:
    """Evidence of an NVIDIA driver (a path), or None."""
    tool = which("nvidia-smi")
    if tool:
        return tool
    if platform == "linux" and exists(NVIDIA_PROC):
        return NVIDIA_PROC
    if platform == "windows":
        sysroot = os.environ.get("SYSTEMROOT", r"C:\Windows")
        candidate = sysroot + r"\System32\nvidia-smi.exe"
        if exists(candidate):
            return candidate
    return None


def choose_torch(
    platform: str,
    machine: str,
    torch_spec: str | None = None,
    cpu: bool = False,
    nvidia: str | None = None,
) -> TorchChoice:
    """Pick the torch build; `nvidia` is find_nvidia_driver()'s answer."""
    if torch_spec:
        spec = torch_spec.strip()
        if not spec or spec.startswith("-"):
            raise ValueError(
                f"--torch {torch_spec!r}: give a pip requirement such as torch==2.13.0"
            )
        return TorchChoice("given", spec, None, "--torch given, build detection skipped")
    linux_cpu_index = TORCH_INDEX_CPU if platform == "linux" else None
    if cpu:
        return TorchChoice("cpu", "torch", linux_cpu_index, "--cpu given")
    if platform == "macos":
        if machine.lower() in ("arm64", "aarch64"):
            return TorchChoice(
                "mps", "torch", None, "Apple silicon: PyPI's macOS torch runs on MPS"
            )
        return TorchChoice("cpu", "torch", None, "Intel Mac: no MPS, so CPU")
    if nvidia:
        index = TORCH_INDEX_CUDA_WINDOWS if platform == "windows" else None
        return TorchChoice("cuda", "torch", index, f"NVIDIA driver found ({nvidia})")
    return TorchChoice("cpu", "torch", linux_cpu_index, "no NVIDIA driver found (no nvidia-smi)")


@dataclass(frozen=True)
class DaemonEnv:
    venv: Path
    platform: str

    @property
    def python(self) -> Path:
        return python_in_venv(self.venv, self.platform)

    def serve_command(self) -> list[str]:
        """How to start the daemon from this venv (no console script needed, works everywhere)."""
        return [str(self.python), "-m", "gimp_draggan", "serve"]


def install_daemon(
    actions: Actions,
    daemon_env: DaemonEnv,
    choice: TorchChoice,
    source: Path,
    base_python: str,
    system_site_packages: bool = False,
) -> None:
    """Create the venv (once) and install torch and the project from `source` into it."""
    if not (source / "pyproject.toml").is_file():
        raise ValueError(
            f"{source} holds no pyproject.toml: run the installer from the project checkout"
        )
    if daemon_env.python.exists():
        actions.say(f"venv already at {daemon_env.venv} (kept)")
    else:
        argv = [base_python, "-m", "venv"]
        if system_site_packages:
            argv.append("--system-site-packages")
        actions.run([*argv, str(daemon_env.venv)], "create the daemon's venv")
    pip = [str(daemon_env.python), "-m", "pip", "install", "--disable-pip-version-check"]
    torch_argv = [*pip, choice.requirement]
    if choice.index_url:
        torch_argv += ["--index-url", choice.index_url]
    actions.run(torch_argv, f"install torch ({choice.kind})")
    project = [*pip, "--upgrade", str(source)]
    if system_site_packages:
        project.insert(-1, "--no-build-isolation")
    actions.run(project, "install the gimp-draggan daemon")


def check_daemon(actions: Actions, daemon_env: DaemonEnv) -> None:
    """Import the daemon and torch in the venv, so a broken install fails here and not in GIMP."""
    code = "import torch, gimp_draggan.cli; print('daemon venv ok: torch', torch.__version__)"
    actions.run([str(daemon_env.python), "-c", code], "check that the daemon and torch import")


@dataclass
class InstallRecord:
    """What the installer put where; `--uninstall` and `doctor` read it."""

    venv: str = ""
    torch: str = ""
    plugin_dirs: tuple[str, ...] = ()
    plugin_configs: tuple[str, ...] = ()
    service_files: tuple[str, ...] = ()
    serve_command: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: Path) -> InstallRecord | None:
        """The record at `path`, or None when absent or unreadable."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(raw, dict):
            return None
        fields = cls.__dataclass_fields__
        kept: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in fields
        }
        return cls(**kept)


def uninstall_daemon(actions: Actions, data: Path) -> None:
    """Remove the venv and the install record; other files there (e.g. downloaded models) stay."""
    removed = actions.remove(data / "venv")
    removed = actions.remove(data / RECORD_NAME) or removed
    if not removed:
        actions.say(f"no daemon install at {data}")
    if data.is_dir() and not any(data.iterdir()) and not actions.dry_run:
        actions.remove(data)
