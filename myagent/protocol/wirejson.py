"""Inbound client text -> dict: the single entry point, with every JSON edge case decided.

:func:`parse_client_frame` turns one WebSocket text frame into a ``dict`` or
raises :class:`~myagent.protocol.exceptions.InvalidJSON` (code
``INVALID_JSON``) with a short message that is safe to send back. Schema rules
come afterwards (``schema.validate_client_frame``). Decisions:

==============================  =================================================================
input                           outcome
==============================  =================================================================
not JSON / truncated / trailing InvalidJSON "invalid JSON: <reason> at line L, column C"
garbage / empty
top level not an object         InvalidJSON "a frame must be a JSON object" (arrays, strings,
                                numbers, true/false/null)
``NaN``, ``Infinity``,          InvalidJSON (orjson rejects them: not JSON). ``1e400``, which
``-Infinity``                   would overflow to infinity, is rejected the same way.
integers outside                InvalidJSON "integer out of range". orjson would silently turn
[-2**63, 2**64-1]               them into imprecise floats; every accepted int is exact and
                                re-encodable by orjson. Floats (``1e19``) are floats and fine.
                                Found exactly: only a frame with a run of 19+ digits is
                                re-parsed by the stdlib parser with an int hook.
nesting deeper than max_depth   InvalidJSON "invalid JSON: nesting is deeper than N levels",
(default 32; top level = 1)     checked on the raw text BEFORE parsing (see below); brackets
                                inside strings do not count. Brackets that cannot pair up:
                                "invalid JSON: unbalanced brackets"
lone surrogate escapes          InvalidJSON (orjson rejects ``"\\ud800"`` and reversed pairs), so
(``"\\ud800"``)                 a parsed frame always re-encodes and logs cleanly
duplicate keys                  accepted, the last one wins (orjson; RFC 8259 leaves it open)
bytes: invalid UTF-8            InvalidJSON "frame is not valid UTF-8" (this includes encoded
                                surrogates and overlong forms)
str with lone surrogate chars   InvalidJSON "frame is not valid Unicode (lone surrogate)"
UTF-8 byte order mark           InvalidJSON (orjson rejects it; RFC 8259 says do not send one)
whitespace around the object    accepted
==============================  =================================================================

Why depth is checked before parsing: orjson 3.8 has no nesting limit and
crashes the interpreter (segfault) from ~200 000 nested arrays (400 KB of
``[``), and newer orjson (3.13 checked) only stops at 1024 levels. On ordinary
frames the check costs one ``bytes.translate`` pass, shared with the
big-integer pre-check: only when the frame holds more opening brackets than
``max_depth`` does
:func:`nesting_error` strip string literals (``split``/``join``), keep the
bracket skeleton (``translate``) and peel innermost pairs with
``bytes.replace``: at most ``max_depth`` C-speed passes, no Python loop per
byte. Worst cases (1 MB of crafted brackets) cost 5-20 ms.
"""

from __future__ import annotations

import json

import orjson

from .exceptions import InvalidJSON

__all__ = ["DEFAULT_MAX_DEPTH", "parse_client_frame", "nesting_error"]

DEFAULT_MAX_DEPTH = 32

_INT_MIN = -(1 << 63)  # orjson's range for exact ints, both directions
_INT_MAX = (1 << 64) - 1

# Map { } to [ ] and delete every other byte: only the bracket skeleton stays.
_BRACKETS_TABLE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_OPENERS = bytes(b for b in range(256) if b not in b"[{")
# Character classes for the pre-checks: '[' for an opening bracket, '0' for
# a digit, 'x' for anything else. An out-of-range integer literal has at least
# 19 digits in a row.
_CHAR_CLASSES = bytes(
    ord("[") if b in b"[{" else ord("0") if b in b"0123456789" else ord("x") for b in range(256)
)
_DIGIT_RUN = b"0" * 19


def nesting_error(data: bytes | bytearray, max_depth: int) -> str | None:
    """Why ``data`` (JSON text) nests too deeply, or None if it does not.

    Only brackets outside string literals count; an object or array at the
    top level is depth 1. Returns ``"too deep"`` or ``"unbalanced"``
    (brackets that can never pair up: invalid JSON whatever else it holds).
    Cheap when the text has at most ``max_depth`` opening brackets.
    """
    if len(data.translate(None, _NOT_OPENERS)) <= max_depth:  # faster than two count()s
        return None
    # Drop string literals: remove escaped backslashes, then escaped quotes;
    # every other quote now delimits a string, so the even pieces of a split
    # on '"' are the text outside strings. (Several times faster than a regex
    # substitution on frames made of many short strings.) Valid JSON has no
    # backslash outside strings; for invalid JSON any skeleton will do (it is
    # rejected either here, as unbalanced, or by orjson).
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(data.split(b'"')[::2])
    skeleton = outside.translate(_BRACKETS_TABLE, _NOT_BRACKETS)
    too_deep = b"[" * (max_depth + 1)
    # After k passes every balanced group of depth <= k is gone.
    for _ in range(max_depth):
        if not skeleton:
            return None
        if too_deep in skeleton:
            return "too deep"
        peeled = skeleton.replace(b"[]", b"")
        if len(peeled) == len(skeleton):
            return "unbalanced"
        skeleton = peeled
    return "too deep" if skeleton else None


class _IntOutOfRange(Exception):
    pass


def _checked_int(literal: str) -> int:
    value = int(literal)
    if not _INT_MIN <= value <= _INT_MAX:
        raise _IntOutOfRange
    return value


def _decode_error_message(exc: orjson.JSONDecodeError) -> str:
    # orjson's messages are fixed texts (they never quote the input); we still
    # translate the common ones into words a client developer understands.
    # (str input was encoded to UTF-8 already, so a UTF-8 error means bytes.)
    msg = exc.msg
    if "UTF-8" in msg:
        return "frame is not valid UTF-8"
    if "surrogate" in msg:
        return (
            f"invalid JSON: lone surrogate escape in a string at line {exc.lineno}, column {exc.colno} "
            "(\\ud800-\\udfff escapes must form valid pairs)"
        )
    if exc.pos == 0 and ("empty" in msg or "length is 0" in msg):
        return "invalid JSON: empty frame"
    return f"invalid JSON: {msg[:100]} at line {exc.lineno}, column {exc.colno}"


def parse_client_frame(data: str | bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> dict:
    """Parse one inbound client frame into a dict, or raise :class:`InvalidJSON`.

    ``data`` is the text of a WebSocket text frame (``str``), or its UTF-8
    bytes (``bytes``/``bytearray``/``memoryview``). See the module docstring
    for how every edge case is treated.
    """
    if isinstance(data, str):
        try:
            raw = data.encode()
        except UnicodeEncodeError:
            raise InvalidJSON("frame is not valid Unicode (lone surrogate)") from None
    elif isinstance(data, (bytes, bytearray)):
        raw = data
    elif isinstance(data, memoryview):
        raw = data.tobytes()
    else:
        raise TypeError(f"parse_client_frame expects str or bytes, not {type(data).__name__}")

    # One C-speed pass serves both pre-checks (a regex would cost 10x more).
    classes = raw.translate(_CHAR_CLASSES)
    if classes.count(b"[") > max_depth:
        _check_depth(raw, max_depth)

    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(_decode_error_message(exc)) from None

    if type(obj) is not dict:
        raise InvalidJSON("a frame must be a JSON object")

    if _DIGIT_RUN in classes:
        # Rare: some literal has 19+ digits. The stdlib parser tells integer
        # literals from floats exactly (orjson already turned big ints into floats).
        try:
            json.loads(raw, parse_int=_checked_int)
        except _IntOutOfRange:
            raise InvalidJSON(
                "invalid JSON: integer out of range (integers must lie in [-2**63, 2**64-1])"
            ) from None
        except (ValueError, RecursionError):  # cannot happen after orjson accepted it; be safe
            raise InvalidJSON("invalid JSON") from None
    return obj


def _check_depth(raw: bytes, max_depth: int) -> None:
    reason = nesting_error(raw, max_depth)
    if reason == "too deep":
        raise InvalidJSON(f"invalid JSON: nesting is deeper than {max_depth} levels")
    if reason == "unbalanced":
        raise InvalidJSON("invalid JSON: unbalanced brackets")
