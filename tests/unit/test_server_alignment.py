"""The daemon frames each job as its model's table entry says: a face model's crops are
FFHQ-aligned (the real face detector on a real photo), other models' crops are plain squares.

The wire carries model names and the executor turns them into files, so the framing must come
from the name's table entry, not from the file the pipeline loads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from service_helpers import save_tiny_model

from gimp_draggan.service.executor import PipelineExecutor
from gimp_draggan.service.server import Server, ServerConfig
from gimp_draggan_plugin.client import Client
from gimp_draggan_plugin.protocol import JobRequest, Params

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def daemon(small: list[int], tmp_path: Path) -> Iterator[tuple[str, PipelineExecutor]]:
    cache = tmp_path / "models-cache"
    (cache / "models").mkdir(parents=True)
    model = save_tiny_model(tmp_path)
    rows = []
    for name, alignment in (("face", "ffhq"), ("plain", None)):
        (cache / "models" / f"{name}.safetensors").write_bytes(model.read_bytes())
        (cache / "models" / f"{name}.json").write_bytes(model.with_suffix(".json").read_bytes())
        row = {
            "name": name,
            "kind": "generator",
            "description": "test",
            "domain": "test",
            "resolution": 32,
            "num_ws": 8,
            "format": "gimp-draggan",
            "filename": f"{name}.safetensors",
            "urls": [],
            "size_bytes": None,
            "sha256": "0" * 64,
            "sha256_source": "this test",
            "licence": "test",
        }
        if alignment:
            row["alignment"] = alignment
        rows.append(row)
    table = tmp_path / "models.json"
    table.write_text(json.dumps({"format": "gimp-draggan-models", "models": rows}))
    executor = PipelineExecutor("cpu", cache=str(cache), table=str(table))
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*"), executor)
    server.start()
    try:
        yield server.address, executor
    finally:
        server.stop()


def test_a_face_model_gets_the_face_aligned_and_others_the_square(daemon) -> None:
    address, executor = daemon
    img = skimage.data.astronaut()
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    nose = ((240.0, 125.0), (252.0, 131.0))
    framings = {}
    with Client(address) as client:
        for name in ("face", "plain"):
            r = client.drag(
                JobRequest.photo(
                    pixels=rgba.tobytes(),
                    width=512,
                    height=512,
                    pairs=[nose],
                    model=name,
                    params=Params(steps=1, preset="fast"),
                )
            )
            session = executor.sessions.get(r.session)
            framings[name] = (session.info["framing"], session.box)
    framing, box = framings["face"]
    assert framing == "ffhq"
    assert abs(math.degrees(box.angle)) < 10.0  # the astronaut's head is nearly upright
    assert 150 < box.side < 400  # ~4 eye distances, not the whole photo
    framing, box = framings["plain"]
    assert framing == "square" and box.angle == 0.0
