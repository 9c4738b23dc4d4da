"""What the front process and the SQLite writer process say to each other (pure: no I/O).

Front -> writer, over a socketpair: frames, each ``>I`` payload length, then ``>Q`` batch
number (its top bit, ``URGENT``, asks for an immediate acknowledgement), then the batch's
operations back to back (none in an urgent frame that only asks for the acknowledgement). Every operation starts with one op byte
and the session id's length (``>H``); then:

====  =========================  =======================================================
op    fixed fields               then
====  =========================  =======================================================
E     seq ``>q``, length ``>I``  sid, the encoded event (one row of ``events``)
M     n ``>q``, length ``>I``    sid, one history message as JSON; n numbers it per session
R     last_active ``>d``, ``>I`` sid, the SessionRecord as JSON
T     seq ``>q``                 sid: delete the session's events up to seq (an ack)
D     -                          sid: delete the session everywhere
C     -                          sid: clear its history (replace_history: C, then M 1..k)
====  =========================  =======================================================

Every operation is idempotent (rows are keyed by (sid, seq) and (sid, n)), so a batch
whose fate is unknown (the writer died) can be sent again as it was.

Writer -> front: ``A`` + ``>Q``: every batch up to that number is committed (or, after a
failure it reported, given up); acknowledgements are coalesced; ``F`` + ``>I`` + UTF-8 text: a write failed (safe to show
operators); ``O``: ready / healthy again.

Stdlib only: the writer runs this module's sibling as a script in an isolated interpreter.
"""

from __future__ import annotations

import struct
from typing import Iterator

FRAME_HEAD = struct.Struct(">IQ")  # payload length (batch number included), batch number
EVENT = struct.Struct(">cHqI")
MESSAGE = EVENT  # same shape: op, sid length, n, body length
RECORD = struct.Struct(">cHdI")
TRIM = struct.Struct(">cHq")
SID_ONLY = struct.Struct(">cH")
ACK = struct.Struct(">cQ")
FAILURE = struct.Struct(">cI")
OK = b"O"
URGENT = 1 << 63  # set in a batch number: acknowledge at once (someone waits in flush())
BATCH_MASK = URGENT - 1


def split_frames(buf: bytes | bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """Complete frames at the start of ``buf`` as (batch number, operations), and the bytes
    they take (the rest is an incomplete frame still arriving)."""
    frames: list[tuple[int, bytes]] = []
    pos, size = 0, len(buf)
    while size - pos >= FRAME_HEAD.size:
        length, batch = FRAME_HEAD.unpack_from(buf, pos)
        end = pos + 4 + length
        if end > size:
            break
        frames.append((batch, bytes(buf[pos + FRAME_HEAD.size:end])))
        pos = end
    return frames, pos


def operations(payload: bytes) -> Iterator[tuple]:
    """Decode one batch into tuples: ("E", sid, seq, body), ("M", sid, n, body),
    ("R", sid, last_active, body), ("T", sid, seq), ("D", sid), ("C", sid).

    Raises ValueError for bytes that are not a batch (a bug, not data to skip)."""
    pos, size = 0, len(payload)
    while pos < size:
        op = payload[pos:pos + 1]
        if op in (b"E", b"M"):
            _, sid_len, number, body_len = EVENT.unpack_from(payload, pos)
            pos += EVENT.size
            sid = payload[pos:pos + sid_len].decode()
            pos += sid_len
            yield op.decode(), sid, number, payload[pos:pos + body_len]
            pos += body_len
        elif op == b"R":
            _, sid_len, last_active, body_len = RECORD.unpack_from(payload, pos)
            pos += RECORD.size
            sid = payload[pos:pos + sid_len].decode()
            pos += sid_len
            yield "R", sid, last_active, payload[pos:pos + body_len]
            pos += body_len
        elif op == b"T":
            _, sid_len, seq = TRIM.unpack_from(payload, pos)
            pos += TRIM.size
            yield "T", payload[pos:pos + sid_len].decode(), seq
            pos += sid_len
        elif op in (b"D", b"C"):
            _, sid_len = SID_ONLY.unpack_from(payload, pos)
            pos += SID_ONLY.size
            yield op.decode(), payload[pos:pos + sid_len].decode()
            pos += sid_len
        else:
            raise ValueError(f"unknown store operation {op!r} at byte {pos}")
    if pos != size:
        raise ValueError("truncated store operation")
