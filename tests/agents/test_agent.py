"""The tool-calling loop of myagent.agents.agent, driven by an in-test fake LLM."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from myagent import Agent, AgentEvent, BaseTool, ToolResult, create_react_agent, create_toolcall_agent, tool
from myagent.agents.agent import DENIED
from myagent.agents.events import (
    ERROR,
    FINAL_ANSWER,
    PARTIAL_ANSWER,
    TERMINAL_KINDS,
    THINKING,
    TOOL_CALL,
    TOOL_RESULT,
    USER_CONFIRM,
    ConfirmRequest,
)
from myagent.agents.exceptions import AgentRunError, ToolDefinitionError
from myagent.agents.history import INTERRUPTED_TOOL_CONTENT
from myagent.agents.llm.base import LLMError, ToolCall

from .fakes import FakeLLM, Step, answer, assert_consistent, call, use


class AddTool(BaseTool):
    name = "add"
    description = "Add two integers."
    parameters = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    }

    async def execute(self, a: int, b: int) -> ToolResult:
        return ToolResult(output=str(a + b))


class BoomTool(BaseTool):
    name = "boom"
    description = "Always fails."

    async def execute(self) -> str:
        raise ValueError("kaboom")


class DeleteTool(BaseTool):
    name = "delete_file"
    description = "Delete a file."
    parameters = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
    requires_confirmation = True

    def __init__(self) -> None:
        self.deleted: list[str] = []

    async def execute(self, path: str) -> str:
        self.deleted.append(path)
        return f"deleted {path}"


def make_agent(llm: FakeLLM, tools: list[Any] | None = None, **kwargs: Any) -> Agent:
    return create_react_agent(
        name="test", tools=tools if tools is not None else [AddTool()], system_prompt="You are a test.", llm=llm, **kwargs
    )


async def collect(agent: Agent, text: str = "hi", **kwargs: Any) -> list[AgentEvent]:
    return [event async for event in agent.astream(text, **kwargs)]


def kinds(events: list[AgentEvent]) -> list[str]:
    return [e.kind for e in events if e.kind != PARTIAL_ANSWER]


def by_kind(events: list[AgentEvent], kind: str) -> list[AgentEvent]:
    return [e for e in events if e.kind == kind]


def assert_one_terminal(events: list[AgentEvent]) -> None:
    assert [e.kind in TERMINAL_KINDS for e in events].count(True) == 1
    assert events[-1].kind in TERMINAL_KINDS


# -- the happy path ------------------------------------------------------------------


async def test_tool_call_result_and_final_answer() -> None:
    llm = FakeLLM(use(call("add", {"a": 1, "b": 2}, id="c1")), answer("The sum is 3."))
    agent = make_agent(llm)
    seen: list[dict] = []
    events = await collect(agent, "what is 1+2?", on_message=seen.append)

    assert kinds(events) == [THINKING, TOOL_CALL, TOOL_RESULT, THINKING, FINAL_ANSWER]
    thinking = by_kind(events, THINKING)
    assert [e.metadata for e in thinking] == [{"step": 1}, {"step": 2}]
    assert thinking[0].content == "Step 1: thinking"
    (tool_call,) = by_kind(events, TOOL_CALL)
    assert tool_call.content == "Calling tool: add"
    assert tool_call.step_id == "c1"
    assert tool_call.metadata == {"tool": "add", "args": {"a": 1, "b": 2}, "status": "running"}
    (result,) = by_kind(events, TOOL_RESULT)
    assert result.content == "3"
    assert result.step_id == "c1"
    assert result.metadata == {"tool": "add", "status": "success", "error": None}
    assert events[-1].content == "The sum is 3."
    assert_one_terminal(events)

    history = agent.history
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    assert history[1]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 1, "b": 2}'}
    assert history[2] == {"role": "tool", "tool_call_id": "c1", "content": "3"}
    assert seen == history
    assert_consistent(history)

    first_messages, tools_schema = llm.calls[0]
    assert first_messages[0] == {"role": "system", "content": "You are a test."}
    assert first_messages[1:] == [{"role": "user", "content": "what is 1+2?"}]
    assert tools_schema == [AddTool().to_openai_tool()]
    assert llm.calls[1][0][1:] == history[:3]


async def test_final_answer_without_tools_calls_the_llm_once() -> None:
    llm = FakeLLM(answer("Hello there!"))
    agent = make_agent(llm)
    events = await collect(agent)
    assert kinds(events) == [THINKING, FINAL_ANSWER]
    assert len(llm.calls) == 1


async def test_deltas_are_forwarded_in_order_and_concatenate_to_the_answer() -> None:
    deltas = ["Hel", "lo", ", ", "wor", "ld", "!"]
    agent = make_agent(FakeLLM(answer("Hello, world!", deltas=deltas)))
    events = await collect(agent)
    partial = by_kind(events, PARTIAL_ANSWER)
    assert [e.content for e in partial] == deltas
    assert "".join(e.content for e in partial) == events[-1].content == "Hello, world!"
    assert events.index(partial[-1]) < len(events) - 1


async def test_reasoning_is_reported_as_thinking() -> None:
    agent = make_agent(FakeLLM(answer("42", reasoning="The user wants the answer.")))
    events = await collect(agent)
    thinking = by_kind(events, THINKING)
    assert thinking[-1].content == "The user wants the answer."
    assert thinking[-1].metadata == {"step": 1, "reasoning": True}


async def test_several_tool_calls_in_one_step_run_in_order() -> None:
    llm = FakeLLM(
        use(call("add", {"a": 1, "b": 1}, id="x"), call("add", {"a": 2, "b": 2}, id="y")),
        answer("2 and 4"),
    )
    agent = make_agent(llm)
    events = await collect(agent)
    assert [(e.kind, e.step_id) for e in events if e.kind in (TOOL_CALL, TOOL_RESULT)] == [
        (TOOL_CALL, "x"), (TOOL_RESULT, "x"), (TOOL_CALL, "y"), (TOOL_RESULT, "y"),
    ]
    assert [m.get("content") for m in agent.history if m["role"] == "tool"] == ["2", "4"]


async def test_plain_function_tools_and_string_results() -> None:
    @tool
    def shout(text: str) -> str:
        """Upper-case text."""
        return text.upper()

    agent = make_agent(FakeLLM(use(call("shout", {"text": "hey"})), answer("ok")), tools=[shout])
    events = await collect(agent)
    assert by_kind(events, TOOL_RESULT)[0].content == "HEY"


async def test_empty_arguments_mean_no_arguments() -> None:
    @tool
    def ping() -> str:
        """Ping."""
        return "pong"

    agent = make_agent(FakeLLM(use(call("ping", "")), answer("ok")), tools=[ping])
    events = await collect(agent)
    assert by_kind(events, TOOL_RESULT)[0].metadata["status"] == "success"


async def test_history_accumulates_over_turns() -> None:
    llm = FakeLLM(answer("one"), answer("two"))
    agent = make_agent(llm)
    assert await agent.arun("first") == "one"
    assert await agent.arun("second") == "two"
    assert [m["content"] for m in agent.history] == ["first", "one", "second", "two"]
    assert llm.calls[1][0][1:] == agent.history[:3]


# -- tool errors are fed back, the loop continues --------------------------------


def failed_result(events: list[AgentEvent]) -> AgentEvent:
    (result,) = by_kind(events, TOOL_RESULT)
    assert result.metadata["status"] == "failed"
    assert result.content == f"Error: {result.metadata['error']}"
    assert_one_terminal(events)
    assert events[-1].kind == FINAL_ANSWER
    return result


async def test_bad_json_arguments_become_a_tool_error() -> None:
    llm = FakeLLM(use(call("add", '{"a": 1, "b":', id="c1")), answer("sorry"))
    agent = make_agent(llm)
    events = await collect(agent)
    result = failed_result(events)
    assert "not valid JSON" in result.metadata["error"]
    assert by_kind(events, TOOL_CALL)[0].metadata["args"] == '{"a": 1, "b":'
    assert llm.calls[1][0][-1] == {"role": "tool", "tool_call_id": "c1", "content": result.content}


async def test_non_object_arguments_become_a_tool_error() -> None:
    agent = make_agent(FakeLLM(use(call("add", "[1, 2]")), answer("sorry")))
    result = failed_result(await collect(agent))
    assert "JSON object" in result.metadata["error"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"a": 1}, "must contain"),
        ({"a": "one", "b": 2}, "must be integer"),
    ],
)
async def test_schema_violations_become_a_tool_error(args: dict, expected: str) -> None:
    agent = make_agent(FakeLLM(use(call("add", args)), answer("sorry")))
    result = failed_result(await collect(agent))
    assert result.metadata["error"].startswith("Invalid arguments for tool 'add'")
    assert expected in result.metadata["error"]


async def test_a_raising_tool_becomes_a_tool_error_without_traceback() -> None:
    agent = make_agent(FakeLLM(use(call("boom")), answer("it failed")), tools=[BoomTool()])
    result = failed_result(await collect(agent))
    assert result.metadata["error"] == "ValueError: kaboom"
    assert "Traceback" not in result.content
    assert_consistent(agent.history)


async def test_tool_returning_an_error_result_is_failed() -> None:
    @tool
    def picky(city: str) -> ToolResult:
        """Picky."""
        return ToolResult(error=f"unknown city {city}")

    agent = make_agent(FakeLLM(use(call("picky", {"city": "Atlantis"})), answer("no")), tools=[picky])
    result = failed_result(await collect(agent))
    assert result.metadata["error"] == "unknown city Atlantis"


async def test_unknown_tool_becomes_a_tool_error() -> None:
    agent = make_agent(FakeLLM(use(call("nope", {})), answer("sorry")))
    result = failed_result(await collect(agent))
    assert "Unknown tool 'nope'" in result.metadata["error"]
    assert "add" in result.metadata["error"]


async def test_extra_tool_calls_beyond_the_limit_are_not_run() -> None:
    calls = [call("add", {"a": i, "b": 0}, id=f"c{i}") for i in range(4)]
    agent = make_agent(FakeLLM(use(*calls), answer("done")), max_tool_calls_per_step=2)
    events = await collect(agent)
    statuses = [e.metadata["status"] for e in by_kind(events, TOOL_RESULT)]
    assert statuses == ["success", "success", "failed", "failed"]
    assert "Too many tool calls" in by_kind(events, TOOL_RESULT)[3].metadata["error"]
    assert_consistent(agent.history)


async def test_long_tool_output_is_truncated_with_a_marker() -> None:
    @tool
    def big() -> str:
        """Big output."""
        return "x" * 150

    agent = make_agent(FakeLLM(use(call("big")), answer("ok")), tools=[big], max_tool_result_chars=100)
    events = await collect(agent)
    content = by_kind(events, TOOL_RESULT)[0].content
    assert content == "x" * 100 + "…[truncated 50 chars]"
    assert agent.history[2]["content"] == content


async def test_long_tool_errors_are_truncated_too() -> None:
    @tool
    def loud() -> str:
        """Fails loudly."""
        raise RuntimeError("e" * 500)

    agent = make_agent(FakeLLM(use(call("loud")), answer("ok")), tools=[loud], max_tool_result_chars=50)
    result = by_kind(await collect(agent), TOOL_RESULT)[0]
    assert len(result.content) < 80 and "…[truncated" in result.content
    assert result.metadata["error"].endswith("…[truncated 464 chars]")


async def test_missing_and_duplicate_tool_call_ids_are_replaced() -> None:
    step = use(ToolCall("", "add", '{"a": 1, "b": 1}'), ToolCall("", "add", '{"a": 2, "b": 2}'))
    agent = make_agent(FakeLLM(step, answer("ok")))
    events = await collect(agent)
    ids = [e.step_id for e in by_kind(events, TOOL_CALL)]
    assert all(ids) and len(set(ids)) == 2
    assert_consistent(agent.history)


# -- limits and LLM errors ----------------------------------------------------------


async def test_max_steps_ends_with_one_error_and_a_consistent_history() -> None:
    llm = FakeLLM(*[use(call("add", {"a": 1, "b": 1}, id=f"c{i}")) for i in range(10)])
    agent = make_agent(llm, max_steps=3)
    events = await collect(agent)
    assert len(llm.calls) == 3
    assert len(by_kind(events, THINKING)) == 3
    assert_one_terminal(events)
    assert events[-1].kind == ERROR
    usage = events[-1].metadata.pop("usage")
    assert events[-1].metadata == {"error_code": "MAX_STEPS", "recoverable": True}
    assert (usage["llm_requests"], usage["unknown_requests"], usage["total_tokens"]) == (3, 3, 0)
    assert "3 steps" in events[-1].content
    assert_consistent(agent.history)


async def test_llm_error_becomes_an_error_event() -> None:
    agent = make_agent(FakeLLM(LLMError("The model is overloaded, try again.")))
    events = await collect(agent)
    assert kinds(events) == [THINKING, ERROR]
    assert events[-1].content == "The model is overloaded, try again."
    usage = events[-1].metadata.pop("usage")
    assert events[-1].metadata == {"error_code": "LLM_ERROR", "recoverable": True}
    assert (usage["llm_requests"], usage["unknown_requests"]) == (1, 1)  # failed: its tokens are unknown
    assert agent.history == [{"role": "user", "content": "hi"}]


async def test_llm_error_mid_stream_keeps_the_streamed_text() -> None:
    agent = make_agent(FakeLLM(Step(deltas=["Par", "tial"], error=LLMError("connection lost"))))
    events = await collect(agent)
    assert events[-1].kind == ERROR
    assert agent.history[-1] == {"role": "assistant", "content": "Partial"}


async def test_unexpected_provider_exception_is_an_llm_error_without_details() -> None:
    agent = make_agent(FakeLLM(KeyError("secret-internal-detail")))
    events = await collect(agent)
    assert events[-1].metadata["error_code"] == "LLM_ERROR"
    assert "secret-internal-detail" not in events[-1].content
    assert "KeyError" in events[-1].content


async def test_arun_raises_on_error_and_run_works_outside_a_loop() -> None:
    agent = make_agent(FakeLLM(LLMError("down")))
    with pytest.raises(AgentRunError) as info:
        await agent.arun("hi")
    assert info.value.error_code == "LLM_ERROR"
    with pytest.raises(RuntimeError, match="running event loop"):
        agent.run("hi")


def test_run_is_synchronous() -> None:
    agent = make_agent(FakeLLM(answer("sync answer")))
    assert agent.run("hi") == "sync answer"


# -- confirmation ---------------------------------------------------------------------


async def test_confirmation_approved_runs_the_tool() -> None:
    delete = DeleteTool()
    requests: list[ConfirmRequest] = []

    async def confirm(request: ConfirmRequest) -> bool:
        requests.append(request)
        return True

    agent = make_agent(FakeLLM(use(call("delete_file", {"path": "/tmp/x"}, id="d1")), answer("done")), tools=[delete])
    events = await collect(agent, confirm=confirm)
    assert kinds(events) == [THINKING, TOOL_CALL, USER_CONFIRM, TOOL_RESULT, THINKING, FINAL_ANSWER]
    (ask,) = by_kind(events, USER_CONFIRM)
    assert ask.step_id == "d1"
    assert ask.metadata == {"tool_name": "delete_file", "tool_args": {"path": "/tmp/x"}, "tool_description": "Delete a file."}
    assert requests == [ConfirmRequest("d1", "delete_file", {"path": "/tmp/x"}, "Delete a file.")]
    assert delete.deleted == ["/tmp/x"]
    assert by_kind(events, TOOL_RESULT)[0].metadata["status"] == "success"


@pytest.mark.parametrize("answer_value", [False, None, "yes"])
async def test_confirmation_denied_is_a_tool_error(answer_value: Any) -> None:
    delete = DeleteTool()

    async def confirm(request: ConfirmRequest) -> Any:
        return answer_value

    agent = make_agent(FakeLLM(use(call("delete_file", {"path": "/x"})), answer("ok")), tools=[delete])
    events = await collect(agent, confirm=confirm)
    assert failed_result(events).metadata["error"] == DENIED == "User denied the tool call"
    assert delete.deleted == []


async def test_no_confirm_callback_denies() -> None:
    delete = DeleteTool()
    agent = make_agent(FakeLLM(use(call("delete_file", {"path": "/x"})), answer("ok")), tools=[delete])
    events = await collect(agent)
    assert USER_CONFIRM in kinds(events)
    assert failed_result(events).metadata["error"] == DENIED
    assert delete.deleted == []


async def test_confirmation_timeout_denies() -> None:
    delete = DeleteTool()

    async def never(request: ConfirmRequest) -> bool:
        await asyncio.Event().wait()
        return True

    agent = make_agent(
        FakeLLM(use(call("delete_file", {"path": "/x"})), answer("ok")), tools=[delete], confirm_timeout=0.01
    )
    events = await collect(agent, confirm=never)
    assert "did not confirm" in failed_result(events).metadata["error"]
    assert delete.deleted == []


async def test_invalid_arguments_are_rejected_before_asking() -> None:
    asked: list[ConfirmRequest] = []

    async def confirm(request: ConfirmRequest) -> bool:
        asked.append(request)
        return True

    agent = make_agent(FakeLLM(use(call("delete_file", {"path": 3})), answer("ok")), tools=[DeleteTool()])
    events = await collect(agent, confirm=confirm)
    assert USER_CONFIRM not in kinds(events) and asked == []


# -- cancellation ---------------------------------------------------------------------


class HangTool(BaseTool):
    name = "hang"
    description = "Never finishes."

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def execute(self) -> str:
        self.started.set()
        await asyncio.Event().wait()
        return "unreachable"


async def test_cancel_mid_tool_repairs_the_history() -> None:
    hang = HangTool()
    llm = FakeLLM(use(call("add", {"a": 1, "b": 1}, id="ok1"), call("hang", id="h1"), call("add", {"a": 2, "b": 2}, id="ok2")))
    agent = make_agent(llm, tools=[AddTool(), hang])
    seen: list[dict] = []
    events: list[AgentEvent] = []

    async def consume() -> None:
        async for event in agent.astream("go", on_message=seen.append):
            events.append(event)

    task = asyncio.create_task(consume())
    await hang.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    history = agent.history
    assert_consistent(history)
    assert history[-3:] == [
        {"role": "tool", "tool_call_id": "ok1", "content": "2"},
        {"role": "tool", "tool_call_id": "h1", "content": INTERRUPTED_TOOL_CONTENT},
        {"role": "tool", "tool_call_id": "ok2", "content": INTERRUPTED_TOOL_CONTENT},
    ]
    assert seen == history
    assert not any(e.kind in TERMINAL_KINDS for e in events)

    # The agent is usable again, and the next model call sees a valid history.
    llm.steps = [answer("recovered")]
    assert await agent.arun("again") == "recovered"
    assert_consistent(llm.calls[-1][0][1:])


async def test_cancel_mid_stream_keeps_the_partial_text() -> None:
    llm = FakeLLM(Step(deltas=["Once ", "upon"], hang=True))
    agent = make_agent(llm)
    seen: list[dict] = []
    task = asyncio.create_task(collect(agent, "story", on_message=seen.append))
    await llm.streaming.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert agent.history == seen == [
        {"role": "user", "content": "story"},
        {"role": "assistant", "content": "Once upon"},
    ]


async def test_closing_the_stream_early_repairs_the_history() -> None:
    seen: list[dict] = []
    agent = make_agent(FakeLLM(use(call("add", {"a": 1, "b": 2}, id="c1")), answer("3")))
    stream = agent.astream("hi", on_message=seen.append)
    async for event in stream:
        if event.kind == TOOL_CALL:
            break
    await stream.aclose()
    assert agent.history[-1] == {"role": "tool", "tool_call_id": "c1", "content": INTERRUPTED_TOOL_CONTENT}
    assert seen == agent.history
    assert_consistent(agent.history)


async def test_cancel_while_waiting_for_confirmation() -> None:
    waiting = asyncio.Event()

    async def confirm(request: ConfirmRequest) -> bool:
        waiting.set()
        await asyncio.Event().wait()
        return True

    agent = make_agent(FakeLLM(use(call("delete_file", {"path": "/x"}, id="d1"))), tools=[DeleteTool()])
    task = asyncio.create_task(collect(agent, confirm=confirm))
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert agent.history[-1]["content"] == INTERRUPTED_TOOL_CONTENT
    assert_consistent(agent.history)


async def test_one_turn_at_a_time() -> None:
    llm = FakeLLM(Step(deltas=["a"], hang=True))
    agent = make_agent(llm)
    task = asyncio.create_task(collect(agent))
    await llm.streaming.wait()
    with pytest.raises(RuntimeError, match="already running"):
        await collect(agent)
    with pytest.raises(RuntimeError, match="running a turn"):
        agent.load_history([])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- configuration, clone, history ------------------------------------------------


async def test_clone_has_the_same_config_and_an_empty_history() -> None:
    llm = FakeLLM(answer("a"), answer("b"))
    agent = make_agent(llm, description="desc", max_steps=4)
    await agent.arun("hi")
    twin = agent.clone()
    assert twin is not agent
    assert twin.history == []
    assert twin.name == agent.name and twin.description == "desc" and twin.max_steps == 4
    assert [t.name for t in twin.tools] == [t.name for t in agent.tools]
    assert twin.tools[0] is agent.tools[0]
    assert twin.llm is llm
    await twin.arun("hello")
    assert len(agent.history) == 2 and len(twin.history) == 2


async def test_history_is_a_copy() -> None:
    agent = make_agent(FakeLLM(answer("a")))
    await agent.arun("hi")
    agent.history.append({"role": "user", "content": "injected"})
    agent.history[0]["content"] = "changed"
    assert agent.history == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]


async def test_load_history_repairs_dangling_tool_calls() -> None:
    llm = FakeLLM(answer("fine"))
    agent = make_agent(llm)
    agent.load_history([
        {"role": "system", "content": "old prompt"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c9", "type": "function", "function": {"name": "add", "arguments": "{}"}}]},
        "garbage",
    ])
    assert agent.history[-1] == {"role": "tool", "tool_call_id": "c9", "content": INTERRUPTED_TOOL_CONTENT}
    assert all(m["role"] != "system" for m in agent.history)
    await agent.arun("next")
    sent = llm.calls[0][0]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "user"]
    assert sent[0]["content"] == "You are a test."


def test_create_toolcall_agent_is_an_alias() -> None:
    assert create_toolcall_agent is create_react_agent


def test_llm_is_created_lazily_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import myagent.agents.llm as llm_package

    created: list[str | None] = []
    real = llm_package.get_llm

    def spy(spec: str | None = None) -> Any:
        created.append(spec)
        return real(spec)

    monkeypatch.setattr(llm_package, "get_llm", spy)
    monkeypatch.setenv("MYAGENT_LLM", "offline")
    agent = create_react_agent("lazy", [AddTool()], "prompt")
    twin = agent.clone()
    assert created == []
    assert agent.llm.name == "offline"
    assert created == [None]
    assert twin.llm is agent.llm  # one LLM for the agent and its clones, made once
    assert created == [None]


def test_model_is_passed_to_the_openai_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MYAGENT_LLM", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    agent = create_react_agent("m", [], "p", model="my-model")
    assert agent.llm.name == "openai:my-model"
    explicit = create_react_agent("m", [], "p", model="my-model", llm="openai:other")
    assert explicit.llm.name == "openai:other"


async def test_a_bad_llm_spec_is_an_error_event_at_first_use() -> None:
    agent = create_react_agent("bad", [], "p", llm="no-such-provider")
    events = await collect(agent)
    assert events[-1].kind == ERROR
    assert events[-1].metadata["error_code"] == "LLM_ERROR"
    assert "no-such-provider" in events[-1].content


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ([AddTool], "pass an instance"),
        ([AddTool(), AddTool()], "two tools are named 'add'"),
        ([42], "not a tool"),
        ("add", "list of BaseTool"),
    ],
)
def test_invalid_tool_lists_fail_at_creation(tools: Any, message: str) -> None:
    with pytest.raises(ToolDefinitionError, match=message):
        create_react_agent("x", tools, "p", llm=FakeLLM())


def test_invalid_tool_definitions_fail_at_creation() -> None:
    class BadName(AddTool):
        name = "has space"

    class BadSchema(AddTool):
        name = "bad_schema"
        parameters = {"type": "object", "properties": {"a": {"type": "no-such-type"}}}

    with pytest.raises(ToolDefinitionError, match="invalid"):
        create_react_agent("x", [BadName()], "p", llm=FakeLLM())
    with pytest.raises(ToolDefinitionError, match="schema"):
        create_react_agent("x", [BadSchema()], "p", llm=FakeLLM())


@pytest.mark.parametrize(
    "kwargs", [{"max_steps": 0}, {"max_tool_calls_per_step": -1}, {"max_tool_result_chars": 0}, {"confirm_timeout": 0}]
)
def test_invalid_limits_fail_at_creation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        create_react_agent("x", [], "p", llm=FakeLLM(), **kwargs)


def test_env_names_the_variables_the_tools_need_and_clones_keep_them() -> None:
    agent = create_react_agent("x", [], "p", llm=FakeLLM(), env=["SERPER_API_KEY", "SERPER_API_KEY"])
    assert agent.env == ("SERPER_API_KEY",) and agent.clone().env == ("SERPER_API_KEY",)
    assert create_react_agent("x", [], "p", llm=FakeLLM()).env == ()
    for bad in ("SERPER_API_KEY", ["not a name"], ["MYAGENT_WS_AUTH_TOKENS"]):
        with pytest.raises(ValueError):
            create_react_agent("x", [], "p", llm=FakeLLM(), env=bad)


def test_events_are_plain_data() -> None:
    event = AgentEvent(TOOL_CALL, "Calling tool: add", "c1", {"tool": "add"})
    assert event.to_dict() == {"kind": "tool_call", "content": "Calling tool: add", "step_id": "c1", "metadata": {"tool": "add"}}
    assert AgentEvent(THINKING, "x").metadata == {}
    assert not hasattr(event, "__dict__")
    assert json.dumps(event.to_dict())


# -- the encoded request path ----------------------------------------------------------


class JSONLLM(FakeLLM):
    """A provider that takes the history as encoded JSON (as OpenAILLM does)."""

    def __init__(self, *steps: Step | BaseException):
        super().__init__(*steps)
        self.sent: list[tuple[list[bytes], bytes]] = []

    def stream_json(self, messages: list[bytes], tools: bytes) -> Any:
        self.sent.append((list(messages), tools))
        return self.stream([json.loads(m) for m in messages], json.loads(tools) if tools else [])


async def test_json_providers_get_the_history_encoded_once() -> None:
    llm = JSONLLM(use(call("add", {"a": 1, "b": 2})), answer("3"), answer("again"))
    agent = make_agent(llm, [AddTool()])
    await agent.arun("add please")
    await agent.arun("and again")
    (first, tools), second, (third, _) = llm.sent
    assert json.loads(first[0]) == {"role": "system", "content": "You are a test."}
    assert [t["function"]["name"] for t in json.loads(tools)] == ["add"]
    encoded = agent._history.encoded
    # The very bytes objects the history holds (all but the answer the request produced):
    # nothing was encoded again for a request.
    assert len(third) == len(encoded)
    assert all(a is b for a, b in zip(third[1:], encoded[:-1]))
    assert [json.loads(m) for m in third[1:]] == agent.history[:-1]


async def test_on_message_gets_copies() -> None:
    seen: list[dict] = []

    def on_message(message: dict) -> None:
        seen.append(message)
        message["content"] = "mutated by the callback"

    agent = make_agent(FakeLLM(answer("hello")))
    await agent.arun("hi", on_message=on_message)
    assert [m["role"] for m in seen] == ["user", "assistant"]
    assert agent.history == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def test_clones_share_the_validated_configuration() -> None:
    agent = make_agent(FakeLLM(), [AddTool()])
    twin = agent.clone()
    assert twin._tools is agent._tools and twin._tools_json is agent._tools_json
    assert twin._llm_cell is agent._llm_cell
    assert twin._history is not agent._history and len(twin._history) == 0


async def test_on_message_json_gets_the_encoded_history() -> None:
    seen: list[bytes] = []
    agent = make_agent(FakeLLM(answer("hello")))
    async for _ in agent.astream("hi", on_message_json=seen.append):
        pass
    assert [json.loads(m) for m in seen] == agent.history
    assert all(a is b for a, b in zip(seen, agent._history.encoded))  # the very bytes: not encoded twice
