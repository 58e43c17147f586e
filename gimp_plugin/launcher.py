"""Start a local daemon for the plug-in and wait until it answers `hello` (GIMP-free).

Only for loopback addresses and only when the person agreed (interactive runs). The daemon is
started in its own session with its output in a log file, so it outlives this plug-in run and
GIMP's Cancel (which kills the plug-in) does not take it down.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


class LaunchError(RuntimeError):
    """The daemon could not be started or did not come up; the message says what to do."""


def log_path() -> Path:
    return Path(tempfile.gettempdir()) / "gimp-draggan-serve.log"


def start(argv: list[str], log: Path | None = None) -> subprocess.Popen:
    """Start `argv` detached from GIMP; stdout/stderr go to `log`."""
    log = log or log_path()
    kwargs: dict = {}
    if sys.platform.startswith("win"):
        kwargs["creationflags"] = (
            subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
            | subprocess.CREATE_NO_WINDOW
        )  # type: ignore[attr-defined]
    else:
        kwargs["start_new_session"] = True
    try:
        with open(log, "ab") as out:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                close_fds=True,
                env=dict(os.environ),
                **kwargs,
            )
    except OSError as exc:
        raise LaunchError(
            f"could not start `{' '.join(argv)}`: {exc}; start the daemon in a "
            "terminal or re-run the installer"
        ) from None


def wait_ready(
    proc: subprocess.Popen,
    ping: Callable[[], bool],
    timeout_s: float,
    log: Path | None = None,
    poll_s: float = 0.5,
    on_wait: Callable[[float], None] | None = None,
) -> None:
    """Call `ping` until it returns True; fail early if the daemon exits, late after `timeout_s`."""
    log = log or log_path()
    start_time = time.monotonic()
    while True:
        if ping():
            return
        code = proc.poll()
        if code is not None:
            raise LaunchError(
                f"the daemon exited at once (exit code {code}); its output is in {log}"
            )
        waited = time.monotonic() - start_time
        if waited > timeout_s:
            raise LaunchError(
                f"the daemon did not answer within {timeout_s:g} s; its output is in {log}"
            )
        if on_wait is not None:
            on_wait(waited)
        time.sleep(poll_s)
