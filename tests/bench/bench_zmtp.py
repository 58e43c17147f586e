"""Round trip of a 4096x4096 RGBA layer (64 MiB) to an echoing pyzmq ROUTER on 127.0.0.1, through
the plug-in's built-in ZMTP client and through pyzmq, plus small-message round trips.

    python tests/bench/bench_zmtp.py [--mib 64] [--small 2000] [--json]

Prints figures; with --json the last line is JSON: zmtp_64mib_roundtrip_ms,
pyzmq_64mib_roundtrip_ms, zmtp_small_roundtrips_per_s, pyzmq_small_roundtrips_per_s.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import zmq

from gimp_draggan_plugin import transport


def echo_server(ctx: zmq.Context, stop: threading.Event) -> str:
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    port = sock.bind_to_random_port("tcp://127.0.0.1")

    def loop() -> None:
        while not stop.is_set():
            if sock.poll(100):
                sock.send_multipart(sock.recv_multipart(copy=False), copy=False)
        sock.close()

    threading.Thread(target=loop, daemon=True).start()
    return f"tcp://127.0.0.1:{port}"


def measure(kind: str, address: str, big: bytes, small: int) -> tuple[float, float]:
    conn = transport.connect(address, prefer=kind)
    try:
        conn.send([b"warm-up"])
        assert conn.recv(10.0) == [b"warm-up"]
        t0 = time.perf_counter()
        conn.send([b"head", big])
        reply = conn.recv(120.0)
        big_ms = (time.perf_counter() - t0) * 1000
        if reply is None or reply[1] != big:
            raise RuntimeError(f"{kind}: the 64 MiB echo came back wrong")
        t0 = time.perf_counter()
        for i in range(small):
            conn.send([b'{"op":"status"}', str(i).encode()])
            if conn.recv(10.0) is None:
                raise RuntimeError(f"{kind}: small echo {i} timed out")
        per_s = small / (time.perf_counter() - t0)
    finally:
        conn.close()
    return big_ms, per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    big = os.urandom(args.mib << 20)
    ctx = zmq.Context()
    stop = threading.Event()
    address = echo_server(ctx, stop)
    figures = {}
    for kind in ("zmtp", "pyzmq"):
        big_ms, per_s = measure(kind, address, big, args.small)
        figures[f"{kind}_{args.mib}mib_roundtrip_ms"] = round(big_ms, 1)
        figures[f"{kind}_small_roundtrips_per_s"] = round(per_s, 1)
        print(
            f"{kind:6s}: {args.mib} MiB round trip {big_ms:8.1f} ms; small round trips "
            f"{per_s:8.1f}/s"
        )
    stop.set()
    time.sleep(0.2)
    ctx.term()
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
