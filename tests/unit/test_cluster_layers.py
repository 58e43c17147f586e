"""`serve --cluster`'s layer shipping without Ray: the actor's layer cache keeps the most recently
used layers under its budget, and a job's pixels and mask travel only to an actor that does not hold
them; one that lost them asks for them again."""

from __future__ import annotations

from gimp_draggan.service.layers import (
    LayerCache,
    LayerKeys,
    Parcel,
    blob_digest,
    pack,
    unpack,
)
from gimp_draggan.service.worker import JobSpec
from gimp_draggan_plugin.protocol import JobRequest

PIXELS = bytes(range(256)) * 4 * 16  # A 32 x 32 RGBA layer.
MASK = bytes([255]) * 1024


def spec(mask: bytes = MASK) -> tuple[JobSpec, LayerKeys]:
    req = JobRequest.photo(PIXELS, 32, 32, [((1.0, 2.0), (3.0, 4.0))], mask=mask, model="tiny")
    return JobSpec("j", "drag", req, {}), LayerKeys(blob_digest(PIXELS), blob_digest(mask))


def test_the_layer_cache_drops_the_least_recently_used_and_keeps_the_newest():
    cache: LayerCache[bytes] = LayerCache(10)
    cache.put("a", b"aaaa", 4)
    cache.put("b", b"bbbb", 4)
    assert cache.get("a") == b"aaaa"  # Now b is the least recently used...
    cache.put("c", b"cccc", 4)
    assert "b" not in cache and cache.get("a") == b"aaaa" and cache.nbytes == 8
    cache.put("big", b"x" * 20, 20)  # Over the budget alone: kept, every other one dropped.
    assert len(cache) == 1 and cache.get("big") == b"x" * 20 and cache.nbytes == 20
    cache.put("big", b"y", 1)
    assert cache.nbytes == 1
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0 and cache.get("big") is None


def test_a_layer_travels_once_and_again_only_when_the_actor_lost_it():
    held: LayerCache[None] = LayerCache()
    actor: LayerCache[bytes] = LayerCache()
    job, keys = spec()

    first = pack(job, keys, held)
    assert first.nbytes == len(PIXELS) + len(MASK) and unpack(first, actor) == job

    repeat = pack(job, keys, held)
    assert repeat.nbytes == 0 and repeat.spec.request is not None
    assert repeat.spec.request.pixels is None and repeat.spec.request.mask is None
    assert unpack(repeat, actor) == job  # The actor's own copies: the same request.

    other, other_keys = spec(mask=bytes(1024))  # A new selection: only the mask travels.
    changed = pack(other, other_keys, held)
    assert changed.nbytes == len(MASK) and unpack(changed, actor) == other

    actor.clear()  # Restarted by Ray, or evicted: the head does not know.
    lost = pack(job, keys, held)
    assert lost.nbytes == 0 and unpack(lost, actor) is None
    again = pack(job, keys, held, full=True)
    assert again.nbytes == len(PIXELS) + len(MASK) and unpack(again, actor) == job


def test_a_job_without_a_layer_travels_as_it_is():
    job = JobSpec("m", "models", None, {"name": "tiny"})
    assert pack(job, LayerKeys(), LayerCache()) == Parcel(job)
    assert unpack(Parcel(job), LayerCache()) == job


def test_a_cancel_that_overtakes_its_job_stops_it_before_its_first_step():
    """`cancel` and `run` are calls to one threaded actor, so a cancel can arrive first; it must
    not be lost (the job would run to its end). The actor class itself, without Ray."""
    import numpy as np

    from gimp_draggan.headless.demo import SCENE, load_sample, selection_mask
    from gimp_draggan.service.cluster import ActorSpec, DragActor
    from gimp_draggan_plugin import protocol as P

    photo = np.asarray(load_sample().convert("RGBA"))
    h, w = photo.shape[:2]
    mask = selection_mask(w, h, SCENE.ellipse)
    req = JobRequest.photo(photo.tobytes(), w, h, list(SCENE.pairs), mask=mask, model="embedded")
    job = JobSpec("j", "drag", req, {})
    keys = LayerKeys(blob_digest(req.pixels or b""), blob_digest(mask))
    actor = DragActor(ActorSpec("cpu", 1, "embedded"))
    actor.cancel("early")
    replies = list(actor.run("early", pack(job, keys, LayerCache())))
    final = P.decode(replies[-1].frames)
    assert final.op == "error" and final.header["code"] == "cancelled", final.header
    assert len(actor.executor.sessions) == 0  # Nothing was inverted.
