import struct

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from myagent.protocol.errors import ErrorCode
from myagent.protocol.exceptions import FrameError, FrameTooLarge
from myagent.protocol.framing import DEFAULT_MAX_FRAME, HEADER_SIZE, FrameDecoder, encode_frame, frame

from .strategies import json_values

GiB = 1 << 30


def header(length: int) -> bytes:
    return struct.pack(">I", length)


def loads(bodies: list[bytes]) -> list:
    return [orjson.loads(body) for body in bodies]


def test_wire_format():
    assert encode_frame({"a": 1}) == b'\x00\x00\x00\x07{"a":1}'
    assert DEFAULT_MAX_FRAME == 16 * 1024 * 1024


def test_round_trip_one_frame():
    obj = {"op": "event", "data": [1, "two", None, 3.5, {"x": True}]}
    assert loads(FrameDecoder().feed(encode_frame(obj))) == [obj]


def test_many_frames_in_one_chunk_and_one_byte_at_a_time():
    objs = [{"i": i, "s": "x" * i} for i in range(50)]
    stream = b"".join(encode_frame(o) for o in objs)
    assert loads(FrameDecoder().feed(stream)) == objs
    decoder = FrameDecoder()
    out = []
    for i in range(len(stream)):
        out += decoder.feed(stream[i : i + 1])
    assert loads(out) == objs
    assert decoder.buffered == 0


def test_incomplete_frame_is_held_until_complete():
    frame = encode_frame({"k": "v" * 100})
    decoder = FrameDecoder()
    assert decoder.feed(frame[:2]) == []
    assert decoder.feed(frame[2:50]) == []
    assert decoder.buffered == 50
    assert loads(decoder.feed(frame[50:] + frame[:3])) == [{"k": "v" * 100}]
    assert decoder.buffered == 3


@settings(max_examples=300, deadline=None)
@given(st.lists(json_values(), max_size=12), st.lists(st.integers(min_value=1, max_value=64), min_size=1), st.data())
def test_any_objects_round_trip_in_any_chunking(objs, sizes, data):
    stream = b"".join(encode_frame(o) for o in objs)
    decoder = FrameDecoder()
    out, pos, i = [], 0, 0
    while pos < len(stream):
        size = sizes[i % len(sizes)]
        out += decoder.feed(stream[pos : pos + size])
        pos, i = pos + size, i + 1
    assert loads(out) == objs
    assert decoder.buffered == 0
    # and split at arbitrary points drawn by hypothesis
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder, out, prev = FrameDecoder(), [], 0
    for cut in [*cuts, len(stream)]:
        out += decoder.feed(stream[prev:cut])
        prev = cut
    assert loads(out) == objs


def test_empty_chunks_are_harmless():
    decoder = FrameDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(encode_frame(1)) == [b"1"]
    assert decoder.feed(b"") == []


# -- limits ------------------------------------------------------------------------------


def test_oversize_header_is_rejected_before_any_body_is_buffered():
    decoder = FrameDecoder()
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(header(GiB))  # just the header of a 1 GiB frame
    assert info.value.code == ErrorCode.INTERNAL_ERROR
    assert decoder.buffered == 0


def test_oversize_header_split_across_chunks():
    decoder = FrameDecoder(max_size=1000)
    assert decoder.feed(header(1001)[:3]) == []
    with pytest.raises(FrameTooLarge):
        decoder.feed(header(1001)[3:])


def test_oversize_header_after_good_frames_in_the_same_chunk():
    decoder = FrameDecoder(max_size=100)
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_frame("ok") + header(GiB) + b"{")


def test_max_size_boundary():
    body_len = 100
    obj = "x" * (body_len - 2)  # a JSON string: two quotes
    assert len(orjson.dumps(obj)) == body_len
    assert loads(FrameDecoder(max_size=body_len).feed(encode_frame(obj, max_size=body_len))) == [obj]
    with pytest.raises(FrameTooLarge):
        encode_frame(obj + "x", max_size=body_len)
    with pytest.raises(FrameTooLarge):
        FrameDecoder(max_size=body_len - 1).feed(encode_frame(obj))


@pytest.mark.parametrize("max_size", [0, -1, 1 << 32])
def test_max_size_must_fit_the_header(max_size):
    with pytest.raises(ValueError):
        FrameDecoder(max_size=max_size)


# -- bodies are bytes: what they mean is the receiver's business --------------------------


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"\xff\xfe", b"E s_1\0t_1\0agent.x\0{}", b"[" * 5000])
def test_any_body_passes_through_untouched(body):
    assert FrameDecoder().feed(frame(body)) == [body]


def test_decoder_stays_failed_after_a_length_error():
    decoder = FrameDecoder(max_size=10)
    with pytest.raises(FrameError):
        decoder.feed(header(11))
    with pytest.raises(FrameError):
        decoder.feed(encode_frame({"fine": True}))


@pytest.mark.parametrize("obj", [object(), {1: "non-str key"}, 2**64, {"s": "\ud800"}])
def test_encode_errors_are_frame_errors(obj):
    with pytest.raises(FrameError) as info:
        encode_frame(obj)
    assert type(info.value) is FrameError


# -- efficiency ---------------------------------------------------------------------------


def test_buffer_is_compacted_not_grown():
    frame = encode_frame({"data": "y" * 1000})
    decoder = FrameDecoder()
    partial = frame[:10]
    assert decoder.feed(partial) == []
    # Many chunks that each end mid-frame: consumed bytes must not pile up.
    for _ in range(2000):
        assert len(decoder.feed(frame[10:] + partial)) == 1
        assert len(decoder._buf) < 70_000 + 2 * len(frame)


def test_large_frame_in_small_chunks():
    obj = {"blob": "z" * (4 * 1024 * 1024)}
    frame = encode_frame(obj)
    decoder = FrameDecoder()
    out = []
    for i in range(0, len(frame), 4096):
        out += decoder.feed(frame[i : i + 4096])
    assert loads(out) == [obj]
    assert decoder.buffered == 0
    assert HEADER_SIZE == 4
