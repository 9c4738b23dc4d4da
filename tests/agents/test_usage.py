"""Token usage of a turn (myagent/agents/usage.py) as the agent loop collects it, and the
turn's token allowance refusing a request before it is made."""

from __future__ import annotations

import pytest

from myagent.agents.agent import create_react_agent
from myagent.agents.events import ERROR, FINAL_ANSWER, TOOL_RESULT
from myagent.agents.llm import OfflineLLM, ScriptedLLM
from myagent.agents.usage import BudgetExceeded, TokenUsage, TurnUsage, ZERO_USAGE

from .fakes import FakeLLM, answer, assert_consistent, call, use
from .test_agent import AddTool


def make(llm: FakeLLM):
    return create_react_agent(name="t", tools=[AddTool()], llm=llm)


async def run(agent, usage: TurnUsage | None = None) -> list:
    return [e async for e in agent.astream("hi", usage=usage)]


async def test_a_turn_adds_up_every_request() -> None:
    llm = FakeLLM(use(call("add", {"a": 1, "b": 2}), usage=TokenUsage(100, 7, 107)),
                  answer("3", usage=TokenUsage(130, 2, 132)))
    events = await run(make(llm))
    final = events[-1]
    assert final.kind == FINAL_ANSWER
    usage = final.metadata["usage"]
    assert usage["prompt_tokens"] == 230 and usage["completion_tokens"] == 9 and usage["total_tokens"] == 239
    assert usage["llm_requests"] == 2 and usage["unknown_requests"] == 0
    assert usage["model"] == "fake"
    assert usage["llm_ms"] >= 0 and usage["tool_ms"] >= 0
    assert not any("usage" in e.metadata for e in events[:-1])  # terminal events only


async def test_a_provider_without_usage_is_unknown_not_guessed() -> None:
    llm = FakeLLM(use(call("add", {"a": 1, "b": 2}), usage=TokenUsage(50, 5, 55)), answer("3"))
    usage = (await run(make(llm)))[-1].metadata["usage"]
    assert usage["unknown_requests"] == 1 and usage["llm_requests"] == 2
    assert usage["total_tokens"] == 55  # what was reported, nothing added for the silent request


async def test_the_allowance_refuses_the_request_after_it_is_spent() -> None:
    llm = FakeLLM(use(call("add", {"a": 1, "b": 2}), usage=TokenUsage(90, 20, 110)), answer("never asked"))
    agent = make(llm)
    usage = TurnUsage(max_tokens=100)
    events: list = []
    with pytest.raises(BudgetExceeded) as caught:
        async for event in agent.astream("hi", usage=usage):
            events.append(event)
    assert caught.value.spent == 110 and caught.value.allowance == 100
    assert len(llm.calls) == 1  # the second request was never made
    assert [e.kind for e in events][-1] == TOOL_RESULT  # no terminal event: the host reports the refusal
    assert usage.total_tokens == 110 and usage.llm_requests == 1
    assert_consistent(agent.history)
    assert (await run(agent))[-1].kind == FINAL_ANSWER  # the next turn, with no allowance, runs


async def test_an_allowance_not_reached_changes_nothing() -> None:
    llm = FakeLLM(use(call("add", {"a": 1, "b": 2}), usage=TokenUsage(10, 2, 12)), answer("3", usage=TokenUsage(1, 1, 2)))
    events = await run(make(llm), TurnUsage(max_tokens=1000))
    assert events[-1].kind == FINAL_ANSWER and events[-1].metadata["usage"]["total_tokens"] == 14


async def test_a_failed_request_is_counted_with_unknown_tokens() -> None:
    from myagent.agents.llm.base import LLMError

    events = await run(make(FakeLLM(LLMError("down"))))
    assert events[-1].kind == ERROR
    assert events[-1].metadata["usage"]["llm_requests"] == 1
    assert events[-1].metadata["usage"]["unknown_requests"] == 1


@pytest.mark.parametrize("llm", [OfflineLLM(), ScriptedLLM()], ids=["offline", "scripted"])
async def test_local_models_report_zero_honestly(llm) -> None:
    agent = create_react_agent(name="t", tools=[AddTool()], llm=llm)
    usage = (await run(agent))[-1].metadata["usage"]
    assert usage["total_tokens"] == 0 and usage["unknown_requests"] == 0 and usage["llm_requests"] >= 1


@pytest.mark.parametrize("raw, expected", [
    ({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}, TokenUsage(3, 4, 7)),
    ({"prompt_tokens": 3, "completion_tokens": 4}, TokenUsage(3, 4, 7)),
    ({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}, ZERO_USAGE),
    (None, None), ("x", None), ({"prompt_tokens": -1, "completion_tokens": 4}, None),
    ({"prompt_tokens": 1.5, "completion_tokens": 4}, None), ({"prompt_tokens": True, "completion_tokens": 1}, None),
])
def test_openai_usage_objects(raw, expected) -> None:
    assert TokenUsage.from_openai(raw) == expected


async def test_on_spent_reports_each_request_as_it_ends() -> None:
    reports: list[int] = []
    llm = FakeLLM(use(call("add", {"a": 1, "b": 2}), usage=TokenUsage(10, 2, 12)), answer("x"),)
    await run(make(llm), TurnUsage(10_000, reports.append))
    assert reports == [12]  # the second request reported nothing: nothing to charge
