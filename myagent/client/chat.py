"""`myagent-ws chat`: a terminal conversation with a running server."""

from __future__ import annotations

import asyncio
import sys

from myagent.protocol import events as ev
from myagent.client import AgentClient, ClientError, ClientSession
from myagent.client.render import EventPrinter


async def _prompt(text: str) -> str | None:
    try:
        return await asyncio.to_thread(input, text)
    except EOFError:
        return None


async def _turn(session: ClientSession, text: str, printer: EventPrinter, interactive: bool) -> None:
    async for event in session.send(text, timeout=None):
        name = event.get("event")
        printer.show(name, event.get("content"), event.get("metadata"))
        if name == ev.AGENT_USER_CONFIRM:
            answer = await _prompt("Approve? [y/N] ") if interactive else "n"
            await session.respond(event["step_id"], (answer or "").strip().lower() in ("y", "yes"))
    printer.end()


async def chat(url: str, token: str | None, messages: list[str]) -> int:
    printer = EventPrinter()
    try:
        client = await AgentClient.connect(url, token=token)
    except (OSError, TimeoutError) as exc:
        printer.console.print(f"[red]cannot connect to {url}: {exc}[/red]")
        return 1
    except Exception as exc:  # handshake refused (401/403/503) and the like
        printer.console.print(f"[red]cannot connect to {url}: {exc}[/red]")
        return 1
    async with client:
        try:
            session = await client.create_session()
        except ClientError as exc:
            printer.console.print(f"[red]{exc}[/red]")
            return 1
        printer.console.print(f"[green]connected to {session.agent_name!r}[/green] "
                              f"[dim](session {session.id}; Ctrl-D to quit)[/dim]")
        interactive = not messages and sys.stdin.isatty()
        try:
            if messages:
                for text in messages:
                    printer.console.print(f"[bold]you:[/bold] {text}")
                    await _turn(session, text, printer, interactive=False)
                return 0
            while True:
                text = await _prompt("you: ")
                if text is None:
                    return 0
                if text.strip():
                    await _turn(session, text, printer, interactive)
        except ClientError as exc:
            printer.console.print(f"[red]{exc}[/red]")
            return 1
