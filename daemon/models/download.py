"""Resumable, verified downloads with urllib.

Bytes go to ``<dest>.part``; an interrupted transfer continues from there with an HTTP ``Range``
request (also in a later run). Only when the size and SHA-256 match is the file renamed to
``dest``, so a half-written or wrong file is never used. A file whose hash disagrees is removed.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from gimp_draggan.atomic import NO_SPACE
from gimp_draggan.models import registry
from gimp_draggan.terminal import ProgressBar

CHUNK = 1 << 20
USER_AGENT = "gimp-draggan-downloader/1"


class DownloadError(RuntimeError):
    """A download that failed; the message says why and what to do."""


class DownloadStopped(DownloadError):
    """The caller asked the download to stop (a cancelled job); the part file stays."""


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    sha256: str
    url: str


def sha256_file(path: str | Path, chunk: int = CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _fmt_eta(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class DownloadMeter:
    """A download's line on the shared `ProgressBar`: bytes, percent, speed and time left."""

    def __init__(self, name: str, stream: TextIO | None = None, interval: float = 0.2) -> None:
        self.name = name
        self.bar = ProgressBar(stream, interval=interval, count=format_bytes)
        self._t0 = time.monotonic()
        self._start_bytes: int | None = None

    def update(self, done: int, total: int | None, final: bool = False) -> None:
        now = time.monotonic()
        if self._start_bytes is None:
            self._start_bytes, self._t0 = done, now
        speed = (done - self._start_bytes) / max(now - self._t0, 1e-6)
        parts = [f"{100.0 * done / total:5.1f}%"] if total else []
        parts.append(f"{format_bytes(speed)}/s")
        if total and speed > 0 and done < total:
            parts.append(f"ETA {_fmt_eta((total - done) / speed)}")
        self.bar.update(self.name, done, total, "  ".join(parts))
        if final:
            self.bar.end()


def _network_error(url: str, e: object) -> DownloadError:
    host = urllib.parse.urlparse(url).hostname
    return DownloadError(
        f"cannot reach {host} ({e}); check the network connection or proxy settings and run the "
        "same command again (it resumes where it stopped)"
    )


def _no_space(directory: Path, needed: int, dest: Path) -> DownloadError:
    return DownloadError(
        f"no space left on {directory} (needs ~{max(needed / 1e6, 0.1):.0f} MB more for "
        f"{dest.name}); free some space and run the same command again (it resumes), or choose "
        "another cache (--cache-dir or $GIMP_DRAGGAN_CACHE)"
    )


def _check_space(directory: Path, needed: int, dest: Path) -> None:
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise DownloadError(
            f"not enough disk space: {format_bytes(free)} free; "
            f"{_no_space(directory, needed, dest)}"
        )


def _fetch_once(
    url: str,
    part: Path,
    size: int | None,
    progress: DownloadMeter | None,
    timeout: float,
    should_stop: Callable[[], bool],
) -> None:
    """Append the rest of ``url`` to ``part`` (Range from its current size). Raises on drops,
    and `DownloadStopped` between blocks once ``should_stop()`` (the part file stays, to resume)."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is not None and have == size:
        return
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # asked past the end: the part file is complete (or too long)
            return
        raise DownloadError(f"HTTP {e.code} {e.reason} from {url}") from None
    with resp:
        if have and resp.status != 206:
            have = 0  # the server ignored Range: start over
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else size
        if size is not None and total is not None and total != size:
            raise DownloadError(
                f"{url} serves {total} bytes, but the registry pins {size}; refusing the file"
            )
        if total is not None:
            _check_space(part.parent, total - have, part)
        with open(part, "ab" if have else "wb") as f:
            done = have
            while True:
                if should_stop():
                    f.flush()
                    raise DownloadStopped(f"download of {part.name} stopped at {done} bytes")
                block = resp.read(CHUNK)
                if not block:
                    break
                f.write(block)
                done += len(block)
                if progress:
                    progress.update(done, total)
            f.flush()
            os.fsync(f.fileno())  # On disk before it can be renamed into place.
        if total is not None and done < total:
            raise http.client.IncompleteRead(b"", total - done)


def _transfer(
    url: str,
    part: Path,
    size: int | None,
    bar: DownloadMeter | None,
    timeout: float,
    retries: int,
    should_stop: Callable[[], bool],
) -> str | None:
    """Fetch ``url`` into ``part``, resuming after drops; None on success, else the reason."""
    attempt = 0
    while True:
        try:
            _fetch_once(url, part, size, bar, timeout, should_stop)
            return None
        except DownloadStopped:
            raise
        except (http.client.IncompleteRead, ConnectionError, TimeoutError) as e:
            attempt += 1
            if attempt > retries:
                return f"{url}: the connection kept dropping ({type(e).__name__}: {e})"
            time.sleep(min(0.1 * 2**attempt, 5.0))
        except urllib.error.URLError as e:
            return str(_network_error(url, e.reason))
        except DownloadError as e:
            return str(e)
        except OSError as e:
            if e.errno in NO_SPACE:
                left = (size or 0) - (part.stat().st_size if part.exists() else 0)
                raise _no_space(part.parent, max(left, 0), part) from None
            raise DownloadError(f"cannot write {part}: {e}") from None


def download(
    urls: Sequence[str],
    dest: str | Path,
    sha256: str | None = None,
    size: int | None = None,
    hash_source: str | None = None,
    show_progress: bool = True,
    retries: int = 5,
    timeout: float = 30.0,
    stream: TextIO | None = None,
    expect_bytes: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Downloaded:
    """Download ``dest`` from the first of ``urls`` that gives a verified file.

    ``sha256``/``size`` (None = unknown) are checked before the rename; ``hash_source`` names where
    the pinned hash comes from, for the mismatch message. Free space is checked against ``size``
    (else the estimate ``expect_bytes``) before the network is touched. Connection drops are
    resumed up to ``retries`` times per URL. ``should_stop`` is asked between blocks: once it says
    yes the download raises `DownloadStopped`, keeping the part file for the next try to resume.
    """
    if not urls:
        raise DownloadError(f"no download URL for {Path(dest).name}")
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    problems: list[str] = []
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create the cache folder {dest.parent}: {e}") from None
    expected = size if size is not None else expect_bytes
    if expected is not None:
        _check_space(dest.parent, expected - (part.stat().st_size if part.exists() else 0), dest)
    for url in urls:
        bar = DownloadMeter(dest.name, stream) if show_progress else None
        error = _transfer(url, part, size, bar, timeout, retries, should_stop)
        if error:
            problems.append(error)
            continue
        got_size = part.stat().st_size
        if bar:
            bar.update(got_size, size or got_size, final=True)
        if size is not None and got_size != size:
            part.unlink()
            problems.append(f"{url}: got {got_size} bytes, expected {size}")
            continue
        digest = sha256_file(part)
        if sha256 is not None and digest != sha256:
            part.unlink()
            problems.append(
                f"SHA-256 mismatch: the file from {url} hashes to {digest}, but the pinned "
                f"hash is {sha256} (from {hash_source or 'the model table'}); the bad file was "
                "removed"
            )
            continue
        os.replace(part, dest)
        return Downloaded(path=dest, size=got_size, sha256=digest, url=url)
    raise DownloadError(f"could not download {dest.name}:\n  " + "\n  ".join(problems))


def fetch_model(
    name: str,
    cache: str | Path | None = None,
    show_progress: bool = True,
    stream: TextIO | None = None,
) -> Path:
    """Path of registry model ``name``, downloading and verifying it first if it is not cached."""
    entry = registry.get_entry(name)
    if entry.package_path or registry.is_cached(name, cache) or not entry.downloadable:
        return registry.resolve(name, cache)
    return download(
        entry.urls,
        registry.model_path(entry, cache),
        sha256=entry.sha256,
        size=entry.size_bytes,
        hash_source=entry.sha256_source,
        show_progress=show_progress,
        stream=stream,
        expect_bytes=entry.expected_bytes,
    ).path


@dataclass(frozen=True)
class Verification:
    """The state of one model file on disk against the table's pinned size and hash."""

    name: str
    path: Path
    size: int
    sha256: str
    pinned: bool  # The table pins a hash to compare with.
    problems: tuple[str, ...]  # Empty = good.


def verify_model(name: str, cache: str | Path | None = None) -> Verification | None:
    """Hash the model's file (None when it is not present)."""
    entry = registry.get_entry(name)
    path = registry.model_path(entry, cache)
    if not path.is_file():
        return None
    size, digest = path.stat().st_size, sha256_file(path)
    problems = []
    if entry.size_bytes is not None and size != entry.size_bytes:
        problems.append(f"size {size} != pinned {entry.size_bytes}")
    if entry.sha256 is not None and digest != entry.sha256:
        problems.append(f"sha256 {digest} != pinned {entry.sha256} (from {entry.sha256_source})")
    return Verification(name, path, size, digest, entry.sha256 is not None, tuple(problems))
