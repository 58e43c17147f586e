"""`doctor`'s GIMP side: is GIMP 3 there, is the plug-in where GIMP looks, did GIMP register it.

These are the failures users of GIMP plug-ins meet most: the menu entry is missing because the
plug-in sits in the wrong folder, its folder and file names differ, it is not executable, or
GIMP was not restarted. Each finding names the file and the one thing to do about it.

The folder layout is the installer's own (`gimp_draggan_plugin.layout`): the daemon's venv does not
contain the installer, but both have the plug-in's package.
"""

from __future__ import annotations

import json
import os
import plistlib
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from gimp_draggan.doctor.base import Check, Context
from gimp_draggan_plugin import layout, protocol
from gimp_draggan_plugin.layout import ENTRY, FLATPAK_APP, PACKAGE, PLUGIN_NAME, SHEBANG, VERSIONS
from gimp_draggan_plugin.settings import CONFIG_NAME

PROCEDURE = "plug-in-draggan-drag"
TRANSPORT_MODULES = ("client", "transport", "zmtp", "protocol")
INSTALL_HINT = (
    "run installer/install.sh (Windows: installer\\install.ps1) from the gimp-draggan checkout"
)
_VERSION_RE = re.compile(r"version\s+(\d+\.\d+(?:\.\d+)?)")
_MARKER = "DRAGGAN-DOCTOR"


@dataclass(frozen=True)
class GimpInstall:
    kind: str  # "path" | "flatpak" | "snap" | "app" | "given"
    where: str
    version: str  # "" = unknown


def _which(ctx: Context, name: str) -> str | None:
    return shutil.which(name, path=ctx.env.get("PATH", ""))


def _sys(ctx: Context, path: str) -> Path:
    return ctx.sysroot / path.lstrip("/")


def config_roots(ctx: Context) -> list[tuple[str, Path]]:
    """(kind, folder holding GIMP/<version>) per packaging, as the installer lays them out."""
    return layout.config_roots(ctx.env, ctx.os_name, ctx.home)


def version_dirs(ctx: Context) -> list[tuple[str, str, Path]]:
    """(kind, version, GIMP config dir) for every GIMP 3 that has started for this user."""
    return [
        (kind, v, root / "GIMP" / v)
        for kind, root in config_roots(ctx)
        for v in VERSIONS
        if (root / "GIMP" / v).is_dir()
    ]


def _version_of(ctx: Context, *command: str) -> str:
    try:
        out = subprocess.run(
            [*command, "--version"],
            capture_output=True,
            text=True,
            timeout=min(ctx.timeout_s, 20.0),
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    match = _VERSION_RE.search(out)
    return match.group(1) if match else ""


def find_gimp(ctx: Context) -> list[GimpInstall]:
    """Every GIMP this machine shows: programs on PATH, Flatpak, Snap, app bundles."""
    found: list[GimpInstall] = []
    if ctx.gimp_console:
        found.append(
            GimpInstall("given", shlex.join(ctx.gimp_console), _version_of(ctx, *ctx.gimp_console))
        )
    names = ("gimp-3.2", "gimp-3.0", "gimp-3", "gimp", "gimp-console-3.0", "gimp-console")
    seen: set[str] = set()
    for name in names:
        exe = _which(ctx, name)
        if exe and os.path.realpath(exe) not in seen:
            seen.add(os.path.realpath(exe))
            found.append(GimpInstall("path", exe, _version_of(ctx, exe)))
    if ctx.os_name == "linux":
        for base in (_sys(ctx, "/var/lib/flatpak/app"), ctx.home / ".local/share/flatpak/app"):
            if (base / FLATPAK_APP).is_dir():
                found.append(GimpInstall("flatpak", str(base / FLATPAK_APP), ""))
        if _sys(ctx, "/snap/gimp").is_dir():
            found.append(GimpInstall("snap", str(_sys(ctx, "/snap/gimp")), ""))
    if ctx.os_name == "macos":
        for apps in (_sys(ctx, "/Applications"), ctx.home / "Applications"):
            for app in sorted(apps.glob("GIMP*.app")):
                found.append(GimpInstall("app", str(app), _bundle_version(app)))
    if ctx.os_name == "windows":
        programs = [
            Path(ctx.env.get("ProgramFiles", r"C:\Program Files")),
            Path(ctx.env.get("LOCALAPPDATA", str(ctx.home / "AppData/Local"))) / "Programs",
        ]
        for folder in programs:
            for bundle_exe in sorted(folder.glob("GIMP 3*/bin/gimp-3*.exe")):
                version = bundle_exe.stem.removeprefix("gimp-")
                found.append(GimpInstall("app", str(bundle_exe), version))
    return found


def _bundle_version(app: Path) -> str:
    try:
        info = plistlib.loads((app / "Contents" / "Info.plist").read_bytes())
    except (OSError, ValueError, plistlib.InvalidFileException):
        return ""
    return str(info.get("CFBundleShortVersionString", ""))


def check_gimp(ctx: Context) -> Check:
    installs = find_gimp(ctx)
    configs = version_dirs(ctx)
    three = [i for i in installs if i.version.startswith("3")]
    unknown = [i for i in installs if not i.version]
    described = "; ".join(
        f"{i.kind} {i.where}" + (f" ({i.version})" if i.version else "") for i in installs
    )
    if three or (configs and not installs) or (unknown and configs):
        seen = described or "no program found, but GIMP 3 settings exist"
        dirs = ", ".join(f"{k} {v}" for k, v, _ in configs) or "none yet"
        return Check("gimp", "ok", f"GIMP 3: {seen}; settings folders: {dirs}")
    fix = (
        "install GIMP 3 (https://www.gimp.org/downloads/; on Linux also "
        "`flatpak install flathub org.gimp.GIMP`), start it once, then re-run the installer"
    )
    if unknown:
        return Check(
            "gimp",
            "warn",
            f"found {described}, but no GIMP 3 settings folder: GIMP 3 "
            "has not been started for this user",
            "start GIMP 3 once, then " + INSTALL_HINT,
        )
    if installs:
        return Check(
            "gimp", "fail", f"only an older GIMP found: {described}; the plug-in needs GIMP 3", fix
        )
    return Check(
        "gimp",
        "fail",
        "no GIMP found (looked on PATH and for Flatpak/Snap/app "
        "installs) and no GIMP 3 settings folder",
        fix,
    )


def plugin_folders(ctx: Context, recorded: tuple[str, ...] = ()) -> list[tuple[str, Path]]:
    """(label, plug-ins folder) to inspect: every GIMP 3 settings folder, plus given/recorded."""
    out: list[tuple[str, Path]] = [
        (f"{kind} {v}", d / "plug-ins") for kind, v, d in version_dirs(ctx)
    ]
    out += [("given", Path(p)) for p in ctx.gimp_dirs]
    out += [("recorded by the installer", Path(p).parent) for p in recorded]
    unique: dict[Path, tuple[str, Path]] = {}
    for label, path in out:
        unique.setdefault(Path(os.path.normpath(path)), (label, path))
    return list(unique.values())


def _text_head(path: Path, limit: int = 200_000) -> str:
    try:
        with path.open("rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def _misplaced(plugins: Path) -> list[Check]:
    """Our plug-in under another name or loose in plug-ins/ (GIMP 3 ignores both)."""
    found = []
    ours = plugins / PLUGIN_NAME
    for py in sorted(plugins.glob("*.py")):
        if py.name == ENTRY or PROCEDURE in _text_head(py):
            found.append(
                Check(
                    "plugin",
                    "fail",
                    f"{py} lies loose in the plug-ins folder; GIMP 3 only runs "
                    "plug-ins in a folder of the same name",
                    f"delete {py} and {INSTALL_HINT} (or move it to {ours / ENTRY})",
                )
            )
    for folder in sorted(p for p in plugins.iterdir() if p.is_dir() and p != ours):
        for py in sorted(folder.glob("*.py")):
            if py.name == ENTRY or PROCEDURE in _text_head(py):
                if folder.name == py.stem:
                    why = f"its folder and file are named {folder.name!r}, not {PLUGIN_NAME!r}"
                else:
                    why = (
                        f"folder {folder.name!r} and file {py.name!r} do not share a name, "
                        "so GIMP 3 ignores it"
                    )
                found.append(
                    Check(
                        "plugin",
                        "fail",
                        f"plug-in found at {py}, but {why}",
                        f"rename the folder {folder} to {ours} and the file to {ENTRY} (or delete "
                        f"{folder} and {INSTALL_HINT})",
                    )
                )
    return found


def _transport(plug: Path, python: str, timeout_s: float) -> tuple[Check, int | None]:
    """Import the plug-in's own transport with a bare Python (no site-packages, so no pyzmq)."""
    code = (
        f"import sys; sys.path.insert(0, {str(plug)!r}); "
        f"from {PACKAGE} import {', '.join(TRANSPORT_MODULES)}; "
        f"print('{_MARKER}', protocol.PROTOCOL_VERSION)"
    )
    try:
        proc = subprocess.run(
            [python, "-I", "-S", "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(
            "transport",
            "warn",
            f"could not run {python} to test the transport: {exc}",
            "run doctor with a working Python 3",
        ), None
    match = re.search(rf"{_MARKER} (\d+)", proc.stdout)
    if proc.returncode != 0 or not match:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return Check(
            "transport",
            "fail",
            f"the plug-in's transport in {plug / PACKAGE} does not import: {last}",
            f"re-install the plug-in: {INSTALL_HINT}",
        ), None
    return Check(
        "transport",
        "ok",
        f"{plug / PACKAGE} imports with a bare Python "
        f"({Path(python).name}, no pyzmq needed: standard-library ZMTP fallback)",
    ), int(match.group(1))


def inspect_plugins(plugins: Path, label: str, ctx: Context) -> list[Check]:
    """The plug-in in one plug-ins folder: files, names, exec bit, transport, config."""
    plug = plugins / PLUGIN_NAME
    entry = plug / ENTRY
    where = f"{plugins} ({label})"
    if not entry.is_file():
        misplaced = _misplaced(plugins) if plugins.is_dir() else []
        if misplaced:
            return misplaced
        return [
            Check(
                "plugin",
                "fail",
                f"plug-in not installed in {where}",
                f"{INSTALL_HINT} (or add --gimp-dir {plugins})",
            )
        ]
    checks: list[Check] = []
    problems = []
    if ctx.os_name != "windows" and not os.access(entry, os.X_OK):
        problems.append(
            Check(
                "plugin",
                "fail",
                f"{entry} is not executable, so GIMP skips it",
                f"chmod +x '{entry}' (or {INSTALL_HINT})",
            )
        )
    head = _text_head(entry, 200)
    if not head.startswith(SHEBANG + "\n"):
        problems.append(
            Check(
                "plugin",
                "fail",
                f"{entry} does not start with '{SHEBANG}' and LF line ends",
                f"re-install the plug-in: {INSTALL_HINT}",
            )
        )
    checks += problems or [Check("plugin", "ok", f"installed in {where}: {entry}")]
    transport, version = _transport(plug, sys.executable, ctx.timeout_s)
    checks.append(transport)
    if version is not None and version != protocol.PROTOCOL_VERSION:
        checks.append(
            Check(
                "transport",
                "fail",
                f"the plug-in speaks protocol {version}, this daemon {protocol.PROTOCOL_VERSION}",
                f"install the same version of both: {INSTALL_HINT}",
            )
        )
    checks.append(_config(plug / CONFIG_NAME))
    return checks


def _config(path: Path) -> Check:
    if not path.exists():
        return Check(
            "config",
            "info",
            f"no {path.name} beside the plug-in: it uses "
            f"${protocol.ADDRESS_ENV} or {protocol.DEFAULT_ADDRESS}",
        )
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        address = protocol.check_address(str(body["address"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Check("config", "fail", f"{path} is broken ({exc})", f"delete it and {INSTALL_HINT}")
    keys = "with CURVE keys" if isinstance(body.get("curve"), dict) else "no keys"
    return Check("config", "ok", f"{path}: daemon {address}, {keys}")


def configured_daemons(folders: list[tuple[str, Path]]) -> list[tuple[str, tuple[str, ...]]]:
    """(address, CURVE keys or ()) the installed plug-ins are configured for."""
    out = []
    for _, plugins in folders:
        try:
            body = json.loads((plugins / PLUGIN_NAME / CONFIG_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not (isinstance(body, dict) and isinstance(body.get("address"), str)):
            continue
        curve = body.get("curve")
        keys: tuple[str, ...] = ()
        if isinstance(curve, dict):
            keys = tuple(str(curve.get(k, "")) for k in ("public", "secret", "server_public"))
        out.append((body["address"], keys))
    return out


def check_registered(gimp_dir: Path, label: str) -> Check:
    """What GIMP's plug-in cache (pluginrc) says about our procedure."""
    entry = gimp_dir / "plug-ins" / PLUGIN_NAME / ENTRY
    rc = gimp_dir / "pluginrc"
    restart = f"restart GIMP ({label}); it registers new plug-ins at start-up"
    if not rc.is_file():
        return Check(
            "registered",
            "warn",
            f"{rc} does not exist: GIMP ({label}) has not started since its settings were made",
            restart,
        )
    text = _text_head(rc, 20_000_000)
    if f'(proc-def "{PROCEDURE}"' in text:
        return Check("registered", "ok", f"{PROCEDURE} is registered in {rc}")
    if rc.stat().st_mtime < entry.stat().st_mtime:
        return Check(
            "registered",
            "warn",
            f"GIMP ({label}) has not started since the plug-in "
            f"was installed: {PROCEDURE} is not in {rc} yet",
            restart,
        )
    return Check(
        "registered",
        "fail",
        f"GIMP ({label}) started after the plug-in was installed "
        f"but did not register {PROCEDURE}: the plug-in failed to load",
        "start GIMP from a terminal with `gimp-3.0 --verbose` (or open Windows → "
        "Dockable Dialogs → Error Console) to see the plug-in's error, and re-install it",
    )


def _console_command(ctx: Context) -> list[str] | None:
    if ctx.gimp_console:
        return list(ctx.gimp_console)
    for name in ("gimp-console-3.2", "gimp-console-3.0", "gimp-console-3", "gimp-console"):
        exe = _which(ctx, name)
        if exe:
            return [exe]
    return None


_BATCH = f"""
import os, sys
import gi
gi.require_version('Gimp', '3.0')
from gi.repository import Gimp
print('{_MARKER}', Gimp.get_pdb().procedure_exists('{PROCEDURE}'))
try:
    sys.path.insert(0, os.path.join(Gimp.directory(), 'plug-ins', '{PLUGIN_NAME}'))
    from {PACKAGE} import {", ".join(TRANSPORT_MODULES)}
    print('{_MARKER}-TRANSPORT', protocol.PROTOCOL_VERSION, transport.have_pyzmq(),
          sys.version.split()[0])
except Exception as exc:
    print('{_MARKER}-TRANSPORT-ERROR', repr(exc).replace(chr(10), ' '))
"""


def ask_gimp(ctx: Context) -> list[Check]:
    """Start GIMP headless; ask its PDB for the procedure and let its own Python import the
    plug-in's transport. Empty when no GIMP console program exists."""
    command = _console_command(ctx)
    if command is None:
        return []
    argv = [*command, "-i", "-n", "--batch-interpreter=python-fu-eval", "-b", _BATCH, "--quit"]
    shown = shlex.join(command)
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=ctx.timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return [
            Check(
                "gimp-pdb",
                "info",
                f"{shown} did not answer within {ctx.timeout_s:g} s; skipped asking GIMP",
            )
        ]
    except OSError as exc:
        return [Check("gimp-pdb", "info", f"could not start {shown}: {exc}")]
    output = proc.stdout + proc.stderr
    match = re.search(rf"{_MARKER} (True|False)", output)
    if match is None:
        last = (output.strip().splitlines() or ["no output"])[-1]
        return [
            Check("gimp-pdb", "info", f"{shown} gave no answer (exit {proc.returncode}: {last})")
        ]
    if match.group(1) == "True":
        rows = [Check("gimp-pdb", "ok", f"GIMP ({shown}) lists {PROCEDURE} in its PDB")]
    else:
        rows = [
            Check(
                "gimp-pdb",
                "fail",
                f"GIMP ({shown}) started headless but has no {PROCEDURE}",
                f"{INSTALL_HINT}, then check the plug-in rows above",
            )
        ]
    loaded = re.search(rf"{_MARKER}-TRANSPORT (\d+) (True|False) (\S+)", output)
    failed = re.search(rf"{_MARKER}-TRANSPORT-ERROR (.*)", output)
    if loaded:
        version, zmq, python = int(loaded.group(1)), loaded.group(2) == "True", loaded.group(3)
        via = "pyzmq" if zmq else "the standard-library ZMTP client (no pyzmq there)"
        if version == protocol.PROTOCOL_VERSION:
            rows.append(
                Check(
                    "gimp-python",
                    "ok",
                    f"GIMP's own Python {python} imports the "
                    f"plug-in's transport; it will use {via}",
                )
            )
        else:
            rows.append(
                Check(
                    "gimp-python",
                    "fail",
                    f"the plug-in GIMP loads speaks protocol "
                    f"{version}, this daemon {protocol.PROTOCOL_VERSION}",
                    f"install the same version of both: {INSTALL_HINT}",
                )
            )
    elif failed:
        rows.append(
            Check(
                "gimp-python",
                "fail",
                f"GIMP's own Python cannot import the plug-in's transport: {failed.group(1)}",
                f"re-install the plug-in: {INSTALL_HINT}",
            )
        )
    return rows


def gimp_checks(ctx: Context, recorded: tuple[str, ...] = ()) -> list[Check]:
    """All GIMP-side rows, in the order a person fixes them."""
    checks = [check_gimp(ctx)]
    folders = plugin_folders(ctx, recorded)
    per_folder = [
        (label, plugins, inspect_plugins(plugins, label, ctx)) for label, plugins in folders
    ]
    installed_somewhere = any((p / PLUGIN_NAME / ENTRY).is_file() for _, p, _ in per_folder)
    gimp_dirs = {d for _, _, d in version_dirs(ctx)}
    for label, plugins, rows in per_folder:
        for row in rows:
            if (
                installed_somewhere
                and row.status == "fail"
                and row.detail.startswith("plug-in not installed")
            ):
                row = Check(row.name, "warn", row.detail, row.fix)
            checks.append(row)
        gimp_dir = plugins.parent
        known = gimp_dir in gimp_dirs or (gimp_dir / "pluginrc").exists()
        if known and (plugins / PLUGIN_NAME / ENTRY).is_file():
            checks.append(check_registered(gimp_dir, label))
    if not folders:
        checks.append(
            Check(
                "plugin",
                "fail",
                "no GIMP 3 plug-ins folder found",
                f"start GIMP 3 once (it creates its settings), then {INSTALL_HINT}",
            )
        )
    if ctx.ask_gimp:
        checks += ask_gimp(ctx)
    return checks
