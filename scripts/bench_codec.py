#!/usr/bin/env python3
"""Throughput of the protocol core's hot paths, next to bare orjson as the reference.

Rows (each for a typical ~200-byte event and a 4 KiB one):

* pipe      encode_frame + FrameDecoder.feed       (supervisor <-> sandbox)
* client in parse_client_frame + validate_client_frame   (every inbound frame)
* server out make_event + iso_utc + encode_event    (every outbound event)
* orjson    orjson.dumps + orjson.loads             (the floor: bare library)

Each row runs ``--runs`` timed runs of about ``--seconds / --runs`` seconds
(calibrated) and reports the median rate.

    python scripts/bench_codec.py [--seconds 1.5] [--runs 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402

from myagent.protocol.envelope import encode_event, iso_utc, make_event  # noqa: E402
from myagent.protocol.framing import FrameDecoder, encode_frame  # noqa: E402
from myagent.protocol.schema import validate_client_frame  # noqa: E402
from myagent.protocol.wirejson import parse_client_frame  # noqa: E402

SID = "6f1c7c8e-3b1d-4a51-9d0e-2f7f4c1b9a10"
META = {"turn_id": "t-0007", "connection_id": "c-5b2e9a"}


def server_event(text: str) -> dict:
    return make_event(
        "agent.partial_answer", session_id=SID, seq=42, content=text, metadata=META, timestamp=iso_utc(time.time())
    )


def client_frame(text: str) -> bytes:
    return orjson.dumps(
        {"event": "user.message", "session_id": SID, "content": text,
         "metadata": {"message_id": "m-000123"}, "timestamp": "2026-11-25T16:32:25.123Z"}
    )


def pad_to(build, size: int) -> str:
    """Content text such that build(text) encodes to about `size` bytes."""
    room = max(1, size - len(orjson.dumps(build(""))))
    return ("lorem ipsum dolor sit amet " * (room // 27 + 1))[:room]


def cases() -> list[tuple[str, int, Callable[[], object]]]:
    rows = []
    for size in (200, 4096):
        ev_text = pad_to(server_event, size)
        event = server_event(ev_text)
        event_size = len(orjson.dumps(event))

        decoder = FrameDecoder()

        def pipe(event=event, decoder=decoder):
            decoder.feed(encode_frame(event))

        wire = client_frame(pad_to(lambda t: orjson.loads(client_frame(t)), size)).decode()  # a text frame

        def client_in(wire=wire):
            validate_client_frame(parse_client_frame(wire))

        def server_out(text=ev_text):
            encode_event(
                make_event("agent.partial_answer", session_id=SID, seq=42, content=text, metadata=META,
                           timestamp=iso_utc(time.time()))
            )

        def bare(event=event):
            orjson.loads(orjson.dumps(event))

        rows += [
            ("pipe: encode_frame + feed", event_size + 4, pipe),
            ("client in: parse + validate", len(wire.encode()), client_in),
            ("server out: make + encode", event_size, server_out),
            ("orjson dumps + loads (ref)", event_size, bare),
        ]
    return rows


def timed(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - start


def rate(fn, seconds: float, runs: int) -> float:
    n = 64
    while (elapsed := timed(fn, n)) < 0.02:
        n *= 4
    per_run = max(1, int(n * (seconds / runs) / elapsed))
    return statistics.median(per_run / timed(fn, per_run) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="time per row (default 1.5)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per row; the median is shown (default 5)")
    args = parser.parse_args()

    print(f"python {platform.python_version()}  orjson {orjson.__version__}  {platform.machine()}")
    print(f"{'path':<30} {'bytes':>6} {'frames/s':>12} {'us/frame':>9}")
    for name, size, fn in cases():
        r = rate(fn, args.seconds, args.runs)
        print(f"{name:<30} {size:>6} {r:>12,.0f} {1e6 / r:>9.2f}")


if __name__ == "__main__":
    main()
