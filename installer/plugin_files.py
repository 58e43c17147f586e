"""Copy the plug-in into a GIMP plug-ins folder the way GIMP 3 needs it.

GIMP runs `plug-ins/NAME/NAME.py` only when the folder and the file share the name, the file is
executable and starts with `#!/usr/bin/env python3` (LF line ends). The helper modules go into a
package folder beside it (`gimp_draggan_plugin/`), which the entry file puts on `sys.path`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from actions import Actions, InstallError

SOURCE = Path(__file__).resolve().parent.parent / "gimp_plugin"
HELP = "help"


def plugin_module(name: str) -> ModuleType:
    """A standard-library module of the checkout's plug-in package, loaded by path: the installer
    runs before anything is installed, and these modules are what it shares with the daemon."""
    path = SOURCE / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_gdg_{name}", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


LAYOUT = plugin_module("layout")
NAME, ENTRY, PACKAGE, SHEBANG = LAYOUT.PLUGIN_NAME, LAYOUT.ENTRY, LAYOUT.PACKAGE, LAYOUT.SHEBANG


def source_files(source: Path) -> tuple[Path, list[Path]]:
    """The entry file and the package modules in the project's `gimp_plugin/` folder."""
    entry = source / ENTRY
    if not entry.is_file():
        raise InstallError(f"{entry} is missing: run the installer from a gimp-draggan checkout")
    modules = sorted(p for p in source.glob("*.py") if p.name != ENTRY)
    if not any(p.name == "__init__.py" for p in modules):
        raise InstallError(f"{source} has no __init__.py: the checkout is incomplete")
    return entry, modules


def _text(path: Path) -> str:
    """A source file with LF line ends (a CRLF checkout on Windows breaks the #! line)."""
    return path.read_text(encoding="utf-8").replace("\r\n", "\n")


def install(actions: Actions, source: Path, plugins_dir: Path) -> Path:
    """Install (or update in place) into `plugins_dir`; returns the plug-in's own folder."""
    entry, modules = source_files(source)
    target = plugins_dir / NAME
    if target.exists() and not target.is_dir():
        raise InstallError(f"{target} exists and is not a folder; move it away and re-run")
    entry_text = _text(entry)
    if not entry_text.startswith(SHEBANG + "\n"):
        raise InstallError(f"{entry} does not start with '{SHEBANG}'")
    actions.write_file(target / ENTRY, entry_text, mode=0o755)
    package = target / PACKAGE
    wanted = {p.name for p in modules}
    for module in modules:
        actions.write_file(package / module.name, _text(module), mode=0o644)
    if package.is_dir():
        for old in sorted(package.glob("*.py")):
            if old.name not in wanted:
                actions.remove(old)
    # The help pages GIMP's Help button opens (the entry file registers `help/` as its help domain).
    for page in sorted(p for p in (source / HELP).rglob("*") if p.is_file()):
        actions.write_file(target / page.relative_to(source), _text(page), mode=0o644)
    return target


def uninstall(actions: Actions, plugins_dir: Path) -> bool:
    """Remove the plug-in folder; True when there was one."""
    return actions.remove(plugins_dir / NAME)
