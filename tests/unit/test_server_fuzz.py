"""Fuzz: 1,200 malformed messages, each answered by exactly one error; then `hello` answers and
a real job (tiny generator) completes."""

from __future__ import annotations

import json
import random

import pytest
from service_helpers import Raw, save_tiny_model, single_torch_thread

from gimp_draggan.service.executor import PipelineExecutor
from gimp_draggan.service.server import Server, ServerConfig
from gimp_draggan_plugin import protocol as P

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    yield from single_torch_thread()


GOOD = {
    "width": 6,
    "height": 5,
    "depth": "u8",
    "pairs": [[1, 1, 4, 3]],
    "model": "tiny",
    "params": {"steps": 1},
}
# Values that make each field invalid whatever the rest says.
WRONG = {
    "width": ["6", [6], {}, -5, 0, 1.5, True, 10**9],
    "height": ["5", None, [], -1, 2.5, False],
    "depth": ["rgb", 8, None, "U8"],
    "pairs": ["1,1:4,3", {"a": 1}, [[1, 2]], 5, [[1, 1, 4, "3"]], [[1, 1, 400, 3]], []],
    "params": ["fast", [1], {"steps": "many"}, {"lr": -1}, {"bogus": 1}],
    "model": [5, "UPPER", "../x", "", "a/b", ["tiny"]],
    "session": [7, "has space", ""],
    "seed": ["1", -4, 2**40, 1.5],
}


def malformed(rng: random.Random, i: int) -> list[bytes]:
    """One message that must be refused; ids are unique where the message has one."""
    kind = i % 9
    msg_id = f"f{i}"
    good = P.encode("drag", msg_id, GOOD, {"pixels": bytes(6 * 5 * 4)})
    if kind == 0:  # Random binary frames.
        return [rng.randbytes(rng.randint(0, 200)) for _ in range(rng.randint(1, 4))]
    if kind == 1:  # Truncated header.
        return [good[0][: rng.randint(0, len(good[0]) - 1)], good[1]]
    if kind == 2:  # Wrong byte counts.
        size = rng.choice([0, 1, 119, 121, 4096])
        blobs = (
            {"pixels": bytes(size)}
            if rng.random() < 0.7
            else {"pixels": bytes(120), "mask": bytes(rng.choice([0, 29, 31]))}
        )
        return P.encode("drag", msg_id, GOOD, blobs)
    if kind == 3:  # Huge declared sizes.
        side = rng.choice([20000, 10**6, 2**31])
        return P.encode(
            "drag", msg_id, {**GOOD, "width": side, "height": side}, {"pixels": bytes(16)}
        )
    if kind == 4:  # Wrong types.
        field = rng.choice(sorted(WRONG))
        return P.encode(
            "drag", msg_id, {**GOOD, field: rng.choice(WRONG[field])}, {"pixels": bytes(120)}
        )
    if kind == 5:  # Unknown ops.
        return P.encode(rng.choice(["fly", "DRAG", "", "exec", "__import__"]), msg_id)
    if kind == 6:  # Frame list and frames disagree.
        header = json.loads(good[0])
        header["frames"] = rng.choice(
            [["pixels", "mask"], [], ["pixels", "pixels"], "pixels", ["x"] * 9]
        )
        return [json.dumps(header).encode(), good[1]]
    if kind == 7:  # Not a header object / bad version / bad id.
        return [
            rng.choice(
                [
                    b"[]",
                    b"null",
                    b"3",
                    b'"str"',
                    b"{}",
                    b'{"v": 0, "op": "hello", "id": "a"}',
                    b'{"v": 1, "op": "hello", "id": "has space"}',
                    b'{"v": 1, "op": "hello", "id": "' + b"x" * 200 + b'"}',
                    b'{"v": 1, "op": "hello", "id": "a", "n": Infinity}',
                ]
            )
        ]
    # Extra or unknown binary frames.
    return P.encode("drag", msg_id, GOOD, {"pixels": bytes(120), "junk": b"x"})


def test_fuzz_then_hello_and_a_real_job(tmp_path):
    executor = PipelineExecutor("cpu", files={"tiny": save_tiny_model(tmp_path)})
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*"), executor)
    address = server.start()
    raw = Raw(address)
    try:
        rng = random.Random(1234)
        count = 1200
        for i in range(count):
            raw.send(malformed(rng, i))
        replies = []
        while len(replies) < count:
            msg = raw.recv(10.0)
            assert msg is not None, f"only {len(replies)} of {count} malformed messages answered"
            replies.append(msg)
        assert all(m.op == "error" for m in replies)
        codes = {m.header["code"] for m in replies}
        assert codes <= {"bad_message", "bad_version", "unknown_op", "bad_request", "too_large"}
        assert {"bad_message", "unknown_op", "bad_request", "too_large"} <= codes
        assert raw.recv(0.3) is None  # Exactly one answer each.
        assert executor.sessions.misses == 0 and server.queue.done == 0  # Nothing ran.

        raw.request("hello", "alive")
        assert raw.until("alive")[0].op == "hello"
        raw.request(
            "drag",
            "real",
            {"seed": 3, "model": "tiny", "pairs": [[8, 8, 16, 8]], "params": {"steps": 2}},
        )
        result, _ = raw.until("real", timeout_s=60)
        assert result.op == "result" and len(result.blobs["patch"]) == 32 * 32 * 4
    finally:
        raw.close()
        server.stop()
