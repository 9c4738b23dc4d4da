"""What the front process and the SQLite writer process say to each other (pure: no I/O).

Front -> writer, over a socketpair: frames, each ``>I`` payload length, then ``>Q`` batch
number (its top bit, ``URGENT``, asks for an immediate acknowledgement), then the batch.

A batch is columnar, so that the front encodes it with a handful of C-level calls however
many operations it holds (the front's only per-operation work is appending a tuple)::

    >I                 n, the number of operations
    n bytes            kinds: E event, M history message, R record, T trim, D delete, C clear,
                       B budget balance
    >{n}d              numbers: E seq, M n (per-session message number), R last_active,
                       T the seq trimmed up to, B the tokens spent (the total, not an increment:
                       idempotent); 0 for D and C
    >{n}H              session id lengths (UTF-8 bytes)
    >{n}I              body lengths
    session ids        concatenated (B: the budget holder)
    bodies             concatenated: E the encoded event, M one history message (JSON),
                       R the SessionRecord (JSON), B the UTC day (YYYY-MM-DD); empty for T, D, C

Operations apply in order. D deletes a session everywhere; C clears its history
(replace_history is C, then M numbered from 1). Every operation is idempotent (rows are
keyed by (sid, seq) and (sid, n)), so a batch whose fate is unknown (the writer died) can
be sent again as it was. Numbers travel as doubles: exact for integers below 2**53.

Writer -> front: ``A`` + ``>Q``: every batch up to that number is committed (or, after a
failure it reported, given up); ``F`` + ``>I`` + UTF-8 text: a write failed (safe to show
operators); ``O``: ready / healthy again.

Stdlib only: the writer runs its module as a script in an isolated interpreter.
"""

from __future__ import annotations

import struct
from itertools import accumulate
from typing import Iterator, Sequence

FRAME_HEAD = struct.Struct(">IQ")  # payload length (batch number included), batch number
COUNT = struct.Struct(">I")
ACK = struct.Struct(">cQ")
FAILURE = struct.Struct(">cI")
OK = b"O"
URGENT = 1 << 63  # set in a batch number: acknowledge at once (someone waits in flush())
BATCH_MASK = URGENT - 1

EVENT, MESSAGE, RECORD, TRIM, DELETE, CLEAR, BUDGET = (ord(c) for c in "EMRTDCB")
KINDS = {EVENT: "E", MESSAGE: "M", RECORD: "R", TRIM: "T", DELETE: "D", CLEAR: "C", BUDGET: "B"}
NO_BODY = b""

Operation = tuple  # (kind: int, sid: str, number: int | float, body: bytes), as the front queues them


def encode_batch(ops: Sequence[Operation]) -> bytes:
    """The columnar payload of ``ops`` (without the frame head): C-level work per operation."""
    n = len(ops)
    if not n:
        return COUNT.pack(0)
    kinds, sids, numbers, bodies = zip(*ops)
    keys = list(map(str.encode, sids))
    return b"".join((
        COUNT.pack(n), bytes(kinds), struct.pack(f">{n}d", *numbers),
        struct.pack(f">{n}H", *map(len, keys)), struct.pack(f">{n}I", *map(len, bodies)),
        b"".join(keys), b"".join(bodies),
    ))


def split_frames(buf: bytes | bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """Complete frames at the start of ``buf`` as (batch number, payload), and the bytes
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
    ("R", sid, last_active, body), ("T", sid, seq), ("D", sid), ("C", sid), ("B", key, tokens, day).

    Raises ValueError for bytes that are not a batch (a bug, not data to skip)."""
    if not payload:
        return
    try:
        (n,) = COUNT.unpack_from(payload, 0)
        pos = COUNT.size
        kinds = payload[pos:pos + n]
        pos += n
        numbers = struct.unpack_from(f">{n}d", payload, pos)
        pos += 8 * n
        sid_lengths = struct.unpack_from(f">{n}H", payload, pos)
        pos += 2 * n
        body_lengths = struct.unpack_from(f">{n}I", payload, pos)
        pos += 4 * n
    except struct.error as exc:
        raise ValueError(f"truncated store batch: {exc}") from None
    sid_end = pos + sum(sid_lengths)
    if len(kinds) != n or sid_end + sum(body_lengths) != len(payload):
        raise ValueError("store batch lengths do not add up")
    sid_ends = list(accumulate(sid_lengths, initial=pos))
    body_ends = list(accumulate(body_lengths, initial=sid_end))
    for i, kind in enumerate(kinds):
        name = KINDS.get(kind)
        if name is None:
            raise ValueError(f"unknown store operation {chr(kind)!r} at index {i}")
        sid = payload[sid_ends[i]:sid_ends[i + 1]].decode()
        if name in ("E", "M", "B"):
            yield name, sid, int(numbers[i]), payload[body_ends[i]:body_ends[i + 1]]
        elif name == "R":
            yield name, sid, numbers[i], payload[body_ends[i]:body_ends[i + 1]]
        elif name == "T":
            yield name, sid, int(numbers[i])
        else:
            yield name, sid
