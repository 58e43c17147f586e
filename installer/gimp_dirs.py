"""Where GIMP 3 looks for a user's plug-ins, on each platform and packaging.

A GIMP version folder (e.g. `~/.config/GIMP/3.0`) exists once that GIMP has started; its `plug-ins`
folder is created here if it is missing. GIMP 3.2 keeps the 3.0 folder name for its config when
it migrates, but also reads its own, so both are covered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

VERSIONS = ("3.0", "3.2")
FLATPAK_APP = "org.gimp.GIMP"


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
        appdata = env.get("APPDATA")
        profile = env.get("USERPROFILE") or env.get("HOME")
        if not appdata and not profile:
            raise ValueError("neither APPDATA nor USERPROFILE is set: pass --gimp-dir")
        base = Path(appdata) if appdata else Path(str(profile)) / "AppData" / "Roaming"
        return [("windows", base)]
    home_text = env.get("HOME")
    if not home_text:
        raise ValueError("HOME is not set: pass --gimp-dir")
    home = Path(home_text)
    if platform == "macos":
        return [("macos", home / "Library" / "Application Support")]
    xdg = env.get("XDG_CONFIG_HOME")
    return [
        ("native", Path(xdg) if xdg else home / ".config"),
        ("flatpak", home / ".var" / "app" / FLATPAK_APP / "config"),
        ("snap", home / "snap" / "gimp" / "current" / ".config"),
    ]


def find(env: Mapping[str, str], platform: str) -> list[GimpDir]:
    """Every GIMP 3 plug-in folder of this user whose GIMP version folder exists."""
    found = []
    for kind, root in config_roots(env, platform):
        for version in VERSIONS:
            version_dir = root / "GIMP" / version
            if version_dir.is_dir():
                found.append(GimpDir(kind, version, version_dir / "plug-ins"))
    return found


def looked_in(env: Mapping[str, str], platform: str) -> list[Path]:
    """The version folders `find` checks, for the 'no GIMP 3 found' message."""
    return [root / "GIMP" / v for _, root in config_roots(env, platform) for v in VERSIONS]
