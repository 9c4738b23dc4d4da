"""The tool-calling (ReAct) agent: ``create_react_agent`` and ``Agent``.

One turn (``Agent.astream``) appends the user message, then runs up to
``max_steps`` model steps. Each step streams the model's text as
PARTIAL_ANSWER events; a reply without tool calls is the FINAL_ANSWER, a reply
with tool calls runs each call (validated, confirmed when required, output
truncated) and feeds the results back for the next step.

Invariants: every message appended to the history goes through
``on_message`` at that moment (as a copy); the history is valid for an OpenAI-compatible
API after every turn, even a cancelled one (unanswered tool calls get a
synthetic result, streamed text is kept); a completed turn yields exactly one
FINAL_ANSWER or ERROR, a cancelled one none. Tool failures never escape a
turn: they become tool errors the model sees.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import inspect
import logging
import os
import time
import uuid
from contextlib import aclosing
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

import orjson

from . import tracing
from .events import (
    ERROR,
    FINAL_ANSWER,
    PARTIAL_ANSWER,
    THINKING,
    TOOL_CALL,
    TOOL_RESULT,
    USER_CONFIRM,
    AgentEvent,
    ConfirmRequest,
)
from ..declared_env import check_names
from .exceptions import AgentRunError, ToolDefinitionError
from .history import History, compact_json, interrupted_tool_message, repair_history
from .llm.base import LLM, LLMError, LLMResponse, TextDelta, ToolCall, response_to_message
from .tools import TOOL_NAME_PATTERN, BaseTool, ToolArgumentsError, ToolResult, tool
from .usage import TurnUsage

__all__ = ["DENIED", "Agent", "ConfirmCallback", "MessageCallback", "create_react_agent", "create_toolcall_agent"]

logger = logging.getLogger("myagent.agents")

ConfirmCallback = Callable[[ConfirmRequest], Awaitable[bool]]
MessageCallback = Callable[[dict[str, Any]], Any]

DENIED = "User denied the tool call"


class Agent:
    """A configured agent plus one conversation's history.

    Build it with :func:`create_react_agent`. One instance serves one
    conversation, one turn at a time; use :meth:`clone` for another
    conversation (tools and the LLM object are shared, the history is not).
    """

    def __init__(
        self,
        *,
        name: str,
        tools: Iterable[Any] | None,
        system_prompt: str = "",
        max_steps: int = 10,
        model: str | None = None,
        llm: LLM | str | None = None,
        description: str = "",
        max_tool_calls_per_step: int = 16,
        max_tool_result_chars: int = 20000,
        confirm_timeout: float | None = None,
        env: Iterable[str] | None = None,
    ):
        if not isinstance(name, str) or not name.strip():
            raise ValueError("agent name must be a non-empty string")
        if not isinstance(system_prompt, str):
            raise TypeError("system_prompt must be a string")
        _check_positive("max_steps", max_steps)
        _check_positive("max_tool_calls_per_step", max_tool_calls_per_step)
        _check_positive("max_tool_result_chars", max_tool_result_chars)
        if confirm_timeout is not None and not confirm_timeout > 0:
            raise ValueError("confirm_timeout must be a positive number of seconds or None")
        if llm is not None and not isinstance(llm, str) and not callable(getattr(llm, "stream", None)):
            raise TypeError("llm must be an LLM object (with a stream() method), a spec string or None")
        self.name = name
        self.description = description or ""
        self.system_prompt = system_prompt
        self.max_steps = max_steps
        self.model = model
        self.max_tool_calls_per_step = max_tool_calls_per_step
        self.max_tool_result_chars = max_tool_result_chars
        self.confirm_timeout = confirm_timeout
        # Names of environment variables the tools need: the server passes exactly these (and
        # its allow list) to the sandboxes, and refuses to start when one is not set.
        self.env = check_names(env)
        self._tools = _check_tools(tools)
        self._tool_map = {t.name: t for t in self._tools}
        self._tools_schema = [t.to_openai_tool() for t in self._tools]
        self._tools_json = compact_json(self._tools_schema) if self._tools_schema else b""
        self._system_json: tuple[str, bytes] = ("", b"")  # (prompt, its message as JSON), see _system
        self._system()  # encoded now, so every clone shares it
        # One cell for the agent and all its clones: the LLM is made once per process, on
        # first use (the sandbox may fork after the agent file is imported).
        self._llm_cell = _LLMCell(llm, model)
        self._history = History()
        self._running = False

    # -- configuration -------------------------------------------------------------

    @property
    def tools(self) -> list[BaseTool]:
        """The agent's tools (a new list; the tool objects are shared)."""
        return list(self._tools)

    @property
    def llm(self) -> LLM:
        """The LLM, created on first use from the spec (or the environment), then shared
        by this agent and every clone of it."""
        return self._llm_cell.get()

    def clone(self) -> Agent:
        """A fresh agent with the same configuration and an empty history.

        The clone shares what never changes after creation (the validated tools, their
        schemas and JSON, the LLM) instead of rebuilding it: a server clones the agent
        once per session, so this is per-session CPU and memory.
        """
        twin = copy.copy(self)
        twin._history = History()
        twin._running = False
        return twin

    def _system(self) -> bytes:
        """The system message as JSON (b"" for none), re-encoded only if the prompt changed."""
        prompt, data = self._system_json
        if prompt is not self.system_prompt:
            data = compact_json({"role": "system", "content": self.system_prompt}) if self.system_prompt else b""
            self._system_json = (self.system_prompt, data)
        return data

    # -- history ---------------------------------------------------------------------

    @property
    def history(self) -> list[dict[str, Any]]:
        """A copy of the conversation (OpenAI messages, without the system prompt)."""
        return [History.copy_of(data) for data in self._history.encoded]

    def load_history(self, messages: Iterable[Any]) -> None:
        """Replace the history with a repaired copy of ``messages``."""
        if self._running:
            raise RuntimeError(f"agent {self.name!r} is running a turn; cannot replace its history")
        self._history = History(repair_history(messages))

    def trim_history(self, max_messages: int, keep: float = 0.75) -> int:
        """Once the history exceeds ``max_messages``, keep its newest ``keep`` share (repaired
        so no tool result is orphaned); return how many were dropped. Trimming below the
        limit means the O(history) repair runs once per quarter of the limit, not per turn."""
        if self._running or len(self._history) <= max_messages:
            return 0
        before = len(self._history)
        self._history = History(repair_history(self._history.messages[-max(1, int(max_messages * keep)):]))
        return before - len(self._history)

    # -- running -----------------------------------------------------------------------

    async def astream(
        self,
        text: str,
        *,
        confirm: ConfirmCallback | None = None,
        on_message: MessageCallback | None = None,
        on_message_json: Callable[[bytes], Any] | None = None,
        usage: TurnUsage | None = None,
    ) -> AsyncIterator[AgentEvent]:
        """Run one turn for the user message ``text``, yielding its events.

        ``confirm`` approves tools that require confirmation (None denies
        them); ``on_message`` is called with every message appended to the
        history (a copy), ``on_message_json`` with the same message as the JSON
        the history already holds (UTF-8 bytes: nothing is encoded again for a
        caller that forwards it). ``usage`` collects the turn's tokens and time (a new one if
        None; its ``max_tokens`` is the turn's allowance, checked before each LLM request:
        BudgetExceeded); FINAL_ANSWER and ERROR carry it as ``metadata["usage"]``.
        Raises RuntimeError if a turn is already running.
        """
        if not isinstance(text, str):
            raise TypeError("the user message must be a string")
        if self._running:
            raise RuntimeError(
                f"agent {self.name!r} is already running a turn; use agent.clone() for concurrent conversations"
            )
        self._running = True
        turn = _Turn(self, confirm, on_message, on_message_json, usage)
        completed = False
        try:
            turn.append({"role": "user", "content": text})
            async with aclosing(turn.run()) as events:
                async for event in events:
                    if event.kind == FINAL_ANSWER or event.kind == ERROR:
                        event.metadata["usage"] = turn.usage.as_dict()
                    yield event
            completed = True
        finally:
            if not completed:
                turn.repair()
            self._running = False

    async def arun(
        self,
        text: str,
        *,
        confirm: ConfirmCallback | None = None,
        on_message: MessageCallback | None = None,
    ) -> str:
        """Run one turn and return the final answer; raise AgentRunError on an ERROR event."""
        answer: str | None = None
        error: AgentEvent | None = None
        async for event in self.astream(text, confirm=confirm, on_message=on_message):
            if event.kind == FINAL_ANSWER:
                answer = event.content
            elif event.kind == ERROR:
                error = event
        if error is not None:
            raise AgentRunError(error.content, str(error.metadata.get("error_code", "ERROR")))
        return answer or ""

    def run(self, text: str) -> str:
        """Blocking :meth:`arun` for scripts; not usable inside a running event loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._run_once(text))
        raise RuntimeError("Agent.run() cannot be called from a running event loop; use `await agent.arun(text)`")

    async def _run_once(self, text: str) -> str:
        """One turn on a loop that ends right after: close the LLM's connection pool on it
        (a pool left to the garbage collector outlives its loop and warns)."""
        try:
            return await self.arun(text)
        finally:
            close = getattr(self._llm_cell.llm, "aclose", None)
            if close is not None:
                await close()

    def __repr__(self) -> str:
        return f"<Agent {self.name!r} tools={[t.name for t in self._tools]}>"


def create_react_agent(
    name: str,
    tools: Iterable[Any] | None = None,
    system_prompt: str = "",
    max_steps: int = 10,
    model: str | None = None,
    llm: LLM | str | None = None,
    description: str = "",
    max_tool_calls_per_step: int = 16,
    max_tool_result_chars: int = 20000,
    confirm_timeout: float | None = None,
    env: Iterable[str] | None = None,
) -> Agent:
    """Create a tool-calling agent.

    ``tools`` holds BaseTool instances (plain functions are wrapped with
    ``@tool``). ``llm`` is an LLM object, a spec string for ``get_llm`` (e.g.
    "offline", "openai", "scripted:PATH") or None for the environment's
    choice; it is created on first use. ``model`` names the OpenAI model.
    ``confirm_timeout`` (seconds, None: wait forever) bounds each confirmation.
    ``env`` names the environment variables the tools need (e.g. ``["SERPER_API_KEY"]``):
    the server passes them to the sandboxes and refuses to start without them; write
    the names out, the server reads them without running the file.
    Raises ToolDefinitionError for invalid tools, ValueError for bad limits or names.
    """
    return Agent(
        name=name,
        tools=tools,
        system_prompt=system_prompt,
        max_steps=max_steps,
        model=model,
        llm=llm,
        description=description,
        max_tool_calls_per_step=max_tool_calls_per_step,
        max_tool_result_chars=max_tool_result_chars,
        confirm_timeout=confirm_timeout,
        env=env,
    )


create_toolcall_agent = create_react_agent


# -- one turn ------------------------------------------------------------------------


class _Turn:
    """The state of one running turn, kept so an interruption can be repaired."""

    def __init__(self, agent: Agent, confirm: ConfirmCallback | None, on_message: MessageCallback | None,
                 on_message_json: Callable[[bytes], Any] | None = None, usage: TurnUsage | None = None):
        self.agent = agent
        self.usage = usage if usage is not None else TurnUsage()
        self.confirm = confirm
        self.on_message = on_message
        self.on_message_json = on_message_json
        self.partial: list[str] = []  # text streamed in this step, not yet in the history
        self.pending: list[str] = []  # tool call ids of the last assistant message without a result
        self.response: LLMResponse | None = None

    def append(self, message: dict[str, Any]) -> None:
        data = self.agent._history.append(message)
        if message["role"] == "assistant":
            self.pending = [call["id"] for call in message.get("tool_calls", ())]
        elif message["role"] == "tool":
            self.pending.remove(message["tool_call_id"])
        if self.on_message is not None:
            self.on_message(History.copy_of(data))
        if self.on_message_json is not None:
            self.on_message_json(data)

    def flush_partial(self) -> None:
        """Keep text the user has already seen as an assistant message."""
        text, self.partial = "".join(self.partial), []
        if text:
            self.append({"role": "assistant", "content": text})

    def repair(self) -> None:
        """Leave a valid history after an interruption (cancel, close, crash)."""
        try:
            for call_id in list(self.pending):
                self.append(interrupted_tool_message(call_id))
            self.flush_partial()
        except Exception:  # on_message failing again must not hide the original exception
            logger.warning("on_message failed while repairing the history of %r", self.agent.name, exc_info=True)

    async def run(self) -> AsyncIterator[AgentEvent]:
        agent = self.agent
        for step in range(1, agent.max_steps + 1):
            self.usage.check()  # BudgetExceeded ends the turn before a request over its allowance
            yield AgentEvent(THINKING, f"Step {step}: thinking", metadata={"step": step})
            failure = None
            try:
                async with aclosing(self._stream(step)) as events:
                    async for event in events:
                        yield event
            except LLMError as exc:
                failure = str(exc) or "The language model failed"
            except Exception as exc:  # a provider bug: log it, tell the user without details
                logger.error("LLM provider of %r failed", agent.name, exc_info=True)
                failure = f"The language model failed unexpectedly ({type(exc).__name__})"
            if failure is None and self.response is None:
                failure = "The language model ended its reply without a response"
            if failure is not None:
                self.flush_partial()
                yield _error("LLM_ERROR", failure)
                return
            response, self.response = _normalize_response(self.response), None
            if response.reasoning:
                yield AgentEvent(THINKING, response.reasoning, metadata={"step": step, "reasoning": True})
            content = response.content or "".join(self.partial)
            self.partial = []
            self.append(response_to_message(dataclasses.replace(response, content=content)))
            if not response.tool_calls:
                yield AgentEvent(FINAL_ANSWER, content, metadata={"step": step})
                return
            for index, call in enumerate(response.tool_calls):
                async with aclosing(self._tool_call(call, index)) as events:
                    async for event in events:
                        yield event
        yield _error(
            "MAX_STEPS",
            f"Stopped after {agent.max_steps} steps without a final answer. Ask again or narrow the request.",
        )

    async def _stream(self, step: int) -> AsyncIterator[AgentEvent]:
        agent = self.agent
        llm = agent.llm
        stream_json = getattr(llm, "stream_json", None)
        system = agent._system()
        started = time.perf_counter_ns()
        if stream_json is not None:
            # The history as JSON encoded when each message was added: the request body is a
            # join of these, so a long conversation costs a copy of bytes, not re-encoding.
            encoded = agent._history.encoded
            stream = stream_json([system, *encoded] if system else list(encoded), agent._tools_json)
        else:
            messages = list(agent._history.messages)
            if system:
                messages.insert(0, {"role": "system", "content": agent.system_prompt})
            stream = llm.stream(messages, agent._tools_schema)
        stream = tracing.llm_stream(stream, llm)  # a "chat" span around it when tracing is on
        try:
            async for item in stream:
                if isinstance(item, TextDelta):
                    if item.text:
                        self.partial.append(item.text)
                        yield AgentEvent(PARTIAL_ANSWER, item.text, metadata={"step": step})
                elif isinstance(item, LLMResponse):
                    if self.response is None:
                        self.response = item
                else:
                    raise LLMError(f"The language model produced an unexpected {type(item).__name__}")
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
            # A failed or cancelled request counts too, its tokens unknown: never guessed.
            response = self.response
            self.usage.request(response.usage if response is not None else None, started,
                               getattr(llm, "model", None) or getattr(llm, "name", ""))

    async def _tool_call(self, call: ToolCall, index: int) -> AsyncIterator[AgentEvent]:
        agent = self.agent
        args, problem = _parse_arguments(call.arguments)
        yield AgentEvent(
            TOOL_CALL,
            f"Calling tool: {call.name}",
            step_id=call.id,
            metadata={"tool": call.name, "args": call.arguments if args is None else args, "status": "running"},
        )
        tool_ = agent._tool_map.get(call.name)
        if index >= agent.max_tool_calls_per_step:
            problem = (
                f"Too many tool calls in one step (limit {agent.max_tool_calls_per_step}); "
                "this call was not executed"
            )
        elif problem is not None:
            problem = f"Invalid arguments for tool {call.name!r}: {problem}"
        elif tool_ is None:
            available = ", ".join(agent._tool_map) or "none"
            problem = f"Unknown tool {call.name!r}. Available tools: {available}"
        else:
            try:
                args = tool_.validate_arguments(args)
            except (ToolArgumentsError, ToolDefinitionError) as exc:
                problem = f"Invalid arguments for tool {call.name!r}: {exc}"
        if problem is None and tool_.requires_confirmation:
            request = ConfirmRequest(call.id, call.name, dict(args), tool_.description)
            yield AgentEvent(
                USER_CONFIRM,
                f"Allow the tool {call.name!r} to run with arguments {_json(args)}?",
                step_id=call.id,
                metadata={"tool_name": call.name, "tool_args": dict(args), "tool_description": tool_.description},
            )
            problem = await self._ask(request)
        with tracing.tool_call(call.name, call.id) as span:
            if problem is not None:
                result = ToolResult(error=problem)
            else:
                started = time.perf_counter_ns()
                try:
                    result = await _execute(tool_, args)
                finally:
                    self.usage.tool_ns += time.perf_counter_ns() - started
            span.outcome(result, problem)
        text = _truncate(str(result), agent.max_tool_result_chars)
        self.append({"role": "tool", "tool_call_id": call.id, "content": text})
        yield AgentEvent(
            TOOL_RESULT,
            text,
            step_id=call.id,
            metadata={
                "tool": call.name,
                "status": "failed" if result.error is not None else "success",
                "error": None if result.error is None else _truncate(result.error, agent.max_tool_result_chars),
            },
        )

    async def _ask(self, request: ConfirmRequest) -> str | None:
        """None if the user approved the call, else the error the model sees."""
        if self.confirm is None:
            return DENIED
        timeout = self.agent.confirm_timeout
        try:
            async with asyncio.timeout(timeout):
                answer = self.confirm(request)
                if inspect.isawaitable(answer):
                    answer = await answer
        except TimeoutError:
            if timeout is not None:
                return f"User did not confirm the tool call within {timeout:g} s"
            logger.warning("confirm callback of %r failed; denying the call", self.agent.name, exc_info=True)
            return DENIED
        except Exception:
            logger.warning("confirm callback of %r failed; denying the call", self.agent.name, exc_info=True)
            return DENIED
        return None if answer is True else DENIED


# -- helpers -------------------------------------------------------------------------


async def _execute(tool_: BaseTool, args: dict[str, Any]) -> ToolResult:
    try:
        value = await tool_.execute(**args)
    except Exception as exc:
        logger.warning("tool %r raised %s", tool_.name, type(exc).__name__, exc_info=True)
        return ToolResult(error=f"{type(exc).__name__}: {exc}")
    if isinstance(value, ToolResult):
        return value
    return ToolResult(output=value)


def _parse_arguments(raw: str) -> tuple[dict[str, Any] | None, str | None]:
    if not raw.strip():
        return {}, None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, f"arguments are not valid JSON ({exc})"
    if not isinstance(value, dict):
        return None, f"arguments must be a JSON object, got {type(value).__name__}"
    return value, None


def _normalize_response(response: LLMResponse) -> LLMResponse:
    """Give every tool call a unique non-empty id, a name and string arguments."""
    calls: list[ToolCall] = []
    seen: set[str] = set()
    for call in response.tool_calls or ():
        call_id = call.id if isinstance(call.id, str) and call.id and call.id not in seen else ""
        call_id = call_id or f"call_{uuid.uuid4().hex[:24]}"
        seen.add(call_id)
        name = call.name if isinstance(call.name, str) and call.name else "unknown"
        arguments = call.arguments
        if isinstance(arguments, dict):
            arguments = _json(arguments)
        elif not isinstance(arguments, str):
            arguments = ""
        calls.append(ToolCall(call_id, name, arguments))
    return dataclasses.replace(response, content=response.content or "", tool_calls=calls)


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[truncated {len(text) - limit} chars]"


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return str(value)


def _error(code: str, message: str) -> AgentEvent:
    return AgentEvent(ERROR, message, metadata={"error_code": code, "recoverable": True})


def _check_positive(what: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")


def _check_tools(tools: Iterable[Any] | None) -> list[BaseTool]:
    """Validate the tool list at creation time, so a broken agent file fails to load."""
    if tools is None:
        return []
    if isinstance(tools, (str, bytes, dict)) or not isinstance(tools, Iterable):
        raise ToolDefinitionError("tools must be a list of BaseTool instances")
    checked: list[BaseTool] = []
    for item in tools:
        if isinstance(item, type) and issubclass(item, BaseTool):
            raise ToolDefinitionError(f"{item.__name__} is a tool class; pass an instance: {item.__name__}()")
        if not isinstance(item, BaseTool):
            if not callable(item):
                raise ToolDefinitionError(f"{item!r} is not a tool (expected a BaseTool instance)")
            item = tool(item)
        _check_tool(item)
        if any(t.name == item.name for t in checked):
            raise ToolDefinitionError(f"two tools are named {item.name!r}")
        checked.append(item)
    return checked


def _check_tool(item: BaseTool) -> None:
    where = type(item).__name__
    if not isinstance(item.name, str) or not TOOL_NAME_PATTERN.match(item.name):
        raise ToolDefinitionError(
            f"{where}.name {item.name!r} is invalid: use 1-64 letters, digits, '_' or '-'"
        )
    if not isinstance(item.description, str):
        raise ToolDefinitionError(f"tool {item.name!r}: description must be a string")
    if not isinstance(item.parameters, dict) or item.parameters.get("type") != "object":
        raise ToolDefinitionError(f"tool {item.name!r}: parameters must be a JSON Schema with \"type\": \"object\"")
    item.compile_parameters()


class _LLMCell:
    """The LLM of an agent and its clones: the object given at creation, or one made from
    the spec on first use. Providers keep no per-process state in themselves (the OpenAI
    client lives in a per-process registry), so a cell resolved before a fork is fine after."""

    __slots__ = ("spec", "model", "llm")

    def __init__(self, llm: LLM | str | None, model: str | None) -> None:
        self.spec: str | None = llm if isinstance(llm, str) else None
        self.model = model
        self.llm: LLM | None = None if llm is None or isinstance(llm, str) else llm

    def get(self) -> LLM:
        if self.llm is None:
            self.llm = _make_llm(self.spec, self.model)
        return self.llm


def _make_llm(spec: str | None, model: str | None) -> LLM:
    """``get_llm(spec)``; ``model`` names the OpenAI model unless the spec names one.

    Precedence for the OpenAI model: "openai:MODEL" in the spec (argument or
    MYAGENT_LLM), then ``model=``, then MYAGENT_MODEL, then the default.
    """
    from .llm import OpenAILLM, get_llm

    llm = get_llm(spec)
    if model and isinstance(llm, OpenAILLM):
        chosen = spec if spec is not None else os.environ.get("MYAGENT_LLM", "")
        if not chosen.partition(":")[2].strip():
            llm = get_llm(f"openai:{model}")
    return llm
