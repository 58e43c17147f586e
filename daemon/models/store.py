"""One model store: a model's name -> its file -> its generator on a device, and what the model
calls for (the crop framing, the drag's step size).

Names: the model table's generators (the packaged ``models.json``, or the table a daemon was given)
and the files an operator named (`serve --model FILE`, listed under their stem; they win over a
table name). A daemon's names come from the wire, so its store never opens a path it was not
given; the in-process command line's store (``any_file=True``) also takes a file path for a name,
as `registry.resolve` does.

Damage: a file is checked by a cheap look (`modelcheck`) before it is offered as cached; a file
that passed the look but failed to load is remembered as damaged (`loaded_badly`) until it
changes.

Loaded generators (on their device, in eval mode, without gradients) and the inversion's
perceptual loss are kept in a small LRU keyed by (file, device); aligners one per name (they
remember the framings of recent layers).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gimp_draggan.draggan import checkpoint
from gimp_draggan.draggan.lpips import load_perceptual
from gimp_draggan.edit.align import Aligner
from gimp_draggan.edit.aligners import aligner_for
from gimp_draggan.models import registry
from gimp_draggan.models.modelcheck import damaged_sentence, problem

PAPER_LR = 2e-3  # The drag's Adam step for models that name none (the paper's).
DEFAULT_LOADED = 3  # Loaded models / losses kept (e.g. two generators + LPIPS).


@dataclass(frozen=True)
class LoadedGenerator:
    path: Path  # The file it was loaded from.
    G: Any  # The generator on the device, eval mode, no gradients.


class ModelStore:
    """Names -> files -> loaded generators; names -> aligners and drag step sizes."""

    def __init__(
        self,
        files: dict[str, Path] | None = None,
        cache: str | None = None,
        table: str | None = None,
        *,
        any_file: bool = False,
        max_loaded: int = DEFAULT_LOADED,
    ) -> None:
        if max_loaded < 1:
            raise ValueError("max_loaded must be >= 1")
        self.files = dict(files or {})
        self.cache = cache  # Model cache dir (`--cache-dir`); None = the default.
        self.table_file = table  # Model table file; None = the packaged models.json.
        self.any_file = any_file
        self.max_loaded = max_loaded
        self._failed: dict[str, tuple[tuple[int, int] | None, str]] = {}  # path -> (stamp, why)
        self._aligners: dict[str, Aligner] = {}
        self._loaded: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    # ---- names and files ------------------------------------------------------------------
    def table(self) -> dict[str, registry.ModelEntry]:
        """The table's generators by name (read each time: the file may be edited)."""
        entries = registry.load_table(self.table_file).items()
        return {n: e for n, e in entries if e.kind == "generator"}

    def names(self) -> list[str]:
        """Every model name: the operator's files, then the table's."""
        return [*self.files, *self.table()]

    def knows(self, name: str) -> bool:
        return name in self.files or name in self.table()

    def entry(self, name: str) -> registry.ModelEntry | None:
        """The table entry behind ``name``; None for an operator's file or a path."""
        return None if name in self.files else self.table().get(name)

    def path(self, name: str) -> Path:
        """Where ``name``'s file is or will be (no checks): the operator's file, or the table
        entry's in this cache."""
        if name in self.files:
            return self.files[name]
        return registry.model_path(self.table()[name], self.cache)

    def file(self, name: str) -> Path:
        """``name``'s file, present and whole by the look; RegistryError saying how to get it."""
        if name in self.files:
            return self.files[name]
        entry = self.table().get(name)
        if entry is not None:
            return registry.entry_file(entry, self.cache)
        if self.any_file:
            return registry.existing_file(name, self.names())
        raise registry.RegistryError(f"no model named {name!r}; known: {', '.join(self.names())}")

    # ---- damage ---------------------------------------------------------------------------
    def damage(self, name: str) -> str | None:
        """Why ``name``'s file cannot be used, with the fix; None when it looks whole. A load
        that failed is remembered until the file changes; else the cheap look."""
        path = self.path(name)
        stamp, why = self._failed.get(str(path), (None, None))
        if why is not None and stamp == _stamp(path):
            return why
        if name in self.files:
            found = problem(path)
            return None if found is None else damaged_sentence(path, found, None)
        return registry.damage(self.table()[name], self.cache)

    def cached(self, name: str) -> bool:
        """The model's file is present and looks whole (and did not fail to load)."""
        return self.path(name).is_file() and self.damage(name) is None

    def first_cached(self) -> str | None:
        """The first table model whose file is cached (a daemon's default without one named)."""
        return next((name for name in self.table() if self.cached(name)), None)

    def loaded_badly(self, name: str, exc: Exception) -> str:
        """Remember that ``name``'s file failed to load with ``exc`` (until it changes); the
        sentence saying so, with the fix."""
        path = self.path(name)
        why = str(exc).removeprefix(f"{path}: ")
        sentence = damaged_sentence(path, why, None if name in self.files else name)
        self._failed[str(path)] = (_stamp(path), sentence)
        return sentence

    def listing(self) -> list[dict[str, Any]]:
        """`hello`'s model rows: name, resolution, description, domain, downloadable, licence
        (full and short), download_bytes (exact or estimated), cached and, for a damaged file,
        the sentence saying why."""
        rows = [
            {
                "name": n,
                "resolution": _file_resolution(p),
                "description": f"file {p.name}",
                "domain": "",
                "downloadable": False,
                "licence": "",  # the operator's own file: its terms are theirs to know
                "licence_short": "",
                "download_bytes": None,
            }
            for n, p in self.files.items()
        ]
        rows += [
            {
                "name": n,
                "resolution": e.resolution,
                "description": e.description,
                "domain": e.domain,
                "downloadable": e.downloadable,
                "licence": e.licence,
                "licence_short": e.licence_short,
                "download_bytes": e.expected_bytes,
            }
            for n, e in self.table().items()
        ]
        for row in rows:
            name = str(row["name"])
            broken = self.damage(name)
            row["cached"] = broken is None and self.path(name).is_file()
            if broken is not None:
                row["damaged"] = broken
        return rows

    # ---- what a model calls for -----------------------------------------------------------
    def aligner(self, name: str) -> Aligner:
        """How ``name`` wants its crops framed: its table entry's ``"alignment"``; an operator's
        file or a path gets the plain square. One per name, kept."""
        with self._lock:
            if name not in self._aligners:
                entry = self.entry(name)
                self._aligners[name] = aligner_for(None if entry is None else entry.alignment)
            return self._aligners[name]

    def drag_lr(self, name: str) -> float:
        """The drag step size ``name`` calls for: its table entry's ``"drag_lr"`` (the 64 px
        embedded model stalls at the paper's 2e-3: 5e-3 reaches targets it does not), else the
        paper's."""
        entry = self.entry(name)
        value = None if entry is None else entry.extra.get("drag_lr")
        return float(value) if isinstance(value, int | float) else PAPER_LR

    # ---- loaded models --------------------------------------------------------------------
    def load(self, name: str, device: str) -> LoadedGenerator:
        """``name``'s generator on ``device``, loaded once (`checkpoint.CheckpointError` when the
        file does not load: see `loaded_badly`)."""
        path = self.file(name)
        G = self._kept(
            ("generator", str(path), device),
            lambda: checkpoint.load_generator(path).to(device).eval().requires_grad_(False),
        )
        return LoadedGenerator(path, G)

    def loss(self, device: str) -> Any:
        """The inversion's perceptual loss on ``device``, loaded once."""
        return self._kept(("loss", "", device), lambda: load_perceptual().loss.to(device))

    def _kept(self, key: tuple[str, str, str], load: Callable[[], Any]) -> Any:
        with self._lock:
            value = self._loaded.get(key)
            if value is not None:
                self._loaded.move_to_end(key)
                return value
        value = load()
        with self._lock:
            self._loaded[key] = value
            while len(self._loaded) > self.max_loaded:
                self._loaded.popitem(last=False)
        return value

    def clear(self) -> None:
        """Drop the loaded models (after running out of memory)."""
        with self._lock:
            self._loaded.clear()


def _stamp(path: Path) -> tuple[int, int] | None:
    """(size, mtime) of a file, to notice that it was replaced; None when it is gone."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _file_resolution(path: Path) -> int | None:
    """Resolution of a project-format checkpoint from its JSON (cheap); None for pickles."""
    if path.suffix != ".safetensors":
        return None
    try:
        return int(checkpoint.read_config(path)[0].img_resolution)
    except (OSError, ValueError):
        return None
