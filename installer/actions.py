"""What the installer does to a machine, as small steps that `--dry-run` can print instead of run.

Every change goes through `Actions`: files are written only when their content differs (so a re-run
says "unchanged" and touches nothing), commands are echoed before they run, and each step adds one
line to `done`, which the installer prints at the end. Standard library only: this runs in whatever
Python the user has, before any venv exists.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class InstallError(RuntimeError):
    """A step failed; the message says what to do."""


def replace_file(path: Path, data: bytes, mode: int) -> None:
    """Write a temporary file beside `path` (mode set before any byte), flush and fsync it, then
    swap it in: a full disk or a crash leaves the old file as it was (the daemon's
    `gimp_draggan.atomic` does the same; the installer runs before that package exists)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), mode)
        with os.fdopen(fd, "wb") as f:
            if os.name != "nt":
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise InstallError(
                f"no space left on {path.parent} (needs ~"
                f"{max(len(data) / 1e6, 0.1):.1f} MB); free some space and run "
                "the installer again"
            ) from None
        raise InstallError(f"cannot write {path}: {exc.strerror or exc}") from None


def _quote(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


@dataclass
class Actions:
    dry_run: bool = False
    say: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    done: list[str] = field(default_factory=list)

    def _record(self, line: str) -> None:
        line = f"would {line}" if self.dry_run else line
        self.done.append(line)
        self.say(line)

    def write_file(self, path: Path, text: str, mode: int = 0o644, encoding: str = "utf-8") -> bool:
        """Write `text` unless the file already holds it; returns True when something changed."""
        data = text.encode(encoding)
        if path.is_file() and path.read_bytes() == data:
            if (path.stat().st_mode & 0o777) != mode and not self.dry_run:
                os.chmod(path, mode)
            self.say(f"unchanged {path}")
            return False
        verb = "update" if path.exists() else "create"
        self._record(f"{verb} {path}")
        if not self.dry_run:
            path.parent.mkdir(parents=True, exist_ok=True)
            replace_file(path, data, mode)
        return True

    def remove(self, path: Path) -> bool:
        """Delete a file or a whole folder if present; returns True when something was there."""
        if not path.exists() and not path.is_symlink():
            return False
        self._record(f"remove {path}")
        if not self.dry_run:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        return True

    def run(
        self, argv: Sequence[str], why: str, check: bool = True, env: dict[str, str] | None = None
    ) -> bool:
        """Run a command (echoed first); a failure raises InstallError unless `check` is False."""
        self._record(f"run {_quote(argv)}  # {why}")
        if self.dry_run:
            return True
        try:
            proc = subprocess.run(list(argv), env=env, check=False)
        except OSError as exc:
            if check:
                raise InstallError(f"could not run {argv[0]}: {exc}") from exc
            self.say(f"  (skipped: {exc})")
            return False
        if proc.returncode != 0:
            if check:
                raise InstallError(
                    f"`{_quote(argv)}` failed with exit code {proc.returncode} while trying to "
                    f"{why}; read its output above, fix the cause and re-run the installer "
                    "(re-running is safe)"
                )
            self.say(f"  (exit code {proc.returncode}, ignored)")
            return False
        return True


def python_in_venv(venv: Path, platform: str) -> Path:
    """The interpreter of a venv on `platform` ("linux" | "macos" | "windows")."""
    if platform == "windows":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def current_platform() -> str:
    """This machine as the installer names platforms."""
    if sys.platform.startswith("win"):
        return "windows"
    if sys.platform == "darwin":
        return "macos"
    return "linux"
