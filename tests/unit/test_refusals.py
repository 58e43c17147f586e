"""Refused requests are logged with client and reason, rate-limited (issue 21)."""

from __future__ import annotations

import logging

import pytest
from server_fakes import FakeExecutor
from service_helpers import Raw

from gimp_draggan.service.logs import RefusalLog
from gimp_draggan.service.server import Server, ServerConfig
from gimp_draggan_plugin import protocol as P


def test_one_line_per_reason_per_second_and_the_rest_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    refusals = RefusalLog(logging.getLogger("gimp_draggan.test"), clock=lambda: now[0])
    caplog.set_level(logging.WARNING, "gimp_draggan")
    for i in range(50):
        refusals.refused("queue_full", f"c{i}", "17 jobs waiting")
    refusals.refused("too_large", "c9", "layer 20000x20000")
    refusals.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "refused queue_full from client c0: 17 jobs waiting",
        "refused too_large from client c9: layer 20000x20000",
    ]
    now[0] += 1.5
    refusals.flush()
    last = caplog.records[-1].getMessage()
    assert last == "refused 49 more queue_full request(s) in the last 2 s"
    refusals.flush()
    assert len(caplog.records) == 3


def test_a_flood_over_the_queue_shows_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "gimp_draggan")
    executor = FakeExecutor(step_s=0.05)
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*", max_queue=1), executor)
    server.start()
    raw = Raw(server.address)
    try:
        fields = {
            "width": 2,
            "height": 1,
            "depth": "u8",
            "pairs": [[0, 0, 1, 0]],
            "params": {"steps": 100},
        }
        raw.request("drag", "d0", fields, {"pixels": bytes(8)})
        assert executor.running.wait(10), "d0 never started"  # d0 runs, the queue is empty
        for i in range(1, 6):  # d1 waits in the queue; d2..d5 find it full
            raw.request("drag", f"d{i}", fields, {"pixels": bytes(8)})
        codes = []
        for i in range(2, 6):
            reply, _ = raw.until(f"d{i}", ("error",))
            codes.append(reply.header["code"])
        raw.request("drag", "big", {**fields, "width": P.MAX_SIDE + 1}, {"pixels": bytes(4)})
        assert raw.until("big", ("error",))[0].header["code"] == "too_large"
    finally:
        raw.close()
        server.stop()
    assert codes == ["queue_full"] * 4
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert any(line.startswith("refused queue_full from client ") for line in lines), lines
    assert any(line.startswith("refused too_large from client ") for line in lines), lines
    # Rate-limited: fewer lines than the 4 refusals (one line a second, the rest counted; a
    # loaded machine may stretch the burst over a second boundary).
    assert sum("queue_full" in line for line in lines) < 4, lines
