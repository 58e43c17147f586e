"""The daemon's models as the dialog's Model dropdown offers them (pure; GIMP-free).

GIMP fixes a procedure's arguments when it registers the plug-in, long before any daemon is
asked, so the dropdown is built from a small table beside the plug-in,
`gimp-draggan-models.json`: the installer writes it (from `gimp-draggan models list --json`),
and every run rewrites it from the daemon's `hello` when it changed and touches the entry file,
so GIMP registers the plug-in anew at its next start and the dropdown follows the daemon.
The installer loads this module by path too (standard library only).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TABLE_NAME = "gimp-draggan-models.json"
TABLE_FORMAT = "gimp-draggan-plugin-models"
ENTRY_NAME = "gimp-draggan.py"
# The dropdown's value for "no model named": the daemon uses its default. Model names are
# `[a-z0-9._-]` registry names or file stems, so a daemon could in theory offer this name; it
# would then be reachable only as the default.
DEFAULT_CHOICE = "daemon-default"


@dataclass(frozen=True)
class ModelInfo:
    """One model of the daemon, as `hello` lists it (docs/PROTOCOL.md)."""

    name: str
    resolution: int | None = None
    domain: str = ""
    description: str = ""
    licence: str = ""  # the full terms' name; "" = not known (an operator's own file)
    licence_short: str = ""  # a few words for the dropdown
    download_bytes: int | None = None  # what a download fetches (exact or estimated)
    cached: bool = False
    downloadable: bool = False
    damaged: str = ""  # the daemon's sentence for a damaged file, with the fix

    @property
    def offer_download(self) -> bool:
        """Not on the daemon's disk, but the daemon can fetch it."""
        return not self.cached and self.downloadable


@dataclass(frozen=True)
class Choice:
    """One dropdown entry: the value (`nick`), what the person reads, its tooltip."""

    nick: str
    label: str
    help: str


def from_rows(rows: Iterable[Mapping[str, Any]]) -> list[ModelInfo]:
    """`hello`/`models` rows (or `models list --json` rows: only generators) -> ModelInfo; rows
    without a name are skipped, unknown keys ignored (replies only ever gain keys)."""
    found = []
    for row in rows:
        name = row.get("name")
        if not isinstance(name, str) or not name or row.get("kind", "generator") != "generator":
            continue
        resolution = row.get("resolution")
        size = row.get("download_bytes")
        found.append(
            ModelInfo(
                name=name,
                resolution=resolution if isinstance(resolution, int) else None,
                domain=str(row.get("domain") or ""),
                description=str(row.get("description") or ""),
                licence=str(row.get("licence") or ""),
                licence_short=str(row.get("licence_short") or ""),
                download_bytes=size if isinstance(size, int) else None,
                cached=bool(row.get("cached")),
                downloadable=bool(row.get("downloadable")),
                damaged=str(row.get("damaged") or ""),
            )
        )
    return found


def table_json(models: Iterable[ModelInfo]) -> str:
    body = {"format": TABLE_FORMAT, "models": [asdict(m) for m in models]}
    return json.dumps(body, indent=2, sort_keys=True) + "\n"


def read_table(plugin_dir: Path) -> list[ModelInfo]:
    """The table beside the plug-in; [] when absent or unreadable (registration must not fail:
    the dropdown then offers the daemon's default only, until the first run writes it)."""
    try:
        doc = json.loads((plugin_dir / TABLE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(doc, dict) or doc.get("format") != TABLE_FORMAT:
        return []
    rows = doc.get("models")
    return from_rows(r for r in rows if isinstance(r, dict)) if isinstance(rows, list) else []


def sync(plugin_dir: Path, hello: Mapping[str, Any]) -> bool:
    """Rewrite the table from the daemon's `hello` when it differs, and touch the entry file so
    GIMP registers the plug-in (and its dropdown) anew at its next start. True when rewritten.
    A folder the plug-in may not write (a system-wide install) is left as it is."""
    rows = hello.get("models")
    if not isinstance(rows, list):
        return False
    text = table_json(from_rows(r for r in rows if isinstance(r, dict)))
    path = plugin_dir / TABLE_NAME
    try:
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return False
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        entry = plugin_dir / ENTRY_NAME
        if entry.is_file():
            os.utime(entry)
    except OSError:
        return False
    return True


def size_text(size: int | None) -> str:
    if size is None:
        return "size unknown"
    if size >= 10**9:
        return f"{size / 10**9:.1f} GB"
    return f"{max(1, round(size / 10**6))} MB"


def _what(model: ModelInfo) -> str:
    """'512 px human faces (NVIDIA, non-commercial)'."""
    words = " ".join(
        filter(None, [f"{model.resolution} px" if model.resolution else "", model.domain])
    )
    terms = f"({model.licence_short})" if model.licence_short else ""
    return " ".join(filter(None, [words, terms]))


def label(model: ModelInfo) -> str:
    """The dropdown's line: downloaded 'NAME — 1024 px dogs (…)'; else 'NAME — download (N MB)
    · …' when the daemon can fetch it, or 'NAME — not downloaded · …'."""
    if model.damaged:
        state = "damaged: download it again"
    elif model.cached:
        state = ""
    elif model.downloadable:
        state = f"download ({size_text(model.download_bytes)})"
    else:
        state = "not downloaded (fetch it by hand)"
    what = _what(model)
    tail = " \u00b7 ".join(filter(None, [state, what]))
    return f"{model.name} \u2014 {tail}" if tail else model.name


def help_text(model: ModelInfo) -> str:
    parts = [(model.description or model.domain or model.name).rstrip(".") + "."]
    if model.licence:
        parts.append(f"Licence: {model.licence}.")
    if model.damaged:
        parts.append(model.damaged)
    elif model.offer_download:
        parts.append(
            f"Not downloaded yet: picking it downloads {size_text(model.download_bytes)} "
            "first (asked before it starts; resumes if interrupted)."
        )
    return " ".join(parts)


def choices(models: Iterable[ModelInfo]) -> list[Choice]:
    """The dropdown: the daemon's default first, then downloaded models, then the others (each
    group in the daemon's order)."""
    listed = list(models)
    ordered = [m for m in listed if m.cached] + [m for m in listed if not m.cached]
    first = Choice(
        DEFAULT_CHOICE,
        "The daemon's default",
        "Whatever model the daemon uses when none is named (serve --model, else the first "
        "downloaded one)",
    )
    return [first, *(Choice(m.name, label(m), help_text(m)) for m in ordered)]


def model_name(choice: str) -> str:
    """The dropdown's value -> the request's model name ("" = the daemon's default)."""
    choice = (choice or "").strip()
    return "" if choice == DEFAULT_CHOICE else choice


def find(hello: Mapping[str, Any], name: str) -> ModelInfo | None:
    """The model `name` as the daemon's `hello` lists it."""
    rows = hello.get("models")
    if not isinstance(rows, list):
        return None
    for model in from_rows(r for r in rows if isinstance(r, dict)):
        if model.name == name:
            return model
    return None


def download_question(model: ModelInfo) -> str:
    """Asked before a download starts."""
    terms = f"\n\nLicence: {model.licence}." if model.licence else ""
    return (
        f"The model {model.name} ({_what(model) or model.description}) is not downloaded "
        f"yet.\n\nDownload it now ({size_text(model.download_bytes)})? The download shows in "
        "the progress bar; Cancel stops it, and the next try resumes where it stopped."
        f"{terms}"
    )
