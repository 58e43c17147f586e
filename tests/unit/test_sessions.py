"""Session cache: ids, lookup by content, LRU under a byte budget."""

import numpy as np
import pytest
import torch

from gimp_draggan.edit.geometry import CropBox, Rect
from gimp_draggan.edit.sessions import (
    Session,
    SessionCache,
    UnknownSession,
    crop_digest,
    session_id,
)

BOX = CropBox(x0=10, y0=10, side=40, layer_width=100, layer_height=80, resolution=16)


def _session(
    sid: str, box: CropBox = BOX, model: str = "m|fast", digest: str = "d", params: int = 1000
) -> Session:
    img = np.zeros((16, 16, 3), np.float32)  # 3 KB each
    G = torch.nn.Linear(params, 1, bias=False)  # params * 4 bytes
    return Session(
        id=sid,
        model_key=model,
        box=box,
        digest=digest,
        generator=G,
        pivot=torch.zeros(1, 4, 8),
        target=img,
        recon=img.copy(),
    )


def test_nbytes_counts_tensors_and_arrays() -> None:
    s = _session("a", params=1000)
    assert s.nbytes == 4000 + 2 * 16 * 16 * 3 * 4 + 4 * 8 * 4


def test_get_and_unknown_ids() -> None:
    cache = SessionCache()
    cache.put(_session("a"))
    assert cache.get("a").id == "a" and "a" in cache and len(cache) == 1
    with pytest.raises(UnknownSession, match="send the pixels again"):
        cache.get("nope")
    with pytest.raises(ValueError):  # UnknownSession is a ValueError
        cache.get("nope")


def test_lru_eviction_under_the_byte_budget() -> None:
    one = _session("x").nbytes
    cache = SessionCache(budget_bytes=int(2.5 * one))
    for sid in "abc":
        cache.put(_session(sid))
    assert "a" not in cache and "b" in cache and "c" in cache
    cache.get("b")  # b is now the most recent
    cache.put(_session("d"))
    assert "c" not in cache and "b" in cache and "d" in cache
    assert cache.nbytes <= int(2.5 * one)


def test_a_session_bigger_than_the_budget_is_still_kept_alone() -> None:
    cache = SessionCache(budget_bytes=10)
    cache.put(_session("a"))
    cache.put(_session("b"))
    assert len(cache) == 1 and "b" in cache


def test_find_matches_model_layer_coverage_and_pixels() -> None:
    cache = SessionCache()
    cache.put(_session("a", digest="pix"))
    calls: list[CropBox] = []

    def digest(box: CropBox) -> str:
        calls.append(box)
        return "pix"

    inside = Rect(20, 20, 40, 40)
    assert cache.find("m|fast", (100, 80), inside, digest).id == "a"
    assert cache.find("m|quality", (100, 80), inside, digest) is None  # other preset
    assert cache.find("m|fast", (101, 80), inside, digest) is None  # other layer
    assert cache.find("m|fast", (100, 80), Rect(5, 20, 40, 40), digest) is None  # not covered
    assert cache.find("m|fast", (100, 80), inside, lambda b: "other") is None  # pixels differ
    assert cache.find("m|fast", (100, 80), inside, digest, max_side=39) is None  # crop too big
    assert cache.hits == 1 and cache.misses == 5
    assert calls == [BOX]  # digests only for candidates


def test_crop_digest_sees_only_the_box_pixels() -> None:
    layer = np.zeros((80, 100, 4), np.uint8)
    d0 = crop_digest(layer, "u8", BOX)
    layer[0, 0] = 9  # outside the box
    assert crop_digest(layer, "u8", BOX) == d0
    layer[30, 30] = 9  # inside
    assert crop_digest(layer, "u8", BOX) != d0
    assert session_id("m", d0) == session_id("m", d0) != session_id("n", d0)


def test_clear_forgets_everything() -> None:
    cache = SessionCache()
    cache.put(_session("a"))
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0
