"""`doctor`'s machine side: the installer's record, the daemon, models, torch and GPU, the face
detector, disk.

The daemon is asked through the same client the plug-in uses, so "reachable" here means
reachable for GIMP too (same address, same keys, same transport).
"""

from __future__ import annotations

import json
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np

from gimp_draggan.device import pick_device
from gimp_draggan.doctor.base import Check, Context
from gimp_draggan.edit.geometry import Rect
from gimp_draggan.models import registry
from gimp_draggan.models.download import sha256_file
from gimp_draggan_plugin import protocol
from gimp_draggan_plugin.client import Client, DaemonError, DaemonNotRunning
from gimp_draggan_plugin.transport import CurveKeys

APP = "gimp-draggan"
MIN_FREE_FAIL = 500 * 2**20  # Below this, downloads and the session cache fail.
MIN_FREE_WARN = 2 * 2**30  # A big model (~364 MB) plus LPIPS weights and temp files.


def package_version() -> str:
    try:
        return metadata.version(APP)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def data_dir(ctx: Context) -> Path:
    """The installer's data folder (venv + install.json), as installer/daemon_env.py lays it out."""
    if ctx.os_name == "windows":
        base = ctx.env.get("LOCALAPPDATA")
        return (Path(base) if base else ctx.home / "AppData" / "Local") / APP
    if ctx.os_name == "macos":
        return ctx.home / "Library" / "Application Support" / APP
    base = ctx.env.get("XDG_DATA_HOME")
    return (Path(base) if base else ctx.home / ".local" / "share") / APP


def read_record(ctx: Context) -> tuple[Check, dict[str, object]]:
    """The installer's record (what it put where), or an info row when there is none."""
    path = data_dir(ctx) / "install.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Check(
            "install",
            "info",
            f"no installer record at {path} (a developer install, or the installer was not run)",
        ), {}
    except (OSError, ValueError) as exc:
        return Check(
            "install",
            "warn",
            f"{path} is unreadable ({exc})",
            "re-run the installer; it rewrites the record",
        ), {}
    if not isinstance(record, dict):
        return Check(
            "install",
            "warn",
            f"{path} is not a JSON object",
            "re-run the installer; it rewrites the record",
        ), {}
    venv = record.get("venv") or "none (plug-in only)"
    service = ", ".join(record.get("service_files") or []) or "no login service"
    return Check("install", "ok", f"installer record {path}: venv {venv}; {service}"), record


def _serve_hint(record: dict[str, object]) -> str:
    command = record.get("serve_command")
    if record.get("service_files"):
        return (
            "start the login service (Linux: `systemctl --user start gimp-draggan`; macOS: "
            'log out and in; Windows: `schtasks /Run /TN "gimp-draggan daemon"`)'
        )
    if isinstance(command, list) and command:
        return "start it: " + " ".join(f'"{a}"' if " " in a else a for a in command)
    return f"start it: `{protocol.SERVE_COMMAND}`"


def check_daemon(
    address: str, record: dict[str, object], curve: tuple[str, ...] = (), timeout_s: float = 3.0
) -> Check:
    """Say hello to the daemon at `address` the way the plug-in does."""
    try:
        keys = CurveKeys(*(k.encode("ascii") for k in curve)) if curve else None
    except (TypeError, ValueError) as exc:
        return Check(
            "daemon",
            "fail",
            f"the CURVE keys for {address} are broken: {exc}",
            "re-run the installer with --client-key and --server-key",
        )
    try:
        with Client(address, curve=keys, timeout_s=timeout_s, retries=0) as client:
            hello = client.hello(client="gimp-draggan-doctor")
            transport = client.transport_name
    except DaemonNotRunning:
        return Check("daemon", "fail", f"no daemon listens at {address}", _serve_hint(record))
    except DaemonError as exc:
        return Check(
            "daemon",
            "fail",
            f"the daemon at {address} did not answer properly: {exc}",
            _serve_hint(record) + "; if it runs, check the address and the keys "
            "(`gimp-draggan keys`) and its log file",
        )
    server = str(hello.get("server", "?"))
    detail = (
        f"daemon {server} at {address} (protocol {hello.get('protocol')}, device "
        f"{hello.get('device')}, default model {hello.get('default_model')}, via "
        f"{transport})"
    )
    mine = package_version()
    if server != mine:
        return Check(
            "daemon",
            "warn",
            f"{detail}; this command is version {mine}",
            "install the same gimp-draggan version for the daemon and the plug-in "
            "(re-run the installer, then restart the daemon)",
        )
    return Check("daemon", "ok", detail)


def check_models(cache: str | None = None) -> list[Check]:
    """The packaged model is present; each downloaded one matches its pinned size and hash."""
    try:
        table = registry.load_table()
    except registry.RegistryError as exc:
        return [
            Check(
                "models",
                "fail",
                str(exc),
                "re-install gimp-draggan (the model table ships with it)",
            )
        ]
    rows: list[Check] = []
    missing = []
    for name, entry in table.items():
        path = registry.model_path(entry, cache)
        if not path.is_file():
            if entry.package_path:
                rows.append(
                    Check(
                        "models",
                        "fail",
                        f"{name}: packaged file {path} is missing",
                        "re-install gimp-draggan (run the installer again)",
                    )
                )
            elif entry.kind == "generator":
                missing.append(name)
            continue
        problems = []
        size = path.stat().st_size
        if entry.size_bytes is not None and size != entry.size_bytes:
            problems.append(f"size {size} != {entry.size_bytes}")
        if entry.sha256 is not None and sha256_file(path) != entry.sha256:
            problems.append(f"SHA-256 differs from the pinned {entry.sha256[:12]}…")
        if problems:
            rows.append(
                Check(
                    "models",
                    "fail",
                    f"{name}: {path}: {'; '.join(problems)}",
                    f"delete {path}, then `gimp-draggan models download {name}`",
                )
            )
        else:
            how = "hash checked" if entry.sha256 else "no pinned hash"
            rows.append(Check("models", "ok", f"{name}: {path} ({size / 2**20:.1f} MB, {how})"))
    if missing:
        rows.append(
            Check(
                "models",
                "info",
                f"not downloaded: {', '.join(missing)} (optional; "
                "`gimp-draggan models download NAME` fetches one)",
            )
        )
    return rows


def check_faces() -> Check:
    """The face detector that frames faces for face models (FFHQ) loads and runs."""
    try:  # Imported here: a detector that does not load is what this check reports.
        from gimp_draggan.faces import facemesh, find_faces

        facemesh.network()
        find_faces(
            lambda box: np.full((box.resolution, box.resolution, 3), 0.5, np.float32),
            256,
            256,
            Rect(0, 0, 256, 256),
        )
    except (ImportError, OSError, ValueError, RuntimeError, KeyError) as exc:
        return Check(
            "faces",
            "fail",
            f"the face detector does not load: {exc}",
            "re-install gimp-draggan: its face models ship in the package, and edits "
            "with a face model (FFHQ) fail without them",
        )
    return Check("faces", "ok", "face detector and landmarks load and run (FFHQ framing of faces)")


def check_torch(ctx: Context) -> Check:
    """Which torch build runs the daemon, and whether it uses the GPU the machine has."""
    try:  # Imported here: a torch that does not import is what this check reports.
        import torch
    except ImportError as exc:
        return Check(
            "torch",
            "fail",
            f"torch does not import: {exc}",
            "re-run the installer (it installs torch into the daemon's venv)",
        )
    cuda_build = torch.version.cuda
    build = f"CUDA {cuda_build}" if cuda_build else "CPU"
    if getattr(torch.version, "hip", None):
        build = f"ROCm {torch.version.hip}"
    device = pick_device(None)
    detail = f"torch {torch.__version__} ({build} build); daemon device: {device}"
    if device.startswith("cuda"):
        detail += f" = {torch.cuda.get_device_name(0)}"
        return Check("torch", "ok", detail)
    nvidia = shutil.which("nvidia-smi", path=ctx.env.get("PATH", ""))
    if nvidia and not torch.cuda.is_available():
        why = (
            "this torch is a CPU build"
            if not cuda_build
            else "CUDA is not usable (driver too old for this build?)"
        )
        return Check(
            "torch",
            "warn",
            f"{detail}; an NVIDIA driver is present ({nvidia}) but {why}",
            "re-run the installer without --cpu (it picks the CUDA build when it finds "
            "nvidia-smi), or update the NVIDIA driver",
        )
    if device == "mps":
        return Check("torch", "ok", detail)
    return Check(
        "torch",
        "info",
        f"{detail}; no GPU: edits work but take longer (the demo's small model is fine on CPU)",
    )


def _free_bytes(path: Path) -> tuple[Path, int]:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe, shutil.disk_usage(probe).free


def check_disk(paths: list[tuple[str, Path]]) -> list[Check]:
    rows = []
    for label, path in paths:
        probe, free = _free_bytes(path)
        text = f"{label} {path}: {free / 2**30:.1f} GB free (on {probe})"
        if free < MIN_FREE_FAIL:
            rows.append(Check("disk", "fail", text, f"free at least 2 GB on the disk of {probe}"))
        elif free < MIN_FREE_WARN:
            rows.append(
                Check(
                    "disk",
                    "warn",
                    text,
                    f"free at least 2 GB on the disk of {probe} before downloading a large model",
                )
            )
        else:
            rows.append(Check("disk", "ok", text))
    return rows
