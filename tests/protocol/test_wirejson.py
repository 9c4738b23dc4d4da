import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from myagent.protocol.errors import ErrorCode
from myagent.protocol.exceptions import InvalidJSON
from myagent.protocol.wirejson import DEFAULT_MAX_DEPTH, nesting_error, parse_client_frame

from .strategies import json_values


def invalid(data, **kw) -> InvalidJSON:
    with pytest.raises(InvalidJSON) as info:
        parse_client_frame(data, **kw)
    exc = info.value
    assert exc.code == ErrorCode.INVALID_JSON
    assert len(exc.message) < 200 and "Traceback" not in exc.message
    return exc


def both(text: str):
    """The same frame as str and as UTF-8 bytes."""
    return [text, text.encode()]


@pytest.mark.parametrize("data", both('{"event": "user.message", "content": "hi"}'))
def test_plain_object(data):
    assert parse_client_frame(data) == {"event": "user.message", "content": "hi"}


def test_bytearray_and_memoryview():
    assert parse_client_frame(bytearray(b'{"a":1}')) == {"a": 1}
    assert parse_client_frame(memoryview(b'{"a":1}')) == {"a": 1}
    with pytest.raises(TypeError):
        parse_client_frame(123)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["", " ", "x", "{", '{"a":1', '{"a":1}}', "{'a':1}", '{"a":1,}', '{"a":1} x'])
def test_not_json(text):
    for data in both(text):
        assert invalid(data).message.startswith("invalid JSON")


@pytest.mark.parametrize("text", ["[]", "[1,2]", '"text"', "42", "1.5", "true", "false", "null", '[{"event":"x"}]'])
def test_top_level_must_be_an_object(text):
    for data in both(text):
        assert invalid(data).message == "a frame must be a JSON object"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "nan", "inf", "1e400", "-1e400"])
def test_nan_and_infinity_are_rejected(literal):
    for data in both('{"a": %s}' % literal):
        invalid(data)


@pytest.mark.parametrize("value", [0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 10**18])
def test_integers_in_range_are_exact(value):
    for data in both('{"a": %d}' % value):
        obj = parse_client_frame(data)
        assert obj["a"] == value and type(obj["a"]) is int
        assert orjson.loads(orjson.dumps(obj)) == obj


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 10**30, -(10**40)])
def test_integers_beyond_64_bit_are_rejected(value):
    for data in both('{"a": {"b": [1, %d]}}' % value):
        assert "integer out of range" in invalid(data).message


def test_long_digit_runs_that_are_not_big_integers_are_fine():
    obj = parse_client_frame('{"a": "123456789012345678901234567890", "b": 1.2345678901234567890123, "c": 1e30}')
    assert obj["a"] == "123456789012345678901234567890"
    assert isinstance(obj["b"], float) and obj["c"] == 1e30


@pytest.mark.parametrize("escape", [r"\ud800", r"\udfff", r"\udc00\ud800", r"x\ud83dy", r"\ud83d\u0041"])
def test_lone_surrogate_escapes_are_rejected(escape):
    for data in both('{"a": "%s"}' % escape):
        assert "surrogate" in invalid(data).message


def test_valid_surrogate_pair_escape_is_fine():
    obj = parse_client_frame(r'{"a": "\ud83d\ude00"}')
    assert obj == {"a": "\U0001f600"}
    orjson.dumps(obj)


def test_str_with_lone_surrogate_character_is_rejected():
    assert "surrogate" in invalid('{"a": "\ud800"}').message
    # also on the path that checks depth first
    assert "surrogate" in invalid('{"a": "\ud800", "b": ' + "[" * 40 + "]" * 40 + "}").message


@pytest.mark.parametrize(
    "data",
    [b'{"a": "\xff"}', b'{"a": "\xc3"}', b'{"a": "\xed\xa0\x80"}', b'{"a": "\xc0\xaf"}', b"\xff{}", b"{}\x80"],
)
def test_invalid_utf8_bytes(data):
    assert invalid(data).message == "frame is not valid UTF-8"


def test_byte_order_mark_is_rejected():
    invalid(b'\xef\xbb\xbf{"a": 1}')


def test_duplicate_keys_last_one_wins():
    assert parse_client_frame('{"event": "a", "event": "b"}') == {"event": "b"}


def test_whitespace_around_the_object_is_fine():
    assert parse_client_frame(' \n\t{"a": 1}\r\n ') == {"a": 1}


# -- nesting depth ------------------------------------------------------------------


def nested(depth: int) -> str:
    """An object whose deepest container is at `depth` (top level = 1)."""
    return '{"a":' + "[" * (depth - 1) + "1" + "]" * (depth - 1) + "}"


@pytest.mark.parametrize("max_depth", [1, 2, 8, DEFAULT_MAX_DEPTH])
def test_depth_limit_is_exact(max_depth):
    for data in both(nested(max_depth)):
        parse_client_frame(data, max_depth=max_depth)
    for data in both(nested(max_depth + 1)):
        assert "deeper than" in invalid(data, max_depth=max_depth).message


def test_brackets_inside_strings_do_not_count():
    text = '{"a": "' + "[{" * 100 + '", "b": "\\"' + "[" * 50 + '\\\\", "c": [1, {"d": []}]}'
    assert parse_client_frame(text)["c"] == [1, {"d": []}]


def test_wide_but_shallow_frames_are_fine():
    text = '{"a": [' + ",".join(['{"b": [1, 2]}'] * 5000) + "]}"
    assert len(parse_client_frame(text)["a"]) == 5000


def test_unbalanced_brackets():
    for data in both('{"a": ' + "[" * 40 + "}"):
        invalid(data)


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 1_000_000,
        b"[" * 1_000_000 + b"]" * 1_000_000,
        b'{"a":' * 300_000 + b"1" + b"}" * 300_000,
        b"[[]" * 300_000,
    ],
    ids=["open", "balanced", "objects", "staircase"],
)
def test_pathological_nesting_is_rejected_fast(payload):
    # orjson 3.8 segfaults parsing ~200k nested arrays: the guard must stop these first.
    start = time.perf_counter()
    invalid(payload)
    invalid(payload.decode())
    assert time.perf_counter() - start < 1.0


@settings(max_examples=300, deadline=None)
@given(json_values(max_leaves=30), st.integers(min_value=1, max_value=6))
def test_nesting_error_agrees_with_the_real_depth(value, max_depth):
    def depth(v) -> int:
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        return 0

    data = orjson.dumps(value)
    expected = "too deep" if depth(value) > max_depth else None
    assert nesting_error(data, max_depth) == expected


# -- properties ------------------------------------------------------------------------


@settings(deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_values(), max_size=6))
def test_any_json_object_round_trips(obj):
    for data in (orjson.dumps(obj), orjson.dumps(obj).decode()):
        parsed = parse_client_frame(data, max_depth=64)
        assert parsed == obj
        assert orjson.loads(orjson.dumps(parsed)) == parsed  # always re-encodable


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_garbage_never_raises_anything_but_invalid_json(data):
    try:
        obj = parse_client_frame(data)
    except InvalidJSON:
        return
    assert type(obj) is dict
    orjson.dumps(obj)


@given(st.text(alphabet='{}[]",:\\ 0123456789.eE-tfnaulsr', max_size=120))
def test_json_alphabet_soup_never_raises_anything_but_invalid_json(data):
    try:
        obj = parse_client_frame(data, max_depth=4)
    except InvalidJSON:
        return
    assert type(obj) is dict
    orjson.dumps(obj)
