"""ScriptedLLM: an in-process, deterministic provider driven by a script file.

Benchmarks and tests use it to exercise the agent runtime without a network.
It never sleeps unless the script asks for it (``delay_ms`` on a step, before
the first delta; ``token_delay_ms`` at top level, between deltas).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from typing import Any, AsyncIterator, Mapping

from ..usage import ZERO_USAGE
from .base import LLMResponse, TextDelta
from .script import Script, coerce_script, plan_reply

__all__ = ["ScriptedLLM"]

logger = logging.getLogger("myagent.agents.llm.scripted")


class ScriptedLLM:
    """Replay a script (see :mod:`myagent.agents.llm.script`) as a streaming LLM.

    ``path_or_script`` is a file path, a decoded script document, a
    :class:`~myagent.agents.llm.script.Script`, or None for the built-in echo
    script. A bad file raises ValueError here, at construction, not mid-chat.
    """

    def __init__(self, path_or_script: Script | Mapping[str, Any] | str | os.PathLike[str] | None = None):
        self.script = coerce_script(path_or_script)
        self.name = f"scripted:{self.script.source}"

    async def stream(
        self, messages: list[dict], tools: list[dict]
    ) -> AsyncIterator[TextDelta | LLMResponse]:
        """Yield the scripted deltas, then the response; ``tools`` is ignored."""
        reply = plan_reply(self.script, messages)
        logger.debug(
            "%s: %d deltas, %d tool calls", self.name, len(reply.deltas), len(reply.response.tool_calls)
        )
        if reply.delay_ms:
            await asyncio.sleep(reply.delay_ms / 1000)
        pause = reply.token_delay_ms / 1000
        for i, text in enumerate(reply.deltas):
            if pause and i:
                await asyncio.sleep(pause)
            yield TextDelta(text)
        yield dataclasses.replace(reply.response, usage=ZERO_USAGE)  # no model ran: no tokens spent
