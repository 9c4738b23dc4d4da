"""Tests for myagent.agents.llm.script: validation, step selection, templates."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from myagent.agents.llm.script import (
    coerce_script,
    load_script,
    parse_script,
    plan_reply,
    render_reply,
    substitute,
)

from ._samples import WEATHER_SCRIPT

SCRIPT = parse_script(WEATHER_SCRIPT)


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str = "", calls: int = 0) -> dict:
    message: dict = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {"id": f"c{i}", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            for i in range(calls)
        ]
    return message


def tool(text: str) -> dict:
    return {"role": "tool", "tool_call_id": "c0", "content": text}


def test_builtin_echo_script() -> None:
    deltas, response = render_reply(coerce_script(None), [user("hello there")])
    assert "".join(deltas) == response.content == "You said: hello there"
    assert deltas[0] == "You " and all(len(d) <= 4 for d in deltas)
    assert response.tool_calls == [] and response.finish_reason == "stop"


def test_rule_match_is_case_insensitive_on_last_user_message() -> None:
    _, first = render_reply(SCRIPT, [user("What's the WEATHER?")])
    assert first.content == "Let me check." and first.finish_reason == "tool_calls"
    _, other = render_reply(SCRIPT, [user("weather?"), assistant("x"), user("thanks")])
    assert other.content.endswith("You said: thanks")


def test_step_k_counts_assistant_messages_after_last_user() -> None:
    history = [user("weather please"), assistant("Let me check.", calls=1), tool("sunny 25C")]
    _, response = render_reply(SCRIPT, history)
    assert response.content == "Weather: sunny 25C"
    assert response.tool_calls == []


def test_past_the_end_reuses_last_step_without_tool_calls() -> None:
    script = parse_script({"default": [{"content": "again {tool_result}", "tool_calls": [{"name": "t"}]}]})
    _, first = render_reply(script, [user("go")])
    assert [c.name for c in first.tool_calls] == ["t"]
    _, second = render_reply(script, [user("go"), assistant(calls=1), tool("ok")])
    assert second.tool_calls == [] and second.content == "again ok"
    assert second.finish_reason == "stop"


def test_tool_call_ids_and_argument_templates() -> None:
    script = parse_script({"default": [
        {"tool_calls": [{"name": "a", "arguments": {"q": "{user}", "n": 1, "nested": ["{turn}"]}},
                        {"name": "b", "arguments": "{not json"}]},
    ]})
    _, response = render_reply(script, [user("x"), assistant("hi"), user('say "北京"')])
    assert [c.id for c in response.tool_calls] == ["call_2_0_0", "call_2_0_1"]
    assert json.loads(response.tool_calls[0].arguments) == {"q": 'say "北京"', "n": 1, "nested": ["2"]}
    assert response.tool_calls[1].arguments == "{not json"  # raw strings are sent verbatim


def test_all_template_names() -> None:
    script = parse_script({"default": [{"content": "{turn}|{first_user}|{previous_user}|{user}|{tool_result}"}]})
    history = [user("one"), assistant("a"), user("two"), assistant(calls=1), tool("T"), user("three")]
    _, response = render_reply(script, history)
    assert response.content == "3|one|two|three|T"
    _, first = render_reply(script, [user("only")])
    assert first.content == "1|only||only|"


def test_unknown_placeholders_and_braces_stay_literal() -> None:
    values = {"user": "U"}
    assert substitute("{nope} {user} {{user}} {", values) == "{nope} U {U} {"


def test_multimodal_user_content_uses_text_parts() -> None:
    message = {"role": "user", "content": [{"type": "text", "text": "weather"}, {"type": "image_url"}]}
    _, response = render_reply(SCRIPT, [message])
    assert response.content == "Let me check."


def test_plan_reply_carries_pacing() -> None:
    script = parse_script({"default": [{"content": "x", "delay_ms": 7}], "token_delay_ms": 2})
    reply = plan_reply(script, [user("hi")])
    assert (reply.delay_ms, reply.token_delay_ms) == (7.0, 2.0)


@given(st.text())
def test_arbitrary_user_text_is_substituted_literally(text: str) -> None:
    _, response = render_reply(coerce_script(None), [user(text)])
    assert response.content == f"You said: {text}"


@given(st.text(alphabet=st.sampled_from("{}u_serndtoil ")))
def test_brace_soup_never_rescans(text: str) -> None:
    script = parse_script({"default": [{"content": "<{user}>", "tool_calls": [{"name": "f", "arguments": {"a": "{user}"}}]}]})
    deltas, response = render_reply(script, [user(text)])
    assert "".join(deltas) == response.content == f"<{text}>"
    assert json.loads(response.tool_calls[0].arguments) == {"a": text}


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ([], "top level"),
        ({"rules": {}}, "rules"),
        ({"rules": [{"match": 1, "steps": [{}]}]}, "rules[0].match"),
        ({"rules": [{"match": "x", "steps": []}]}, "rules[0].steps"),
        ({"default": [{"content": 3}]}, "default[0].content"),
        ({"default": [{"tool_calls": [{"arguments": {}}]}]}, "default[0].tool_calls[0].name"),
        ({"default": [{"tool_call": []}]}, "unknown keys"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"default": [{"delay_ms": -1}]}, "default[0].delay_ms"),
    ],
)
def test_parse_errors_name_the_field(doc: object, where: str) -> None:
    with pytest.raises(ValueError, match="my.json") as info:
        parse_script(doc, "my.json")
    assert where in str(info.value)


def test_load_script_errors_name_the_path(tmp_path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(ValueError, match=f"{missing}: file not found"):
        load_script(missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{nope", encoding="utf-8")
    with pytest.raises(ValueError, match=f"{bad}: not valid JSON"):
        load_script(bad)
    shape = tmp_path / "shape.json"
    shape.write_text('{"default": "hi"}', encoding="utf-8")
    with pytest.raises(ValueError, match="shape.json: default must be a non-empty list"):
        load_script(shape)


def test_load_script_ok(tmp_path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(WEATHER_SCRIPT, ensure_ascii=False), encoding="utf-8")
    script = load_script(path)
    assert script.source == str(path) and script.chunk_size == 3
    assert coerce_script(str(path)) == script
