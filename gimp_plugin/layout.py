"""Where GIMP 3 looks for a user's plug-ins, and the names ours must have there.

One layout for the installer and `gimp-draggan doctor`: it lives with the plug-in (standard library
only) because that is the one code both have; the installer loads this file from the checkout (it
runs before anything is installed), the doctor imports it from the installed package.
GIMP 3.2 keeps the 3.0 folder name for its config when it migrates, but also reads its own, so both
versions are covered.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

PLUGIN_NAME = "gimp-draggan"  # GIMP runs plug-ins/NAME/NAME.py only: folder and file share it.
ENTRY = f"{PLUGIN_NAME}.py"
PACKAGE = "gimp_draggan_plugin"  # The helper modules' folder beside the entry file.
SHEBANG = "#!/usr/bin/env python3"  # The entry file's first line (LF line ends).
VERSIONS = ("3.0", "3.2")
FLATPAK_APP = "org.gimp.GIMP"


def config_roots(env: Mapping[str, str], platform: str, home: Path) -> list[tuple[str, Path]]:
    """(kind, folder holding GIMP/<version>) for every packaging of `platform` ("linux",
    "macos" or "windows") for the user whose home folder is `home`."""
    if platform == "windows":
        appdata = env.get("APPDATA")
        return [("windows", Path(appdata) if appdata else home / "AppData" / "Roaming")]
    if platform == "macos":
        return [("macos", home / "Library" / "Application Support")]
    xdg = env.get("XDG_CONFIG_HOME")
    return [
        ("native", Path(xdg) if xdg else home / ".config"),
        ("flatpak", home / ".var" / "app" / FLATPAK_APP / "config"),
        ("snap", home / "snap" / "gimp" / "current" / ".config"),
    ]
