"""The GIMP 3 plug-in folders of this user, by the plug-in's own layout (`gimp_plugin/layout.py`,
which `doctor` reads too).

A GIMP version folder (e.g. `~/.config/GIMP/3.0`) exists once that GIMP has started; its `plug-ins`
folder is created here if it is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from plugin_files import LAYOUT


@dataclass(frozen=True)
class GimpDir:
    kind: str  # "native" | "flatpak" | "snap" | "macos" | "windows" | "given"
    version: str  # "3.0", "3.2", or "" when given by --gimp-dir
    plugins: Path  # the plug-ins folder itself

    def label(self) -> str:
        version = f" {self.version}" if self.version else ""
        return f"{self.kind}{version}: {self.plugins}"


def config_roots(env: Mapping[str, str], platform: str) -> list[tuple[str, Path]]:
    """(kind, folder holding GIMP/<version>) for every packaging of `platform`."""
    if platform == "windows":
        home = env.get("USERPROFILE") or env.get("HOME")
        if not home and not env.get("APPDATA"):
            raise ValueError("neither APPDATA nor USERPROFILE is set: pass --gimp-dir")
    else:
        home = env.get("HOME")
        if not home:
            raise ValueError("HOME is not set: pass --gimp-dir")
    return LAYOUT.config_roots(env, platform, Path(home or "."))  # "." unused: APPDATA is set.


def find(env: Mapping[str, str], platform: str) -> list[GimpDir]:
    """Every GIMP 3 plug-in folder of this user whose GIMP version folder exists."""
    found = []
    for kind, root in config_roots(env, platform):
        for version in LAYOUT.VERSIONS:
            version_dir = root / "GIMP" / version
            if version_dir.is_dir():
                found.append(GimpDir(kind, version, version_dir / "plug-ins"))
    return found


def looked_in(env: Mapping[str, str], platform: str) -> list[Path]:
    """The version folders `find` checks, for the 'no GIMP 3 found' message."""
    return [root / "GIMP" / v for _, root in config_roots(env, platform) for v in LAYOUT.VERSIONS]
