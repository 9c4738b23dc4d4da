"""A minimal myagent-ws client with the `websockets` library (no myagent code).

    python docs/clients/client.py ws://127.0.0.1:8080 "/get_weather city=Beijing"

Creates a session, sends one message, prints the streamed answer and the tool steps,
approves every confirmation, exits after the turn's terminal event (0: final answer).
A token, for a server that requires one, comes from the environment variable
MYAGENT_WS_TOKEN (not the command line, where every local user can read it).
"""

import asyncio
import json
import os
import sys

from websockets.asyncio.client import connect


async def main(url: str = "ws://127.0.0.1:8080", message: str = "Hello!", token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with connect(url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"event": "user.create_session"}))
        sid = None
        async for raw in ws:
            ev = json.loads(raw)
            kind, meta = ev["event"], ev.get("metadata") or {}
            if kind == "agent.session_created":
                sid = ev["session_id"]
                await ws.send(json.dumps({"event": "user.message", "session_id": sid, "content": message}))
            elif kind == "agent.partial_answer":
                print(ev["content"], end="", flush=True)
            elif kind == "agent.tool_call":
                print(f"\n-> {meta['tool']}({json.dumps(meta['args'])})")
            elif kind == "agent.tool_result":
                print(f"<- {meta['status']}: {ev['content']}")
            elif kind == "agent.user_confirm":
                print(f"? {ev['content']} -> approved")
                await ws.send(json.dumps({"event": "user.response", "session_id": sid,
                                          "step_id": ev["step_id"], "content": {"confirmed": True}}))
            elif kind == "agent.final_answer":
                print(f"\nFINAL: {ev['content']}")
                return 0
            elif kind in ("agent.error", "agent.interrupted"):
                print(f"\n{kind}: {ev['content']} ({meta.get('error_code') or meta.get('reason')})")
                return 1
            elif kind == "system.error":
                print(f"\nerror {meta['error_code']}: {ev['content']}")
                if not meta["recoverable"]:
                    return 1
    return 1


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(*sys.argv[1:3], token=os.environ.get("MYAGENT_WS_TOKEN"))))
    except OSError as exc:
        sys.exit(f"cannot connect: {exc}")
