import orjson
import pytest

from myagent.protocol.errors import ERROR_DESCRIPTIONS, RECOVERABLE, ErrorCode, is_recoverable

REQUIRED = """INVALID_JSON SCHEMA_VIOLATION UNKNOWN_EVENT UNSUPPORTED_FRAME SESSION_NOT_FOUND SESSION_BUSY
NO_ACTIVE_TURN STEP_NOT_FOUND RATE_LIMITED MESSAGE_TOO_LARGE SERVER_BUSY TOO_MANY_SESSIONS UNAUTHORIZED
AGENT_UNAVAILABLE LLM_ERROR TOOL_ERROR MAX_STEPS SANDBOX_CRASHED MEMORY_LIMIT CPU_LIMIT TURN_TIMEOUT
WORKER_TIMEOUT CANCELLED SHUTTING_DOWN INVALID_RESUME_TOKEN REPLAY_UNAVAILABLE STATE_INVALID STATE_EXPIRED
STORE_UNAVAILABLE INTERNAL_ERROR""".split()


def test_required_codes_exist():
    assert set(REQUIRED) <= {code.name for code in ErrorCode}


@pytest.mark.parametrize("code", list(ErrorCode), ids=str)
def test_every_code_is_documented(code: ErrorCode):
    assert code.value == code.name
    assert isinstance(RECOVERABLE[code], bool)
    description = ERROR_DESCRIPTIONS[code]
    assert description and "\n" not in description and len(description) <= 120
    assert description[0].isupper() and description.endswith(".")


def test_tables_cover_exactly_the_codes():
    assert set(RECOVERABLE) == set(ErrorCode) == set(ERROR_DESCRIPTIONS)


def test_code_renders_as_its_value():
    code = ErrorCode.SESSION_BUSY
    assert code == "SESSION_BUSY"
    assert str(code) == f"{code}" == "SESSION_BUSY"
    assert orjson.dumps({"error_code": code}) == b'{"error_code":"SESSION_BUSY"}'
    assert ErrorCode("SESSION_BUSY") is code


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (ErrorCode.SESSION_BUSY, True),
        (ErrorCode.RATE_LIMITED, True),
        (ErrorCode.INVALID_JSON, True),
        (ErrorCode.SANDBOX_CRASHED, True),
        (ErrorCode.AGENT_UNAVAILABLE, False),
        (ErrorCode.UNAUTHORIZED, False),
        (ErrorCode.SESSION_NOT_FOUND, False),
        (ErrorCode.STATE_INVALID, False),
    ],
)
def test_is_recoverable(code, expected):
    assert is_recoverable(code) is expected
    assert is_recoverable(code.value) is expected


def test_unknown_codes_are_not_recoverable():
    assert is_recoverable("NO_SUCH_CODE") is False
    assert is_recoverable("") is False
