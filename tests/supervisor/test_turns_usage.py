"""Turns and usage: each turn's usage reaches the session, /metrics and its budget holder, and a
spent budget refuses a turn before it reaches a sandbox. Real Turns over fake sandboxes (fakes.py)."""

from __future__ import annotations

import time

import orjson

from myagent.protocol.errors import ErrorCode
from myagent.protocol.usage import zero_usage
from myagent.supervisor.budgets import Budgets, utc_day
from myagent.supervisor.store.base import MemoryStore

from .fakes import Core, FakeConnection, pipe, run_until, spin

USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120, "llm_requests": 2,
         "unknown_requests": 0, "llm_ms": 40.5, "tool_ms": 1.5, "model": "gpt-x"}


async def setup(budgets: Budgets | None = None, principal: str = "token:abc"):
    core = Core(budgets=budgets)
    sandbox = core.add_sandbox()
    conn = FakeConnection(principal)
    session = await core.session(conn)
    return core, sandbox, conn, session


def turn_ops(sandbox):
    return pipe(sandbox).ops("turn")


async def test_a_turns_usage_adds_to_the_session_and_the_metrics():
    core, sandbox, conn, session = await setup()
    core.turns.submit(session, "hi", None, "enqueue")
    core.event(sandbox, session, "agent.final_answer", "done", usage=USAGE)
    core.turns.submit(session, "again", None, "enqueue")
    core.event(sandbox, session, "agent.final_answer", "done", usage={**USAGE, "model": "gpt-y"})
    totals = session.usage.as_dict()
    assert totals["total_tokens"] == 240 and totals["llm_requests"] == 4 and totals["turns"] == 2
    assert totals["llm_ms"] == 81.0 and totals["unknown_turns"] == 0
    assert core.metrics.usage[(session.agent, "gpt-x")][:4] == [100, 20, 120, 2]
    assert set(core.metrics.usage) == {(session.agent, "gpt-x"), (session.agent, "gpt-y")}
    assert session.record().usage == totals  # what the store keeps: it survives a restart


async def test_a_malformed_or_missing_usage_counts_as_unknown():
    core, sandbox, conn, session = await setup()
    for usage in ({"total_tokens": -5}, "lots", None):
        core.turns.submit(session, "hi", None, "enqueue")
        core.event(sandbox, session, "agent.final_answer", "done", usage=usage)
    assert session.usage.unknown_turns == 3 and session.usage.total_tokens == 0
    assert core.metrics.usage_unknown_turns[session.agent] == 3


async def test_a_turn_the_front_ends_itself_has_unknown_usage():
    core, sandbox, conn, session = await setup()
    core.turns.submit(session, "hi", None, "enqueue")
    core.turns.abort(session, "SANDBOX_CRASHED")
    [ended] = conn.events("agent.interrupted")
    assert ended["metadata"]["usage"] is None and session.usage.unknown_turns == 1


async def test_without_budgets_the_turn_is_sent_at_once_without_an_allowance():
    core, sandbox, conn, session = await setup(Budgets(0, 0, MemoryStore()))
    core.turns.submit(session, "hi", None, "enqueue")
    assert "budget" not in turn_ops(sandbox)[0]  # sent synchronously, as before


async def test_the_allowance_travels_with_the_turn_and_the_spend_is_charged():
    store = MemoryStore()
    core, sandbox, conn, session = await setup(Budgets(1000, 300, store))
    core.turns.submit(session, "hi", None, "enqueue")
    assert turn_ops(sandbox) == []  # not before the balance was read
    await run_until(lambda: turn_ops(sandbox))
    assert turn_ops(sandbox)[0]["budget"] == {"tokens": 300, "kind": "turn", "limit": 300, "resets_at": None}
    assert [orjson.loads(m)["content"] for m in session.history] == ["hi"]
    core.event(sandbox, session, "agent.final_answer", "done", usage={**USAGE, "total_tokens": 900})
    await core.turns.budgets.drain()
    assert await store.spent("token:abc", utc_day(time.time())) == 900
    core.turns.submit(session, "next", None, "enqueue")
    await run_until(lambda: len(turn_ops(sandbox)) == 2)
    assert turn_ops(sandbox)[1]["budget"]["tokens"] == 100 and turn_ops(sandbox)[1]["budget"]["kind"] == "day"


async def test_a_spent_balance_refuses_the_turn_before_the_sandbox():
    store = MemoryStore()
    await store.spend("token:abc", utc_day(time.time()), 1000)
    core, sandbox, conn, session = await setup(Budgets(1000, 0, store))
    core.turns.submit(session, "hi", None, "enqueue")
    core.turns.submit(session, "queued too", None, "enqueue")
    await run_until(lambda: len(conn.events("agent.interrupted")) == 2)
    assert turn_ops(sandbox) == []  # the sandbox (and the LLM) never heard of either
    refused = conn.events("agent.interrupted")[0]
    assert refused["metadata"]["error_code"] == "BUDGET_EXCEEDED" and refused["metadata"]["budget"] == "day"
    assert refused["metadata"]["usage"] == zero_usage() and refused["metadata"]["resets_at"] in refused["content"]
    assert session.history == [] and session.turn is None  # the refused messages never became history
    assert core.metrics.interrupted["BUDGET_EXCEEDED"] == 2


async def test_a_cancel_while_the_balance_is_read_ends_the_turn_at_once():
    core, sandbox, conn, session = await setup(Budgets(1000, 0, MemoryStore()))
    core.turns.submit(session, "hi", None, "enqueue")
    assert core.turns.cancel(session, ErrorCode.CANCELLED)
    [ended] = conn.events("agent.interrupted")
    assert ended["metadata"]["reason"] == "CANCELLED" and ended["metadata"]["usage"] == zero_usage()
    await spin()
    assert pipe(sandbox).ops("turn") == [] and pipe(sandbox).ops("cancel") == []


async def test_a_sandbox_lost_mid_turn_is_still_charged_what_it_reported():
    store = MemoryStore()
    core, sandbox, conn, session = await setup(Budgets(1000, 0, store))
    core.turns.submit(session, "hi", None, "enqueue")
    await run_until(lambda: turn_ops(sandbox))
    turn_id = session.turn.id
    for tokens in (300, 200):  # two LLM requests ended, then the sandbox died inside a tool
        core.placement.on_control(sandbox, {"op": "spent", "sid": session.id, "turn": turn_id, "tokens": tokens})
    core.turns.abort(session, "SANDBOX_CRASHED")
    await core.turns.budgets.drain()
    assert await store.spent("token:abc", utc_day(time.time())) == 500
    assert conn.events("agent.interrupted")[0]["metadata"]["usage"] is None  # still unknown to the client


async def test_a_spent_report_is_checked_like_any_sandbox_frame():
    core, sandbox, conn, session = await setup(Budgets(1000, 0, MemoryStore()))
    core.turns.submit(session, "hi", None, "enqueue")
    await run_until(lambda: turn_ops(sandbox))
    for frame in ({"tokens": -1}, {"tokens": "9"}, {"tokens": 5, "turn": "t_not_this_one"}):
        core.placement.on_control(sandbox, {"op": "spent", "sid": session.id, "turn": session.turn.id, **frame})
    assert session.turn.spent == 0 and sandbox.offences == 3
