"""The rows of a `gimp-draggan doctor` report and the facts every check reads.

A check never raises for what it finds: a problem is a row with status "fail" (it breaks the
product) or "warn" (it may), and every such row carries a `fix` a person can follow.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

STATUSES = ("ok", "info", "warn", "fail")


@dataclass(frozen=True)
class Check:
    name: str  # Short id, e.g. "gimp", "plugin", "daemon", "models", "torch", "disk".
    status: str  # One of STATUSES.
    detail: str  # What was found.
    fix: str = ""  # What to do; required unless status is ok or info.

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check {self.name}: status must be one of {STATUSES}")
        if self.status in ("warn", "fail") and not self.fix:
            raise ValueError(f"check {self.name}: a {self.status} needs a fix")


@dataclass(frozen=True)
class Context:
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    platform: str = ""  # "linux" | "macos" | "windows"; "" = this machine.
    sysroot: Path = Path("/")  # Prefix for system folders (/snap, /Applications, ...).
    daemon: str | None = None  # Address to ping; None = the plug-in's config or the default.
    gimp_dirs: tuple[Path, ...] = ()  # Extra plug-ins folders to inspect.
    gimp_console: tuple[str, ...] | None = None  # Command that runs GIMP headless; None = find it.
    ask_gimp: bool = True  # Start GIMP headless to ask whether the procedure registered.
    timeout_s: float = 60.0  # For each external program doctor runs.

    @property
    def os_name(self) -> str:
        if self.platform:
            return self.platform
        if sys.platform.startswith("win"):
            return "windows"
        return "macos" if sys.platform == "darwin" else "linux"

    @property
    def home(self) -> Path:
        key = "USERPROFILE" if self.os_name == "windows" else "HOME"
        return Path(self.env.get(key) or self.env.get("HOME") or Path.home())
