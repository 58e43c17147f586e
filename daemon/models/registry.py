"""The model table (``models.json``, data) and where downloaded files live.

Cache: ``$GIMP_DRAGGAN_CACHE`` or ``--cache-dir`` if given, else the platform's user cache dir
(``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on
Windows) + ``gimp-draggan``. Downloaded files sit in ``<cache>/models/<filename>`` and only land
there once verified (see ``download``), so "the file exists" means "cached".
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gimp_draggan.models.modelcheck import damaged_sentence, problem

CACHE_ENV = "GIMP_DRAGGAN_CACHE"
APP_DIR = "gimp-draggan"
TABLE_FORMAT = "gimp-draggan-models"
_UNITS = {"k": 10**3, "M": 10**6, "G": 10**9}


class RegistryError(ValueError):
    """Unknown model, model not downloaded, or a broken table; the message says what to do."""


@dataclass(frozen=True)
class ModelEntry:
    """One row of ``models.json``."""

    name: str
    kind: str  # "generator" or "lpips-backbone"
    description: str
    domain: str
    resolution: int | None  # None = read from the file (embedded) or not an image model
    num_ws: int | None
    format: str  # stylegan2-pkl, tensorflow-pkl, gimp-draggan, torchvision-pth
    filename: str
    urls: tuple[str, ...]
    size_bytes: int | None  # None = no source states the exact size
    sha256: str | None  # None = no trustworthy pinned hash
    sha256_source: str | None  # Where the pinned hash comes from (named in mismatch errors).
    licence: str
    package_path: str | None = None  # Shipped inside the package instead of downloaded.
    manual_url: str | None = None  # A page to fetch the file by hand (no direct link).
    approx_size: str | None = None
    alignment: str | None = None  # How crops are framed: "ffhq", "embedded", None (align.py).
    licence_short: str = ""  # A few words for a model picker ("NVIDIA, non-commercial").
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def downloadable(self) -> bool:
        return bool(self.urls)

    @property
    def expected_bytes(self) -> int | None:
        """The pinned size, else the largest figure of ``approx_size`` ("~364-382 MB"): what
        a download needs free before it starts."""
        if self.size_bytes is not None:
            return self.size_bytes
        found = re.findall(r"([0-9.]+)\s*(?=(?:-[0-9.]+\s*)?([kMG])B)", self.approx_size or "")
        if not found:
            return None
        number, unit = max(found, key=lambda m: float(m[0]) * _UNITS[m[1]])
        return int(float(number) * _UNITS[unit])


_FIELDS = set(ModelEntry.__dataclass_fields__) - {"extra"}


def _entry(row: dict[str, Any]) -> ModelEntry:
    missing = {"name", "kind", "filename", "licence"} - set(row)
    if missing:
        raise RegistryError(f"models.json: entry {row.get('name')!r} lacks {sorted(missing)}")
    sha = row.get("sha256")
    if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        raise RegistryError(f"models.json: {row['name']}: sha256 must be 64 lowercase hex digits")
    alignment = row.get("alignment")
    if alignment is not None and not isinstance(alignment, str):
        raise RegistryError(
            f"models.json: {row['name']}: alignment must be a word such as "
            f'"ffhq", got {alignment!r}'
        )
    known = {k: v for k, v in row.items() if k in _FIELDS}
    known["urls"] = tuple(row.get("urls") or ())
    for key in ("description", "domain", "format"):
        known.setdefault(key, "")
    for key in ("resolution", "num_ws", "size_bytes", "sha256", "sha256_source"):
        known.setdefault(key, None)
    return ModelEntry(**known, extra={k: v for k, v in row.items() if k not in _FIELDS})


def load_table(path: str | Path | None = None) -> dict[str, ModelEntry]:
    """Read the model table (the packaged ``models.json`` unless ``path``), keyed by name."""
    try:
        if path is None:
            text = resources.files("gimp_draggan.models").joinpath("models.json").read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        doc = json.loads(text)
    except (OSError, json.JSONDecodeError) as e:
        raise RegistryError(f"cannot read the model table: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != TABLE_FORMAT:
        raise RegistryError("the model table is not a gimp-draggan-models document")
    table: dict[str, ModelEntry] = {}
    for row in doc.get("models", []):
        entry = _entry(row)
        if entry.name in table:
            raise RegistryError(f"models.json: duplicate model name {entry.name!r}")
        table[entry.name] = entry
    return table


def get_entry(name: str) -> ModelEntry:
    table = load_table()
    if name not in table:
        raise RegistryError(f"unknown model {name!r}; known models: {', '.join(table)}")
    return table[name]


def default_cache_dir() -> Path:
    """The platform's user cache dir for this app (ignores the override env var)."""
    home = Path.home()
    if sys.platform == "darwin":
        base = home / "Library" / "Caches"
    elif sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache")
    return base / APP_DIR


def cache_dir(override: str | Path | None = None) -> Path:
    """``override`` (the --cache-dir flag), else ``$GIMP_DRAGGAN_CACHE``, else the platform's."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return default_cache_dir()


def model_path(entry: ModelEntry, cache: str | Path | None = None) -> Path:
    """Where the entry's file is (package entries) or will be once downloaded."""
    if entry.package_path:
        return Path(str(resources.files("gimp_draggan").joinpath(entry.package_path)))
    return cache_dir(cache) / "models" / entry.filename


def damage(entry: ModelEntry, cache: str | Path | None = None) -> str | None:
    """The sentence saying the entry's file is damaged and how to fix it, or None when it is
    absent or looks whole (`modelcheck`: pinned size and a header look, no full load)."""
    path = model_path(entry, cache)
    found = problem(path, entry.size_bytes)
    if found is None:
        return None
    return damaged_sentence(path, found, None if entry.package_path else entry.name)


def entry_cached(entry: ModelEntry, cache: str | Path | None = None) -> bool:
    """True when the entry's file is present and looks whole (see `damage`)."""
    return model_path(entry, cache).is_file() and damage(entry, cache) is None


def is_cached(name: str, cache: str | Path | None = None) -> bool:
    """True when the model's file is present and looks whole (see `damage`)."""
    return entry_cached(get_entry(name), cache)


def resolve(name_or_path: str | Path, cache: str | Path | None = None) -> Path:
    """A registry name or a file path -> the path of a file that exists.

    Raises RegistryError that says how to get the file when it is missing.
    """
    text = str(name_or_path)
    table = load_table()
    if text in table:
        return entry_file(table[text], cache)
    return existing_file(text, table)


def entry_file(entry: ModelEntry, cache: str | Path | None = None) -> Path:
    """The entry's file, present and whole by the look; RegistryError saying how to get it."""
    path = model_path(entry, cache)
    broken = damage(entry, cache)
    if broken is not None:
        raise RegistryError(broken + (" (reinstall gimp-draggan)" if entry.package_path else ""))
    if entry.package_path:
        if not path.is_file():
            raise RegistryError(
                f"model {entry.name!r} should ship inside the package at {path}, but this "
                "install lacks it; reinstall gimp-draggan"
            )
        return path
    if path.is_file():
        return path
    if entry.downloadable:
        how = f"run `gimp-draggan models download {entry.name}`"
    else:
        how = f"fetch it by hand from {entry.manual_url} and save it as {path}"
    raise RegistryError(f"model {entry.name!r} is not downloaded yet: {how}")


def existing_file(text: str, known: Iterable[str]) -> Path:
    """``text`` as the path of a file that exists; RegistryError naming the ``known`` models."""
    path = Path(text).expanduser()
    if path.is_file():
        return path
    raise RegistryError(
        f"{text!r} is neither a file nor a known model; known models: {', '.join(known)} "
        "(see `gimp-draggan models list`)"
    )
