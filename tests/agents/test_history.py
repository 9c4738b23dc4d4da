"""repair_history and validate_history (myagent.agents.history)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from myagent.agents.history import INTERRUPTED_TOOL_CONTENT, repair_history, validate_history

from .fakes import assert_consistent


def user(text: str = "hi") -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(*ids: str, content: str = "") -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if ids:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": "t", "arguments": "{}"}} for i in ids
        ]
    return message


def result(call_id: str, content: str = "ok") -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def synthetic(call_id: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": INTERRUPTED_TOOL_CONTENT}


def test_a_valid_history_is_unchanged() -> None:
    history = [user(), assistant("a", "b"), result("b"), result("a"), assistant(content="done")]
    assert repair_history(history) == history
    validate_history(history)


def test_dangling_calls_get_results_right_after_the_others() -> None:
    history = [user(), assistant("a", "b", "c"), result("b"), user("next"), assistant(content="x")]
    assert repair_history(history) == [
        user(), assistant("a", "b", "c"), result("b"), synthetic("a"), synthetic("c"), user("next"), assistant(content="x"),
    ]


def test_dangling_calls_at_the_end() -> None:
    assert repair_history([user(), assistant("a")]) == [user(), assistant("a"), synthetic("a")]


def test_the_input_is_not_modified() -> None:
    history = [user(), assistant("a")]
    repair_history(history)
    assert history == [user(), assistant("a")]


@pytest.mark.parametrize(
    "garbage",
    [
        "text",
        None,
        42,
        {"content": "no role"},
        {"role": "system", "content": "prompt"},
        {"role": "robot", "content": "x"},
        {"role": "user", "content": 3},
        {"role": "assistant", "content": 3},
        {"role": "assistant", "content": "", "tool_calls": "x"},
        {"role": "tool", "content": "no id"},
        {"role": "tool", "tool_call_id": "a", "content": {"not": "text"}},
        {"role": "tool", "tool_call_id": "zzz", "content": "orphan"},
    ],
)
def test_garbage_is_dropped_and_validate_names_it(garbage: Any) -> None:
    history = [user(), assistant("a"), result("a"), garbage, user("again")]
    assert repair_history(history) == [user(), assistant("a"), result("a"), user("again")]
    with pytest.raises(ValueError, match=r"history\[3\]"):
        validate_history(history)


def test_bad_tool_calls_are_dropped_from_their_message() -> None:
    message = assistant("a")
    message["tool_calls"] += [{"id": "", "function": {"name": "t"}}, "junk", dict(message["tool_calls"][0])]
    assert repair_history([user(), message]) == [user(), assistant("a"), synthetic("a")]
    with pytest.raises(ValueError, match=r"tool_calls\[1\]"):
        validate_history([user(), message])


def test_normalization() -> None:
    messages = [
        {"role": "user", "content": "hi", "extra": 1},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "a", "function": {"name": "t", "arguments": {"x": 1}}}]},
        {"role": "tool", "tool_call_id": "a", "content": "ok", "name": "t"},
        {"role": "assistant", "content": None, "tool_calls": []},
    ]
    assert repair_history(messages) == [
        user(),
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "t", "arguments": '{"x":1}'}}]},
        result("a"),
        {"role": "assistant", "content": ""},
    ]


def test_multimodal_user_content_is_kept() -> None:
    message = {"role": "user", "content": [{"type": "text", "text": "look"}]}
    assert repair_history([message]) == [message]


def test_validate_accepts_dangling_calls_and_rejects_non_lists() -> None:
    validate_history([user(), assistant("a")])
    with pytest.raises(ValueError, match="list"):
        validate_history({"role": "user"})


@pytest.mark.parametrize("garbage", [None, 42, "text", {"role": "user", "content": "x"}])
def test_repair_of_a_non_list_is_empty(garbage: Any) -> None:
    assert repair_history(garbage) == []


_messages = st.one_of(
    st.builds(user, st.text(max_size=5)),
    st.builds(lambda ids: assistant(*ids), st.lists(st.sampled_from("abcd"), max_size=3, unique=True)),
    st.builds(result, st.sampled_from("abcde")),
    st.sampled_from([None, "junk", {"role": "system", "content": "s"}, {"role": "tool"}]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_messages, max_size=12))
def test_repair_always_yields_a_consistent_fixed_point(history: list[Any]) -> None:
    repaired = repair_history(history)
    assert_consistent(repaired)
    validate_history(repaired)
    assert repair_history(repaired) == repaired


def test_trim_history_keeps_the_tail_and_never_orphans_a_tool_result():
    from myagent import create_react_agent

    agent = create_react_agent(name="t", tools=[], system_prompt="", llm="offline")
    msgs = []
    for i in range(10):
        msgs += [{"role": "user", "content": f"u{i}"},
                 {"role": "assistant", "content": "", "tool_calls": [
                     {"id": f"c{i}", "type": "function", "function": {"name": "x", "arguments": "{}"}}]},
                 {"role": "tool", "tool_call_id": f"c{i}", "content": "r"},
                 {"role": "assistant", "content": f"a{i}"}]
    agent.load_history(msgs)
    dropped = agent.trim_history(6)
    kept = agent.history
    assert dropped >= 34 and len(kept) <= 6 and kept[-1]["content"] == "a9"
    assert kept[0]["role"] != "tool"  # the orphaned result of a trimmed call is gone
    assert agent.trim_history(100) == 0


# -- History: messages and their JSON, aligned ----------------------------------------


def test_history_keeps_each_message_and_its_json_aligned() -> None:
    import orjson

    from myagent.agents.history import History

    messages = [user("héllo 👋"), assistant("c1"), result("c1"), assistant(content="done")]
    history = History(messages[:2])
    for message in messages[2:]:
        data = history.append(message)
        assert orjson.loads(data) == message
    assert len(history) == 4
    assert history.messages == messages
    assert [orjson.loads(d) for d in history.encoded] == messages
    copy = History.copy_of(history.encoded[0])
    copy["content"] = "changed"
    assert history.messages[0]["content"] == "héllo 👋"


def test_history_json_is_compact() -> None:
    """orjson hands its output over in a 4 KiB buffer; a kept history must not hold that per message."""
    import sys

    from myagent.agents.history import compact_json

    data = compact_json(user("hi"))
    assert data == b'{"role":"user","content":"hi"}'
    assert sys.getsizeof(data) < 100
    assert bytes(memoryview(data)) == data


def test_history_scrubs_lone_surrogates_instead_of_failing() -> None:
    from myagent.agents.history import History

    history = History()
    history.append(result("c1", content="bad \ud800 byte"))
    assert history.messages[0]["content"] == "bad ? byte"
    assert b"bad ? byte" in history.encoded[0]
