"""Token usage and time of one turn, and the token allowance it may spend.

Providers report each request's tokens on its :class:`~myagent.agents.llm.base.LLMResponse`
(``usage``: a :class:`TokenUsage`, or None when the provider said nothing). A turn adds them
up here with the LLM and tool time it measured. Nothing is estimated: a request without a
report counts in ``unknown_requests`` and adds no tokens, so the token figures of a turn with
``unknown_requests > 0`` are what the provider reported, a lower bound.

The allowance (``max_tokens``) is checked before each LLM request: once the turn has spent
it, the next request is refused with :class:`BudgetExceeded`. A request is never cut short,
so a turn may end above its allowance by what its last request cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["BudgetExceeded", "TokenUsage", "TurnUsage", "ZERO_USAGE"]


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """What a provider reported for one request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_openai(cls, value: Any) -> "TokenUsage | None":
        """An OpenAI ``usage`` object (decoded JSON), or None if it is absent or not one."""
        if not isinstance(value, dict):
            return None
        prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
        if type(prompt) is not int or type(completion) is not int or prompt < 0 or completion < 0:
            return None
        total = value.get("total_tokens")
        return cls(prompt, completion, total if type(total) is int and total >= 0 else prompt + completion)


ZERO_USAGE = TokenUsage()  # what the offline and scripted models report: no tokens spent


class BudgetExceeded(Exception):
    """The turn has spent its token allowance; raised before the LLM request that would exceed it."""

    def __init__(self, spent: int, allowance: int) -> None:
        super().__init__(f"the turn spent {spent} tokens of its allowance of {allowance}")
        self.spent = spent
        self.allowance = allowance


class TurnUsage:
    """The running totals of one turn (the agent adds to it; its host reads it, even after a cancel)."""

    __slots__ = ("prompt_tokens", "completion_tokens", "total_tokens", "llm_requests", "unknown_requests",
                 "llm_ns", "tool_ns", "model", "max_tokens", "on_spent")

    def __init__(self, max_tokens: int | None = None, on_spent: Callable[[int], Any] | None = None) -> None:
        """``on_spent(tokens)`` is called as each request that reported tokens ends."""
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.total_tokens = 0
        self.llm_requests = 0
        self.unknown_requests = 0
        self.llm_ns = 0
        self.tool_ns = 0
        self.model = ""
        self.max_tokens = max_tokens  # None: no allowance
        self.on_spent = on_spent

    def check(self) -> None:
        """Before an LLM request: BudgetExceeded once the allowance is spent."""
        if self.max_tokens is not None and self.total_tokens >= self.max_tokens:
            raise BudgetExceeded(self.total_tokens, self.max_tokens)

    def request(self, usage: TokenUsage | None, started_ns: int, model: str = "") -> None:
        """One LLM request ended (``started_ns``: its ``time.perf_counter_ns()`` at the start)."""
        self.llm_ns += time.perf_counter_ns() - started_ns
        self.llm_requests += 1
        if model:
            self.model = model
        if usage is None:
            self.unknown_requests += 1
            return
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.total_tokens += usage.total_tokens
        if self.on_spent is not None and usage.total_tokens:
            self.on_spent(usage.total_tokens)

    def as_dict(self) -> dict[str, Any]:
        """The ``metadata.usage`` object of a terminal event (docs/protocol.md)."""
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens, "llm_requests": self.llm_requests,
                "unknown_requests": self.unknown_requests, "llm_ms": round(self.llm_ns / 1e6, 3),
                "tool_ms": round(self.tool_ns / 1e6, 3), "model": self.model}
