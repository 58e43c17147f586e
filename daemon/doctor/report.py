"""`gimp-draggan doctor`: run every check, print a report with a fix per problem, bundle logs.

The checks live in `doctor_gimp` (GIMP and the plug-in) and `doctor_host` (daemon, models,
torch, disk); this module orders them, renders text or JSON, and writes the `--bundle` zip a
user attaches to a bug report (logs, report, install record, plug-in configs without secrets).
"""

from __future__ import annotations

import json
import platform as host
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from gimp_draggan.atomic import replacing
from gimp_draggan.doctor import gimp as doctor_gimp
from gimp_draggan.doctor import host as doctor_host
from gimp_draggan.doctor.base import Check, Context
from gimp_draggan.models.registry import cache_dir
from gimp_draggan.service.logs import log_dir
from gimp_draggan_plugin import protocol

LABELS = {"ok": "OK", "info": "INFO", "warn": "WARN", "fail": "FAIL"}
MAX_LOG_BYTES = 5 * 2**20  # Per log file in a bundle (the newest part is kept).


def run_checks(ctx: Context, cache: str | None = None) -> list[Check]:
    """Every check, in the order a person would fix things."""
    record_row, record = doctor_host.read_record(ctx)
    dirs = record.get("plugin_dirs")
    recorded = tuple(str(p) for p in dirs) if isinstance(dirs, list) else ()
    checks = [record_row, *doctor_gimp.gimp_checks(ctx, recorded)]
    folders = doctor_gimp.plugin_folders(ctx, recorded)
    checks += sandbox_service(folders, record)
    if ctx.daemon:
        daemons: list[tuple[str, tuple[str, ...]]] = [(ctx.daemon, ())]
    else:
        daemons = doctor_gimp.configured_daemons(folders) or [(protocol.default_address(), ())]
    seen = set()
    for address, keys in daemons:
        if address not in seen:
            seen.add(address)
            checks.append(doctor_host.check_daemon(address, record, keys))
    checks += doctor_host.check_models(cache)
    checks.append(doctor_host.check_torch(ctx))
    checks.append(doctor_host.check_faces())
    checks += doctor_host.check_disk(
        [("model cache", cache_dir(cache)), ("daemon venv", doctor_host.data_dir(ctx))]
    )
    return checks


def sandbox_service(folders: list[tuple[str, Path]], record: dict[str, Any]) -> list[Check]:
    """A Flatpak or Snap GIMP cannot start the daemon, so it needs the login service."""
    boxed = [
        p
        for label, p in folders
        if label.split()[0] in ("flatpak", "snap")
        and (p / doctor_gimp.PLUGIN_NAME / doctor_gimp.ENTRY).is_file()
    ]
    if not boxed:
        return []
    if record.get("service_files"):
        return [
            Check(
                "service",
                "ok",
                "sandboxed GIMP found; the daemon runs as a login "
                f"service ({', '.join(record['service_files'])})",
            )
        ]
    return [
        Check(
            "service",
            "warn",
            f"the plug-in is installed for a sandboxed GIMP "
            f"({', '.join(str(p) for p in boxed)}), which cannot start the daemon itself",
            "re-run the installer with --service, or keep `gimp-draggan serve` running",
        )
    ]


def summary(checks: list[Check]) -> dict[str, int]:
    return {status: sum(c.status == status for c in checks) for status in LABELS}


def header() -> str:
    return (
        f"gimp-draggan doctor {doctor_host.package_version()} — {host.system()} "
        f"{host.machine()}, Python {host.python_version()}"
    )


def render_text(checks: list[Check]) -> str:
    width = max((len(c.name) for c in checks), default=6)
    lines = [header(), ""]
    for c in checks:
        lines.append(f"{LABELS[c.status]:<5} {c.name:<{width}}  {c.detail}")
        if c.fix:
            lines.append(f"{'':<5} {'':<{width}}  fix: {c.fix}")
    counts = summary(checks)
    lines.append("")
    if counts["fail"] or counts["warn"]:
        lines.append(
            f"{counts['fail']} problem(s) to fix, {counts['warn']} warning(s); "
            "each has its fix above. For a bug report: gimp-draggan doctor --bundle"
        )
    else:
        lines.append("All good. Try it: gimp-draggan demo")
    return "\n".join(lines) + "\n"


def report_json(checks: list[Check]) -> dict[str, Any]:
    return {
        "version": doctor_host.package_version(),
        "platform": f"{host.system()} {host.machine()}",
        "python": host.python_version(),
        "ok": not any(c.status == "fail" for c in checks),
        "counts": summary(checks),
        "checks": [
            {"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix} for c in checks
        ],
    }


def _redacted_config(path: Path) -> str:
    """A plug-in config without its secret key."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"unreadable: {exc}\n"
    if isinstance(body, dict) and isinstance(body.get("curve"), dict):
        body["curve"] = {**body["curve"], "secret": "<removed>"}
    if isinstance(body, dict) and "secret" in body:  # The loopback secret stays home too.
        body["secret"] = "<removed>"
    return json.dumps(body, indent=2) + "\n"


def _tail(path: Path) -> bytes:
    with path.open("rb") as f:
        size = path.stat().st_size
        f.seek(max(0, size - MAX_LOG_BYTES))
        return f.read()


def write_bundle(path: Path, checks: list[Check], ctx: Context) -> Path:
    """Zip the report, the logs, the install record and the plug-in configs for a bug report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("report.txt", render_text(checks))
        z.writestr("report.json", json.dumps(report_json(checks), indent=2) + "\n")
        record = doctor_host.data_dir(ctx) / "install.json"
        if record.is_file():
            z.writestr("install.json", record.read_bytes())
        for i, (_label, plugins) in enumerate(doctor_gimp.plugin_folders(ctx)):
            config = plugins / doctor_gimp.PLUGIN_NAME / doctor_gimp.CONFIG_NAME
            if config.is_file():
                z.writestr(f"plugin-config-{i}.json", _redacted_config(config))
        logs = log_dir()
        for log in sorted(logs.glob("*.log*")) if logs.is_dir() else []:
            if log.is_file():
                z.writestr(f"logs/{log.name}", _tail(log))
        z.writestr(
            "bundle.txt",
            f"{header()}\nmade {time.strftime('%Y-%m-%d %H:%M:%S %z')}\nargv: {sys.argv}\n",
        )
    return path
