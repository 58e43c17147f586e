"""Daemon logging: a rotating file in the user's state/log dir, and stderr.

Log dir: $GIMP_DRAGGAN_LOG_DIR, else $XDG_STATE_HOME/gimp-draggan/log (~/.local/state/...) on
Linux, ~/Library/Logs/gimp-draggan on macOS, %LOCALAPPDATA%\\gimp-draggan\\Logs on Windows.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LOG_ENV = "GIMP_DRAGGAN_LOG_DIR"
LOGGER = "gimp_draggan"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_dir() -> Path:
    override = os.environ.get(LOG_ENV)
    if override:
        return Path(override)
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Logs" / "gimp-draggan"
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / "gimp-draggan" / "Logs"
    state = os.environ.get("XDG_STATE_HOME") or str(home / ".local" / "state")
    return Path(state) / "gimp-draggan" / "log"


def setup_logging(name: str, verbose: bool = False) -> Path | None:
    """Log `gimp_draggan.*` to <log dir>/<name>.log (5 x 2 MB) and stderr; return the file."""
    root = logging.getLogger(LOGGER)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(stderr)
    path = log_dir() / f"{name}.log"
    root.propagate = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=2_000_000, backupCount=5, encoding="utf-8"
        )
    except OSError as exc:
        root.warning("cannot write the log file %s (%s); logging to stderr only", path, exc)
        return None
    file_handler.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(file_handler)
    return path


@dataclass
class _Tally:
    last: float  # When the last line for this reason was written.
    held: int = 0  # Refusals since then that wrote no line.


class RefusalLog:
    """Refused requests (too large, queue full, not the owner, failed handshakes) in the log
    with client and reason, so a flood shows in daemon.log and `doctor --bundle` without
    filling the disk: at most one line per reason per `every_s`; the ones in between are
    counted and reported as "N more" by the next line or by `flush`."""

    def __init__(
        self,
        logger: logging.Logger,
        every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.every_s = every_s
        self.clock = clock
        self._tallies: dict[str, _Tally] = {}

    def refused(self, reason: str, client: str, detail: str) -> None:
        now = self.clock()
        tally = self._tallies.get(reason)
        if tally is not None and now - tally.last < self.every_s:
            tally.held += 1
            return
        more = (
            f" ({tally.held} more {reason} refusals since the last line)"
            if tally and tally.held
            else ""
        )
        self.logger.warning("refused %s from client %s: %s%s", reason, client, detail, more)
        self._tallies[reason] = _Tally(now)

    def flush(self) -> None:
        """Report counts held back for longer than `every_s` (called by the daemon's beat)."""
        now = self.clock()
        for reason, tally in self._tallies.items():
            if tally.held and now - tally.last >= self.every_s:
                self.logger.warning(
                    "refused %d more %s request(s) in the last %.0f s",
                    tally.held,
                    reason,
                    now - tally.last,
                )
                self._tallies[reason] = _Tally(now)
