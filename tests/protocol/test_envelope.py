import math
import re
from datetime import datetime, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from myagent.protocol.envelope import (
    encode_event,
    encode_event_bytes,
    event_id,
    iso_utc,
    make_event,
    now_iso,
    parse_event_id,
)

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def reference(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_iso_utc_examples():
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1764088345.123) == "2025-11-25T16:32:25.123Z"
    assert iso_utc(1764088345.9999) == "2025-11-25T16:32:25.999Z"  # truncated, not rounded up
    assert TIMESTAMP.match(now_iso())


@given(st.floats(min_value=0, max_value=4_102_444_800))  # up to 2100
def test_iso_utc_matches_datetime(epoch):
    result = iso_utc(epoch)
    assert TIMESTAMP.match(result)
    assert result == reference(epoch)


def test_iso_utc_cache_follows_the_second():
    base = 1_800_000_000
    assert iso_utc(base + 0.5) == reference(base + 0.5)
    assert iso_utc(base + 1.001) == reference(base + 1.001)
    assert iso_utc(base + 0.999) == reference(base + 0.999)  # going back in time too
    assert iso_utc(base - 86400.25) == reference(base - 86400.25)


def test_make_event_minimal():
    d = make_event("system.heartbeat", timestamp="T")
    assert d == {"event": "system.heartbeat", "timestamp": "T", "content": None, "metadata": {}}
    assert list(d) == ["event", "timestamp", "content", "metadata"]


def test_make_event_full_key_order_and_event_id():
    meta = {"turn_id": "t1"}
    d = make_event(
        "agent.tool_call", metadata=meta, content="Calling tool: x", step_id="st", seq=7,
        session_id="s:1", timestamp="T",
    )
    assert list(d) == ["event", "timestamp", "session_id", "seq", "event_id", "step_id", "content", "metadata"]
    assert d["event_id"] == "s:1:7" == event_id("s:1", 7)
    assert d["metadata"] is meta


@pytest.mark.parametrize(
    ("kwargs", "keys"),
    [
        ({"session_id": "s"}, ["event", "timestamp", "session_id", "content", "metadata"]),
        ({"step_id": "x"}, ["event", "timestamp", "step_id", "content", "metadata"]),
        ({"session_id": "s", "seq": 1}, ["event", "timestamp", "session_id", "seq", "event_id", "content", "metadata"]),
    ],
)
def test_optional_keys_only_when_given(kwargs, keys):
    assert list(make_event("agent.thinking", timestamp="T", **kwargs)) == keys


def test_seq_requires_session_id():
    with pytest.raises(ValueError):
        make_event("agent.thinking", seq=1, timestamp="T")


def test_encode_event():
    d = make_event("agent.final_answer", session_id="s", seq=2, content="héllo", timestamp=iso_utc(0))
    text = encode_event(d)
    assert isinstance(text, str)
    assert orjson.loads(text) == d
    assert text.startswith('{"event":"agent.final_answer","timestamp":"1970-01-01T00:00:00.000Z"')
    assert encode_event_bytes(d) == text.encode()


def test_nan_and_infinity_serialize_as_null():
    d = make_event("agent.tool_result", content={"a": math.nan, "b": math.inf, "c": -math.inf}, timestamp="T")
    assert orjson.loads(encode_event(d))["content"] == {"a": None, "b": None, "c": None}


def test_unencodable_content_raises_type_error():
    with pytest.raises(TypeError):
        encode_event(make_event("agent.thinking", content=object(), timestamp="T"))
    with pytest.raises(TypeError):
        encode_event(make_event("agent.thinking", content=2**64, timestamp="T"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abc:12", ("abc", 12)),
        ("a:b:3", ("a:b", 3)),
        ("abc", None),
        (":3", None),
        ("abc:", None),
        ("abc:-1", None),
        ("abc:1.5", None),
        ("abc:١٢", None),  # non-ASCII digits
    ],
)
def test_parse_event_id(value, expected):
    assert parse_event_id(value) == expected


@given(st.text(min_size=1), st.integers(min_value=0, max_value=2**53))
def test_event_id_round_trip(session_id, seq):
    assert parse_event_id(event_id(session_id, seq)) == (session_id, seq)
