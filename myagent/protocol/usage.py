"""The ``usage`` object of the protocol (pure): one turn's tokens and time, and a session's sums.

A terminal event (``agent.final_answer``, ``agent.error`` ending a turn, ``agent.interrupted``)
carries ``metadata.usage`` for its turn; ``null`` when the turn's figures are unknown (its
sandbox was lost before it reported them). The sandbox measures it (myagent/agents/usage.py);
the front checks it (:func:`check_usage`: it comes from a process that runs agent code) and
sums it per session (:class:`UsageTotals`, in ``agent.session_created``/``session_resumed``,
/status and the store).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["budget_refusal", "COUNT_FIELDS", "MS_FIELDS", "TOTALS_SCHEMA", "USAGE_SCHEMA", "UsageTotals", "check_usage", "zero_usage"]

COUNT_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "llm_requests", "unknown_requests")
MS_FIELDS = ("llm_ms", "tool_ms")
MAX_COUNT = 2**53  # JSON numbers stay exact below it
MAX_MODEL_CHARS = 200

_COUNT = {"type": "integer", "minimum": 0}
_MS = {"type": "number", "minimum": 0}
USAGE_SCHEMA: dict[str, Any] = {
    "type": ["object", "null"],
    "description": "Tokens and time of the turn; null when unknown (its sandbox was lost before reporting).",
    "required": [*COUNT_FIELDS, *MS_FIELDS],
    "properties": {
        "prompt_tokens": {**_COUNT, "description": "Prompt tokens the provider reported."},
        "completion_tokens": {**_COUNT, "description": "Completion tokens the provider reported."},
        "total_tokens": {**_COUNT, "description": "Total tokens the provider reported."},
        "llm_requests": {**_COUNT, "description": "LLM requests made (failed and cancelled ones too)."},
        "unknown_requests": {**_COUNT, "description": "Requests whose provider reported no usage: the token "
                             "figures are then a lower bound (nothing is estimated)."},
        "llm_ms": {**_MS, "description": "Milliseconds spent in LLM requests."},
        "tool_ms": {**_MS, "description": "Milliseconds spent running tools."},
        "model": {"type": "string", "description": "The model of the last request."},
    },
}

TOTALS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The session's usage so far: the sums of its turns' usage, plus turns counted and turns "
                   "whose usage was unknown.",
    "required": [*COUNT_FIELDS, *MS_FIELDS, "turns", "unknown_turns"],
    "properties": {**{k: v for k, v in USAGE_SCHEMA["properties"].items() if k != "model"},
                   "turns": _COUNT, "unknown_turns": _COUNT},
}


def zero_usage() -> dict[str, Any]:
    """The usage of a turn that never reached the model."""
    return {**dict.fromkeys(COUNT_FIELDS, 0), **dict.fromkeys(MS_FIELDS, 0.0), "model": ""}


def check_usage(value: Any) -> dict[str, Any] | None:
    """``value`` as a well-formed usage object, or None if it is not one."""
    if type(value) is not dict:
        return None
    out: dict[str, Any] = {}
    for key in COUNT_FIELDS:
        n = value.get(key)
        if type(n) is not int or not 0 <= n < MAX_COUNT:
            return None
        out[key] = n
    for key in MS_FIELDS:
        ms = value.get(key)
        if type(ms) not in (int, float) or not (math.isfinite(ms) and 0 <= ms < MAX_COUNT):
            return None
        out[key] = float(ms)
    model = value.get("model", "")
    out["model"] = model[:MAX_MODEL_CHARS] if type(model) is str else ""
    return out


class UsageTotals:
    """A session's sums of its turns' usage (what ``agent.session_created``/``session_resumed``
    and /status show). ``unknown_turns`` counts turns whose usage was null."""

    __slots__ = (*COUNT_FIELDS, *MS_FIELDS, "turns", "unknown_turns")

    def __init__(self) -> None:
        self.prompt_tokens = self.completion_tokens = self.total_tokens = 0
        self.llm_requests = self.unknown_requests = 0
        self.llm_ms = self.tool_ms = 0.0
        self.turns = self.unknown_turns = 0

    def add(self, usage: dict[str, Any] | None) -> None:
        """Add a checked turn usage (None: unknown)."""
        self.turns += 1
        if usage is None:
            self.unknown_turns += 1
            return
        # Spelled out rather than looped over the fields: this runs once per turn in the front.
        self.prompt_tokens += usage["prompt_tokens"]
        self.completion_tokens += usage["completion_tokens"]
        self.total_tokens += usage["total_tokens"]
        self.llm_requests += usage["llm_requests"]
        self.unknown_requests += usage["unknown_requests"]
        self.llm_ms += usage["llm_ms"]
        self.tool_ms += usage["tool_ms"]

    def as_dict(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens, "llm_requests": self.llm_requests,
                "unknown_requests": self.unknown_requests, "llm_ms": round(self.llm_ms, 3),
                "tool_ms": round(self.tool_ms, 3), "turns": self.turns, "unknown_turns": self.unknown_turns}

    @classmethod
    def from_dict(cls, value: Any) -> "UsageTotals":
        """Totals read back from the store; anything malformed starts from zero."""
        totals = cls()
        if type(value) is dict:
            for key in (*COUNT_FIELDS, "turns", "unknown_turns"):
                n = value.get(key)
                if type(n) is int and 0 <= n < MAX_COUNT:
                    setattr(totals, key, n)
            for key in MS_FIELDS:
                ms = value.get(key)
                if type(ms) in (int, float) and math.isfinite(ms) and ms >= 0:
                    setattr(totals, key, float(ms))
        return totals


def budget_refusal(budget: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The text and metadata of the ``agent.interrupted`` (BUDGET_EXCEEDED) for ``budget``, the
    allowance a turn ran with: ``{"tokens", "kind": "day" | "turn", "limit", "resets_at"}``."""
    limit, resets_at = budget.get("limit"), budget.get("resets_at")
    if budget.get("kind") == "day":
        text = f"The daily token budget ({limit} tokens) is spent; it resets at {resets_at}."
    else:
        text = f"This turn reached its limit of {limit} tokens; the next message starts a new turn."
        resets_at = None
    return text, {"budget": budget.get("kind"), "budget_tokens": limit, "resets_at": resets_at}
