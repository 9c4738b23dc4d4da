"""The front <-> SQLite writer framing (myagent.supervisor.store.sqlite_wire): bytes only, no I/O."""

from __future__ import annotations

import itertools
import time

import orjson
import pytest

from myagent.supervisor.store import sqlite_wire as wire
from myagent.supervisor.store.base import SessionRecord
from myagent.supervisor.store.sqlite import SQLiteStore


def batch_of(store: SQLiteStore) -> bytes:
    """The frame the store would hand to its writer (it is not started: nothing is sent)."""
    store._flush_now()
    return store._unacked[-1][2]


def test_every_operation_round_trips():
    store = SQLiteStore("/nonexistent/never-opened.db")
    now = time.time()
    rec = SessionRecord("s_é", "alice", "ab" * 32, "agent", now, now, 7, "t_1")
    store.put_record(SessionRecord("s_é", "alice", "ab" * 32, "agent", now, now, 6, None))
    store.put_record(rec)  # the same session again in this batch: only the newest is sent
    store.add_event("s_é", 41, b'{"seq":41}')
    store.add_message("s_é", '{"role":"user","content":"héllo"}')
    store.trim_events("s_é", 40)
    store.replace_history("s_é", ['{"role":"user","content":"a"}'])
    store.put_record(SessionRecord("s_other", "bob", "cd" * 32, "agent", now, now, 1, None))
    store.delete("s_other")  # its record queued before the delete goes first
    frames, used = wire.split_frames(batch_of(store))
    assert used == len(store._unacked[-1][2]) and len(frames) == 1
    number, payload = frames[0]
    assert number == 1
    ops = list(wire.operations(payload))
    assert [op[0] for op in ops] == ["E", "M", "T", "C", "M", "R", "D", "R"]
    assert ops[0] == ("E", "s_é", 41, b'{"seq":41}')
    assert ops[1] == ("M", "s_é", 1, '{"role":"user","content":"héllo"}'.encode())
    assert ops[2] == ("T", "s_é", 40)
    assert ops[3] == ("C", "s_é")
    assert ops[4] == ("M", "s_é", 1, b'{"role":"user","content":"a"}')  # numbered from 1 again
    assert ops[5][:2] == ("R", "s_other") and ops[6] == ("D", "s_other")
    assert ops[7][:3] == ("R", "s_é", now) and orjson.loads(ops[7][3]) == rec.to_dict()
    assert store.pending == 8  # what the writer must acknowledge: the batch's operations


def test_frames_split_at_any_byte():
    """Bytes arrive in any pieces: only complete frames come out, and what they used."""
    store = SQLiteStore("/nonexistent/never-opened.db")
    frames_bytes = []
    for n in range(3):
        store.add_event("s_x", n, b"x" * n)
        frames_bytes.append(batch_of(store))
    data = b"".join(frames_bytes)
    ends = list(itertools.accumulate(len(f) for f in frames_bytes))
    for cut in range(len(data) + 1):
        frames, used = wire.split_frames(data[:cut])
        complete = [i + 1 for i, end in enumerate(ends) if end <= cut]
        assert [number for number, _ in frames] == complete
        assert used == (ends[len(complete) - 1] if complete else 0)


def test_urgent_frames_and_garbage():
    store = SQLiteStore("/nonexistent/never-opened.db")
    store._flush_now(urgent=True)  # empty and urgent: only asks for an acknowledgement
    (number, payload), = wire.split_frames(store._unacked[-1][2])[0]
    assert number & wire.URGENT and number & wire.BATCH_MASK == 1
    assert list(wire.operations(payload)) == []
    bad = bytearray(wire.encode_batch([(wire.EVENT, "s_x", 1, b"{}")]))
    bad[wire.COUNT.size] = ord("Z")
    with pytest.raises(ValueError, match="unknown store operation"):
        list(wire.operations(bytes(bad)))
    with pytest.raises(ValueError, match="truncated"):
        list(wire.operations(b"\x00\x00\x00\x05E"))
    with pytest.raises(ValueError, match="do not add up"):
        list(wire.operations(wire.encode_batch([(wire.EVENT, "s_x", 1, b"{}")]) + b"extra"))


async def test_a_budget_write_carries_the_total_so_a_batch_sent_twice_is_harmless():
    store = SQLiteStore("/nonexistent/never-opened.db")
    store._days.set("token:a", "2026-12-02", 100)  # as if read from the file before
    assert await store.spend("token:a", "2026-12-02", 25) == 125
    assert await store.spend("token:a", "2026-12-02", 5) == 130
    ops = list(wire.operations(wire.split_frames(batch_of(store))[0][0][1]))
    assert ops == [("B", "token:a", 125, b"2026-12-02"), ("B", "token:a", 130, b"2026-12-02")]
