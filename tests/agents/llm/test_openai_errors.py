"""Tests for myagent.agents.llm.openai_errors: user-safe error messages."""

from __future__ import annotations

import httpx2
import openai
import pytest

from myagent.agents.llm.openai_errors import map_openai_error, redact, safe_url

REQUEST = httpx2.Request("POST", "http://127.0.0.1:1/v1/chat/completions")


def status_error(status: int, body: object) -> openai.APIStatusError:
    response = httpx2.Response(status, request=REQUEST)
    return openai.APIStatusError("Error code", response=response, body=body)


def test_safe_url_strips_credentials_and_query() -> None:
    assert safe_url("https://bob:pw@llm.example:8443/v1/?key=abc#x") == "https://llm.example:8443/v1"
    assert safe_url(None) == "the default OpenAI endpoint"


def test_redact_key_like_tokens_and_configured_key() -> None:
    text = "Incorrect API key provided: sk-proj-abcdef123456. Also mysecret here"
    out = redact(text, secret="mysecret")
    assert "abcdef" not in out and "mysecret" not in out and "Incorrect API key" in out
    assert len(redact("x" * 1000)) < 310


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (openai.APIConnectionError(request=REQUEST), "LLM endpoint unreachable at http://h/v1 after 3 attempts"),
        (openai.APITimeoutError(request=REQUEST), "LLM endpoint http://h/v1 timed out after 3 attempts"),
        (status_error(503, {"error": {"message": "overloaded"}}), "LLM returned HTTP 503 after 3 attempts: overloaded"),
        (status_error(400, {"message": "bad tool schema"}), "LLM returned HTTP 400: bad tool schema"),
        (status_error(401, {"error": {"message": "key sk-live-12345678 wrong"}}),
         "LLM returned HTTP 401 (check OPENAI_API_KEY): key *** wrong"),
        (RuntimeError("secret internals"), "LLM request to http://h/v1 failed (RuntimeError)"),
    ],
)
def test_map_openai_error(exc: BaseException, expected: str) -> None:
    assert str(map_openai_error(exc, url="http://h/v1", attempts=3, api_key="sk-x")) == expected
