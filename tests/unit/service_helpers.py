"""Shared bits of the service tests: a raw DEALER that speaks frames, a tiny saved model, a
daemon running the real pipeline on it."""

from __future__ import annotations

import time
from pathlib import Path

import zmq

from gimp_draggan_plugin import protocol as P

TINY = dict(
    img_resolution=32, z_dim=32, w_dim=32, channel_base=256, channel_max=32, mapping_layers=2
)


class Raw:
    """A DEALER socket for protocol-level tests (no client library in the way)."""

    def __init__(self, address: str, ctx: zmq.Context | None = None) -> None:
        self.sock = (ctx or zmq.Context.instance()).socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(address)

    def send(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def request(
        self, op: str, msg_id: str, fields: dict | None = None, blobs: dict | None = None
    ) -> None:
        self.send(P.encode(op, msg_id, fields, blobs))

    def recv(self, timeout_s: float = 5.0) -> P.Message | None:
        if not self.sock.poll(int(timeout_s * 1000)):
            return None
        return P.decode(self.sock.recv_multipart())

    def until(
        self, msg_id: str, ops: tuple[str, ...] = P.FINAL_OPS, timeout_s: float = 10.0
    ) -> tuple[P.Message, list[P.Message]]:
        """Messages until one for `msg_id` with an op in `ops`; returns it and those before."""
        seen: list[P.Message] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = self.recv(max(0.0, deadline - time.monotonic()))
            if msg is None:
                break
            if msg.id == msg_id and msg.op in ops:
                return msg, seen
            seen.append(msg)
        raise AssertionError(
            f"no {ops} for {msg_id} within {timeout_s} s; got {[(m.op, m.id) for m in seen]}"
        )

    def close(self) -> None:
        self.sock.close(linger=0)


def wait_for(predicate, timeout_s: float, every_s: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every_s)
    return predicate()


def save_tiny_model(directory: Path, seed: int = 0) -> Path:
    """A tiny random generator in the project's format (what `serve --model FILE` takes)."""
    import torch

    from gimp_draggan.draggan.checkpoint import save_generator
    from gimp_draggan.draggan.networks import Generator, GeneratorConfig

    torch.manual_seed(seed)
    G = Generator(GeneratorConfig(**TINY))
    return Path(save_generator(G, directory / "tiny.safetensors"))


def single_torch_thread():
    """Generator for a fixture: tiny models run on one torch thread (faster, and on a busy
    machine extra threads only wait for each other); restores the count afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pipeline_daemon(model: Path, max_queue: int = P.MAX_QUEUE_DEFAULT):
    """Generator for a fixture: a daemon on a free loopback port whose real pipeline executor
    knows ``model`` as "tiny"; yields (server, executor) and stops the server afterwards."""
    from gimp_draggan.service.executor import PipelineExecutor
    from gimp_draggan.service.server import Server, ServerConfig

    executor = PipelineExecutor("cpu", files={"tiny": model})
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*", max_queue=max_queue), executor)
    server.start()
    try:
        yield server, executor
    finally:
        server.stop()


def read_pixels(path: Path):
    """An image file's pixels as a numpy array."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def embedded_daemon():
    """Generator for a fixture: a daemon in this process serving the shipped embedded model
    (its default), on one torch thread and with few PTI steps (the inversion is not what such
    tests check); yields its address."""
    import pytest

    from gimp_draggan.draggan import pti
    from gimp_draggan.service.executor import PipelineExecutor
    from gimp_draggan.service.server import Server, ServerConfig

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(
            pti.PRESETS,
            "fast",
            pti.InvertParams(projection_steps=3, tuning_steps=2, w_avg_samples=64),
        )
        for _ in single_torch_thread():
            server = Server(
                ServerConfig(bind="tcp://127.0.0.1:*"),
                PipelineExecutor("cpu", default_model="embedded"),
            )
            server.start()
            try:
                yield server.address
            finally:
                server.stop()
