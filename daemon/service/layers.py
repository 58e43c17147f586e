"""A layer's pixels travel to a Ray actor once per session, not once per drag (`serve --cluster`).

Every request carries the whole layer (a 24-megapixel photo: 96 MB of 8-bit RGBA, its selection
mask another 24 MB), but a user drags the same layer many times. Each actor keeps the layers
(pixels and masks, each under the BLAKE2b digest of its bytes) it was sent in a `LayerCache`: least
recently used first out under a byte budget, the newest always kept, like the session cache. The
head keeps a `LayerCache` of sizes per actor that mirrors it (same budget, same order of use: one
job at a time per actor), so it sends a layer only to an actor that does not hold it; otherwise it
sends the digest alone (`pack`). An actor that lost a layer all the same (restarted by Ray,
emptied) finds no bytes for the digest (`unpack` gives None); it answers so, and the head sends
the job again with the bytes. No Ray here: the rule is tested without a cluster.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from gimp_draggan.service.worker import JobSpec

# Layers each actor keeps: four 24-MP 8-bit layers with their masks, or hundreds of small ones.
LAYER_BUDGET = 512 << 20

V = TypeVar("V")


def blob_digest(data: bytes) -> str:
    """The key a layer's pixels or mask are kept under (BLAKE2b-128 of the bytes)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class LayerCache(Generic[V]):
    """Blobs by digest under a byte budget: least recently used out first, never the newest. The
    actor's holds the bytes; the head's mirror holds None for each (only the sizes count)."""

    def __init__(self, budget_bytes: int = LAYER_BUDGET) -> None:
        self.budget_bytes = budget_bytes
        self._kept: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self.nbytes = 0

    def __contains__(self, key: str) -> bool:
        return key in self._kept

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, key: str) -> V | None:
        """The blob kept under `key` (now the most recently used), or None."""
        kept = self._kept.get(key)
        if kept is None:
            return None
        self._kept.move_to_end(key)
        return kept[0]

    def put(self, key: str, value: V, nbytes: int) -> None:
        """Keep `value`; drop the least recently used others while over the budget."""
        old = self._kept.pop(key, None)
        if old is not None:
            self.nbytes -= old[1]
        self._kept[key] = (value, nbytes)
        self.nbytes += nbytes
        while self.nbytes > self.budget_bytes and len(self._kept) > 1:
            _, (_, dropped) = self._kept.popitem(last=False)
            self.nbytes -= dropped

    def clear(self) -> None:
        self._kept.clear()
        self.nbytes = 0


@dataclass(frozen=True)
class LayerKeys:
    """The digests of a request's pixels and mask (None where it has none)."""

    pixels: str | None = None
    mask: str | None = None


@dataclass(frozen=True)
class Parcel:
    """A job as it travels to an actor: its spec, whose request leaves out the pixels and mask
    the actor holds (`keys` names them either way)."""

    spec: JobSpec
    keys: LayerKeys = field(default_factory=LayerKeys)

    @property
    def nbytes(self) -> int:
        """Layer bytes carried (pixels and mask)."""
        req = self.spec.request
        if req is None:
            return 0
        return len(req.pixels or b"") + len(req.mask or b"")


def pack(spec: JobSpec, keys: LayerKeys, held: LayerCache[None], full: bool = False) -> Parcel:
    """`spec` for an actor whose layers `held` mirrors: the pixels and mask it holds are left out
    (all sent with `full`); `held` records what it will hold once the parcel is unpacked."""
    req = spec.request
    if req is None:
        return Parcel(spec)
    blobs = {"pixels": (keys.pixels, req.pixels), "mask": (keys.mask, req.mask)}
    left_out: dict[str, None] = {}
    for name, (key, data) in blobs.items():
        if key is None or data is None:
            continue
        if not full and key in held:
            held.get(key)
            left_out[name] = None
        else:
            held.put(key, None, len(data))
    return Parcel(replace(spec, request=replace(req, **left_out)) if left_out else spec, keys)


def unpack(parcel: Parcel, cache: LayerCache[bytes]) -> JobSpec | None:
    """The job to run: blobs carried are kept in `cache`, those left out taken from it; None when
    one left out is not there (the head must send it again)."""
    req = parcel.spec.request
    if req is None:
        return parcel.spec
    restored: dict[str, bytes] = {}
    for name, key, data in (
        ("pixels", parcel.keys.pixels, req.pixels),
        ("mask", parcel.keys.mask, req.mask),
    ):
        if key is None:
            continue
        if data is not None:
            cache.put(key, data, len(data))
            continue
        kept = cache.get(key)
        if kept is None:
            return None
        restored[name] = kept
    if not restored:
        return parcel.spec
    return replace(parcel.spec, request=replace(req, **restored))
