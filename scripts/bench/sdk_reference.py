"""The SDK-alone reference: the same three streamed requests a bench turn makes, with no server of ours.

    python scripts/bench/sdk_reference.py BASE_URL --history 2,100 --turns 50 --mode typed,lean

One process, one ``AsyncOpenAI`` client (keep-alive), talking to ``myagent-ws fake-llm``
serving scripts/bench/llm_script.json. A "turn" is the three requests of one user message
of the bench agent: (1) the history plus the user message, answered by a tool call; (2) plus
that call and its result, answered by a second tool call; (3) plus that one, answered by the
streamed text. ``--history N`` puts N earlier messages (whole earlier turns) in front.

Modes, the request path being the only difference:

* ``typed``: ``client.chat.completions.create(messages=..., tools=...)``, what a user writes;
  the SDK walks every message with its type-driven transform, then ``json.dumps``.
* ``extra_body``: the same call with ``messages``/``tools`` handed over in ``extra_body``
  (the known workaround: no transform; the stdlib encoder still serialises every message).
* ``raw``: ``client.post(..., content=bytes)`` with the body joined from messages already
  encoded once (orjson); chunks still parsed into the SDK's ``ChatCompletionChunk`` models.
* ``lean``: ``raw`` with ``stream_cls=AsyncStream[object]``: the SDK decodes the SSE stream
  (and raises on error events) but hands each chunk over as the decoded dict instead of
  building pydantic models - the path myagent's OpenAILLM takes.
* ``lean_aiohttp``: ``lean`` with the SDK's ``DefaultAioHttpClient`` (aiohttp under httpx2;
  needs ``pip install openai[aiohttp]``): not what OpenAILLM uses; it measures what the next
  step (a C HTTP parser under the SDK) would save.

Prints one JSON line per (history, mode): CPU ms (this process: user + system) per request
and per turn, over ``--turns`` measured turns after ``--warmup`` unmeasured ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import orjson

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city.",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                        "required": ["city"]}}}
SYSTEM = {"role": "system", "content": "You are a weather assistant. Use the tool, then answer briefly."}
ANSWER = "It is sunny in Beijing and in Shanghai today."


def one_turn_messages(n: int) -> list[list[dict]]:
    """The messages of turn ``n`` as the three requests see them (each a suffix to append)."""
    user = {"role": "user", "content": f"What is the weather like? (question {n})"}
    calls = []
    for k, city in enumerate(("Beijing", "Shanghai")):
        call_id = f"call_{n}_{k}_0"
        calls.append([{"role": "assistant", "content": "", "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": "get_weather",
                                                             "arguments": json.dumps({"city": city})}}]},
                      {"role": "tool", "tool_call_id": call_id, "content": f"{city}: sunny, 25°C"}])
    return [[user], calls[0], calls[1]]


def earlier_history(count: int) -> list[dict]:
    """``count`` messages of earlier, completed turns (whole turns, cut to ``count``)."""
    history: list[dict] = []
    n = 0
    while len(history) < count:
        n += 1
        for part in one_turn_messages(-n):
            history.extend(part)
        history.append({"role": "assistant", "content": ANSWER})
    return history[-count:] if count else []


async def run(base_url: str, mode: str, history: int, turns: int, warmup: int) -> dict[str, Any]:
    import openai
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    http_client = openai.DefaultAioHttpClient() if mode.endswith("aiohttp") else None
    client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0, timeout=30,
                                http_client=http_client)
    base = earlier_history(history)
    tools_json = orjson.dumps([TOOL])
    chunks = 0

    async def request(messages: list[dict], encoded: list[bytes]) -> None:
        nonlocal chunks
        if mode == "typed":
            stream = await client.chat.completions.create(model="fake", messages=messages, tools=[TOOL], stream=True)
        elif mode == "extra_body":
            stream = await client.chat.completions.create(model="fake", messages=[], stream=True,
                                                          extra_body={"messages": messages, "tools": [TOOL]})
        else:
            body = b'{"model":"fake","stream":true,"tools":' + tools_json + b',"messages":[' + b",".join(encoded) + b"]}"
            lean = mode.startswith("lean")
            stream = await client.post("/chat/completions", cast_to=object if lean else ChatCompletion, content=body,
                                       stream=True,
                                       stream_cls=openai.AsyncStream[object if lean else ChatCompletionChunk])
            async with stream:
                async for chunk in stream:
                    chunks += 1
                    if lean:
                        for choice in chunk["choices"]:
                            _ = choice["delta"].get("content"), choice["delta"].get("tool_calls")
                    else:
                        for choice in chunk.choices:
                            _ = choice.delta.content, choice.delta.tool_calls
            return
        async with stream:
            async for chunk in stream:
                chunks += 1
                for choice in chunk.choices:
                    _ = choice.delta.content, choice.delta.tool_calls

    async def turn(n: int) -> None:
        messages = [SYSTEM, *base]
        encoded = [orjson.dumps(m) for m in messages]  # done once per message in the real path
        for part in one_turn_messages(n):
            messages.extend(part)
            encoded.extend(orjson.dumps(m) for m in part)
            await request(messages, encoded)

    for n in range(warmup):
        await turn(n)
    chunks = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for n in range(turns):
        await turn(n)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await client.close()
    return {"mode": mode, "history": history, "turns": turns,
            "cpu_ms_per_turn": cpu / turns * 1000, "cpu_ms_per_request": cpu / turns / 3 * 1000,
            "wall_ms_per_turn": wall / turns * 1000, "chunks_per_turn": chunks / turns}


MODES = ["typed", "extra_body", "raw", "lean", "lean_aiohttp"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base_url")
    parser.add_argument("--history", default="2", help="earlier messages before each turn (comma-separated list)")
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--mode", default="typed", help=f"request path(s), comma-separated: {', '.join(MODES)}")
    args = parser.parse_args()
    modes = args.mode.split(",")
    for mode in modes:
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}")
    for history in (int(h) for h in args.history.split(",")):
        for mode in modes:
            # The typed path is slow with a long history: fewer turns keep the run short.
            turns = args.turns if mode != "typed" or history <= 100 else max(3, args.turns // 5)
            result = asyncio.run(run(args.base_url, mode, history, turns, args.warmup))
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
