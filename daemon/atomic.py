"""Write files so a reader (or a crash, or a full disk) sees the old content or the new, never half.

Every file the daemon and the command line write goes through here: the bytes go to a temporary
file in the target's folder, are flushed and fsynced, and `os.replace` swaps it in only when it
is complete. A failed write removes the temporary file and leaves the old file byte-identical;
a full disk or quota is raised as `NoSpaceError`, whose text is the one line the CLI prints.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class WriteError(OSError):
    """A file could not be written; the old one (if any) is untouched. str() is one line."""

    def __str__(self) -> str:
        return str(self.strerror)


class NoSpaceError(WriteError):
    """The folder's file system is full (or over quota)."""

    def __init__(self, folder: Path, needed: int) -> None:
        mb = max(needed / 1e6, 0.1)
        super().__init__(errno.ENOSPC, f"no space left on {folder} (needs ~{mb:.1f} MB)")
        self.folder = folder
        self.needed = needed


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX; Windows has no directory handles to sync)."""
    if os.name == "nt":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def replacing(path: str | Path, mode: int | None = None, needed: int = 0) -> Iterator[IO[bytes]]:
    """A binary file to write `path`'s new content into; it replaces `path` on a clean exit.

    `mode` None keeps an existing file's permissions (a new one gets the umask's); a given
    mode (e.g. 0o600 for secrets) holds from the first byte. `needed` is the size to name in
    a NoSpaceError when the writer cannot say (default: what was written so far)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except OSError:
            mode = None
    tmp = folder / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
            0o666 if mode is None else mode,
        )
    except OSError as exc:
        raise _failure(exc, path, folder, needed) from None
    written = 0
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None and os.name != "nt":
                os.fchmod(f.fileno(), mode)
            yield f
            written = f.tell()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise _failure(exc, path, folder, max(needed, written)) from None
        raise
    _fsync_dir(folder)


def _failure(exc: OSError, path: Path, folder: Path, needed: int) -> WriteError:
    if exc.errno in NO_SPACE:
        return NoSpaceError(folder.resolve(), needed)
    return WriteError(exc.errno or errno.EIO, f"cannot write {path}: {exc.strerror or exc}")


def write_bytes(path: str | Path, data: bytes, mode: int | None = None) -> Path:
    """Replace `path` with `data` atomically; returns the path."""
    with replacing(path, mode, needed=len(data)) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | Path, text: str, mode: int | None = None) -> Path:
    """Replace `path` with UTF-8 `text` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"), mode)


def save_image(image: Any, path: str | Path, **options: Any) -> Path:
    """Encode a PIL image in memory (format from the suffix), then replace `path` with it, so a
    full disk costs neither the old file nor a half-written new one."""
    from PIL import Image

    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return write_bytes(path, buf.getvalue())
