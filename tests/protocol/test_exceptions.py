import copy
import pickle

import pytest

from myagent.protocol.errors import ErrorCode
from myagent.protocol.exceptions import (
    MAX_MESSAGE_CHARS,
    FrameError,
    FrameTooLarge,
    InvalidJSON,
    ProtocolError,
    SchemaViolation,
    UnknownEvent,
)


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (ProtocolError, ErrorCode.INTERNAL_ERROR),
        (InvalidJSON, ErrorCode.INVALID_JSON),
        (SchemaViolation, ErrorCode.SCHEMA_VIOLATION),
        (UnknownEvent, ErrorCode.UNKNOWN_EVENT),
        (FrameError, ErrorCode.INTERNAL_ERROR),
        (FrameTooLarge, ErrorCode.INTERNAL_ERROR),
    ],
)
def test_codes(cls, code):
    exc = cls("boom")
    assert isinstance(exc, ProtocolError)
    assert exc.code == code
    assert exc.message == str(exc) == "boom"
    assert exc.field is None


def test_hierarchy():
    assert issubclass(FrameTooLarge, FrameError)
    for cls in (InvalidJSON, SchemaViolation, UnknownEvent, FrameError):
        assert cls.__bases__ == (ProtocolError,)


def test_field_and_code_override():
    exc = SchemaViolation("'content' must not be empty", "content")
    assert exc.field == "content"
    custom = ProtocolError("no such session", code=ErrorCode.SESSION_NOT_FOUND)
    assert custom.code == ErrorCode.SESSION_NOT_FOUND


def test_message_is_clipped():
    exc = InvalidJSON("x" * 10_000)
    assert len(exc.message) == MAX_MESSAGE_CHARS


def test_pickle_and_copy_keep_everything():
    exc = SchemaViolation("bad", "content.last_seq")
    for clone in (pickle.loads(pickle.dumps(exc)), copy.copy(exc)):
        assert type(clone) is SchemaViolation
        assert (clone.message, clone.field, clone.code) == ("bad", "content.last_seq", ErrorCode.SCHEMA_VIOLATION)
    assert "content.last_seq" in repr(exc)
