"""Invert once, drag many: the tuned generators and pivots of recent crops.

Inverting a crop (PTI) costs far more than a drag, and a user drags the same face many times. A
`Session` keeps what one inversion made (the tuned generator, the pivot latent, the crop box and a
digest of its pixels) under an id the client can send back. With or without that id, a request
hits a session made from the same model, device and preset, on a layer of the same size, over a
box that holds every point and the selection (the turned square, for a turned box), and whose
pixels are identical (compared by digest), so a second drag on the same photo does no inversion.
`find` also takes the widest box to accept and the caller's ``accept`` test (the pipeline's: a
crop serves only points framed the same way now).

Memory is bounded by a byte budget over the sessions' tensors and arrays: the least
recently used sessions go first. `clear()` frees them all (the daemon calls it after running
out of GPU memory). A lock makes the cache safe to clear from another thread. The models the
sessions were made from are kept by `gimp_draggan.models.store`.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gimp_draggan.edit.geometry import CropBox, Rect

DEFAULT_BUDGET = 2 << 30  # Bytes of tuned generators + pixels kept.


class UnknownSession(ValueError):
    """The session id is not (or no longer) in the cache."""


@dataclass
class Session:
    id: str
    model_key: str  # What the inversion depended on: model file, device, preset.
    box: CropBox  # The crop, in layer pixels.
    digest: str  # `crop_digest` of the layer inside the box.
    generator: Any  # Tuned generator (torch module on the device).
    pivot: Any  # Pivot ws [1, num_ws, w_dim] (torch tensor on the device).
    target: np.ndarray  # [R, R, 3] float32: the crop as the model saw it.
    recon: np.ndarray  # [R, R, 3] float32: the tuned generator's image of the pivot.
    info: dict[str, float | str] = field(default_factory=dict)  # Inversion figures, framing.
    # Preview backdrops of a turned box (the layer over its bounding square), by size in pixels.
    backdrops: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        total = self.target.nbytes + self.recon.nbytes
        total += sum(b.nbytes for b in self.backdrops.values())
        total += _tensor_bytes(self.pivot)
        module = self.generator
        if hasattr(module, "parameters"):
            total += sum(_tensor_bytes(t) for t in module.parameters())
            total += sum(_tensor_bytes(t) for t in module.buffers())
        return total


def _tensor_bytes(t: Any) -> int:
    return int(t.numel() * t.element_size()) if hasattr(t, "element_size") else 0


def crop_digest(layer: np.ndarray, depth: str, box: CropBox) -> str:
    """Digest of the layer's pixels inside ``box`` (with the box, its angle included, the layer
    size and depth)."""
    inside = box.inside
    h = hashlib.blake2b(digest_size=20)
    h.update(repr((box, depth, layer.shape)).encode())
    for row in layer[inside.y0 : inside.y1, inside.x0 : inside.x1]:
        h.update(np.ascontiguousarray(row).data)
    return h.hexdigest()


def session_id(model_key: str, digest: str) -> str:
    return hashlib.blake2b(f"{model_key}\n{digest}".encode(), digest_size=12).hexdigest()


class SessionCache:
    """LRU of `Session`s under a byte budget."""

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET) -> None:
        if budget_bytes < 0:
            raise ValueError("budget_bytes must be >= 0")
        self.budget_bytes = budget_bytes
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, sid: str) -> bool:
        return sid in self._sessions

    def kept(self) -> list[Session]:
        """The sessions kept, least recently used first."""
        with self._lock:
            return list(self._sessions.values())

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(s.nbytes for s in self._sessions.values())

    def get(self, sid: str) -> Session:
        """The session ``sid`` (now most recently used); `UnknownSession` if absent."""
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                raise UnknownSession(
                    f"unknown session {sid!r}: it expired or the daemon restarted; "
                    "send the pixels again to invert the crop anew"
                )
            self._sessions.move_to_end(sid)
            self.hits += 1
            return session

    def find(
        self,
        model_key: str,
        layer_size: tuple[int, int],
        needed: Rect,
        digest: Callable[[CropBox], str],
        max_side: int | None = None,
        accept: Callable[[Session], bool] | None = None,
    ) -> Session | None:
        """Most recent session for ``model_key`` whose box on a ``layer_size`` (w, h) layer holds
        ``needed`` (`CropBox.holds`), is at most ``max_side`` pixels wide (a much bigger crop
        would show the model the region too small), that ``accept`` (if given) takes, and whose
        pixels match (``digest(box)`` = its digest)."""
        with self._lock:
            candidates = [
                s
                for s in reversed(self._sessions.values())
                if s.model_key == model_key
                and (s.box.layer_width, s.box.layer_height) == layer_size
                and s.box.holds(needed)
                and (max_side is None or s.box.side <= max_side)
                and (accept is None or accept(s))
            ]
        for s in candidates:
            if digest(s.box) == s.digest:
                with self._lock:
                    if s.id in self._sessions:
                        self._sessions.move_to_end(s.id)
                        self.hits += 1
                        return s
        self.misses += 1
        return None

    def put(self, session: Session) -> None:
        """Keep ``session``; drop least recently used ones while over budget (never the new one)."""
        with self._lock:
            self._sessions[session.id] = session
            self._sessions.move_to_end(session.id)
            total = sum(s.nbytes for s in self._sessions.values())
            while total > self.budget_bytes and len(self._sessions) > 1:
                _, old = self._sessions.popitem(last=False)
                total -= old.nbytes

    def clear(self) -> None:
        """Forget every session (frees their memory once unreferenced)."""
        with self._lock:
            self._sessions.clear()
