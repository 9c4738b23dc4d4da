"""Tests for myagent.agents.llm.base helpers."""

from __future__ import annotations

from myagent.agents.llm.base import LLMResponse, ToolCall, message_text, response_to_message


def test_response_to_message_with_tool_calls() -> None:
    response = LLMResponse(content="", tool_calls=[ToolCall("call_1", "get_weather", '{"city": "x"}')])
    assert response_to_message(response) == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "x"}'}}
        ],
    }


def test_response_to_message_omits_empty_tool_calls() -> None:
    assert response_to_message(LLMResponse(content="hi", tool_calls=[])) == {"role": "assistant", "content": "hi"}


def test_message_text() -> None:
    assert message_text({"content": "a"}) == "a"
    assert message_text({"content": None}) == ""
    assert message_text({"content": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"text": "b"}]}) == "ab"
