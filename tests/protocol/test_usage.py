"""The protocol's usage object (myagent/protocol/usage.py): checking untrusted input, summing."""

from __future__ import annotations

import pytest

from myagent.protocol.usage import UsageTotals, budget_refusal, check_usage, zero_usage

GOOD = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "llm_requests": 1,
        "unknown_requests": 0, "llm_ms": 12.5, "tool_ms": 0, "model": "m"}


def test_a_good_usage_is_kept_and_normalised():
    assert check_usage(GOOD) == {**GOOD, "tool_ms": 0.0}
    assert check_usage({**GOOD, "model": 7})["model"] == ""
    assert len(check_usage({**GOOD, "model": "x" * 1000})["model"]) == 200
    assert check_usage(zero_usage()) == zero_usage()


@pytest.mark.parametrize("change", [
    {"total_tokens": -1}, {"total_tokens": 1.0}, {"total_tokens": True}, {"llm_ms": float("nan")},
    {"llm_ms": -3}, {"prompt_tokens": 2**60}, {"tool_ms": "1"},
])
def test_a_bad_usage_is_none(change):
    assert check_usage({**GOOD, **change}) is None


@pytest.mark.parametrize("value", [None, [], "x", {}])
def test_not_a_usage(value):
    assert check_usage(value) is None


def test_totals_add_and_round_trip_through_the_store():
    totals = UsageTotals()
    totals.add(check_usage(GOOD))
    totals.add(check_usage(GOOD))
    totals.add(None)
    doc = totals.as_dict()
    assert doc["total_tokens"] == 30 and doc["turns"] == 3 and doc["unknown_turns"] == 1 and doc["llm_ms"] == 25.0
    assert UsageTotals.from_dict(doc).as_dict() == doc
    assert UsageTotals.from_dict({"total_tokens": "lots", "turns": -1}).as_dict() == UsageTotals().as_dict()
    assert UsageTotals.from_dict(None).turns == 0


def test_budget_refusal_texts():
    text, meta = budget_refusal({"tokens": 0, "kind": "day", "limit": 500, "resets_at": "2026-12-03T00:00:00Z"})
    assert "2026-12-03T00:00:00Z" in text and meta == {"budget": "day", "budget_tokens": 500,
                                                       "resets_at": "2026-12-03T00:00:00Z"}
    text, meta = budget_refusal({"tokens": 40, "kind": "turn", "limit": 40, "resets_at": None})
    assert "40 tokens" in text and meta["resets_at"] is None and meta["budget"] == "turn"
