"""`myagent-ws chat`: a terminal conversation with a running server.

The session outlives its connection (``ResumingSession``): a server restart
or a network drop prints "reconnecting…", then "resumed", and the turn goes
on with what was missed replayed. Ctrl-C cancels the running turn (a second
one quits) and quits at the prompt, at once. On the way out the session is
closed, so that it does not wait detached for the server's TTL.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from typing import Callable

from rich.text import Text

from myagent.client import ClientError, ConnectionLost
from myagent.client.backoff import Backoff
from myagent.client.prompt import LineReader
from myagent.client.reasons import describe
from myagent.client.render import EventPrinter, plain
from myagent.client.resume import ResumingSession, SessionLost
from myagent.client.urls import ws_url
from myagent.protocol import events as ev

EXIT_OK = 0           # every turn answered (with -m), or the user left with Ctrl-D
EXIT_TURN_FAILED = 1  # with -m: a turn ended in an error or was interrupted; or the session was lost
EXIT_NO_SERVER = 2    # bad URL, or no session could be opened (refused, TLS, 401, unknown host...)
EXIT_CTRL_C = 130     # the user pressed Ctrl-C (128 + SIGINT, as shells report it)

ANSWERED, FAILED, CANCELLED = "answered", "failed", "cancelled"
_IGNORED_REFUSALS = {ev.USER_CANCEL, ev.USER_ACK}  # harmless races: a cancel just after the turn ended


class Chat:
    def __init__(self, url: str, token: str | None, messages: list[str], printer: EventPrinter,
                 reader: LineReader | None = None, backoff: Backoff | None = None) -> None:
        self.url = url
        self.token = token
        self.messages = messages
        self.printer = printer
        self.reader = reader or LineReader()
        self.backoff = backoff
        self.link = self._new_link()
        self.in_turn = False
        self.cancel_requested = False
        self.sent = False  # whether the current turn's message left (before its session was lost)
        self.quitting = False
        self._main: asyncio.Task | None = None

    def _new_link(self) -> ResumingSession:
        return ResumingSession(self.url, self.token, lambda text, style: self.printer.note(text, style),
                               self.backoff)

    # Ctrl-C ------------------------------------------------------------------------------

    def on_sigint(self) -> None:
        """First Ctrl-C in a turn cancels it; otherwise (or a second time) quit now."""
        if self.in_turn and not self.cancel_requested:
            self.cancel_requested = True
            self.printer.note("cancelling the turn… (Ctrl-C again to quit)", "yellow")
            asyncio.get_running_loop().create_task(self._send_cancel())
            return
        self.quitting = True
        if self._main is not None:
            self._main.cancel()

    async def _send_cancel(self) -> None:
        try:
            await asyncio.wait_for(self.link.send(lambda sid: {"event": ev.USER_CANCEL, "session_id": sid}), 5.0)
        except (SessionLost, TimeoutError):
            pass  # the turn ends (or not) on its own; a second Ctrl-C quits

    # The conversation --------------------------------------------------------------------

    async def run(self) -> int:
        self._main = asyncio.current_task()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self.on_sigint)
        try:
            code = await self._open()
            return code if code is not None else await self._converse()
        except asyncio.CancelledError:
            if not self.quitting:
                raise
            self._main.uncancel()
            self.printer.prompt_done()
            self.printer.end()
            return EXIT_CTRL_C
        finally:
            self.in_turn = False
            await self.link.close()  # a second Ctrl-C here cancels it: chat() still exits 130
            loop.remove_signal_handler(signal.SIGINT)

    async def _open(self) -> int | None:
        """Open the session; an exit code if it could not be."""
        try:
            session = await self.link.open()
        except ClientError as exc:
            self.printer.error(f"the server refused a session: {plain(str(exc))}")
            return EXIT_NO_SERVER
        except ConnectionLost as exc:
            self.printer.error(f"the server closed the connection: {plain(str(exc))}")
            return EXIT_NO_SERVER
        except Exception as exc:  # noqa: BLE001 - every connect failure gets one line, never a traceback
            self.printer.error(f"cannot connect to {self.url}: {describe(exc, self.url, bool(self.token))}")
            return EXIT_NO_SERVER
        self.printer.line(("connected to ", "green"), (plain(session.agent_name), "bold green"),
                          (f" (session {plain(session.id)}; Ctrl-D or Ctrl-C to quit)", "dim"))
        return None

    async def _converse(self) -> int:
        if self.messages:
            code = EXIT_OK
            for text in self.messages:
                self.printer.line(("you: ", "bold"), plain(text))
                try:
                    outcome = await self.turn(text, interactive=False)
                except SessionLost:
                    return EXIT_TURN_FAILED
                if outcome == CANCELLED:
                    return EXIT_CTRL_C
                if outcome != ANSWERED:
                    code = EXIT_TURN_FAILED
            return code
        interactive = sys.stdin.isatty()
        while True:
            text = await self.ask("you: ")
            if text is None:
                self.printer.console.print()
                return EXIT_OK
            if not text.strip():
                continue
            try:
                await self.turn(text, interactive)
            except SessionLost:
                if not await self._start_over():
                    return EXIT_TURN_FAILED
                if not self.sent:  # lost before it left: it goes to the new session
                    await self.turn(text, interactive)

    async def _start_over(self) -> bool:
        """After a lost session, an interactive chat goes on in a new one (as the console does)."""
        await self.link.close()
        self.link = self._new_link()
        if await self._open() is not None:
            return False
        self.printer.note("this is a new session: the conversation starts over", "yellow")
        return True

    async def ask(self, prompt: str) -> str | None:
        self.printer.prompt(prompt)
        try:
            text = await self.reader.readline()
        finally:
            self.printer.prompt_done()
        if text is not None and not os.isatty(self.reader.fd):  # a terminal echoes what is typed; a pipe not
            self.printer.console.print(Text(plain(text)))
        return text

    # One turn ----------------------------------------------------------------------------

    async def turn(self, text: str, interactive: bool) -> str:
        """Send ``text`` and show its events through its terminal event: ANSWERED, FAILED or CANCELLED."""
        for event in self.link.take_pending():  # arrived between turns (say, replayed at a resume)
            self.printer.show(event.get("event", ""), event.get("content"), event.get("metadata"))
        # With a message_id, sending again after a resume never runs the message twice.
        message_id = f"chat-{secrets.token_hex(8)}"

        def message(sid: str) -> dict:
            return {"event": ev.USER_MESSAGE, "session_id": sid, "content": text,
                    "metadata": {"message_id": message_id}}

        self.in_turn, self.cancel_requested, self.sent = True, False, False
        try:
            sent_at = await self.link.send(message)
            self.sent = True
            return await self._follow(message, message_id, sent_at, interactive)
        finally:
            self.in_turn = False
            self.printer.end()

    async def _follow(self, message: Callable[[str], dict], message_id: str, sent_at: int,
                      interactive: bool) -> str:
        turn_id = None
        while True:
            event = await self.link.next_event()
            name, meta = event.get("event"), event.get("metadata") or {}
            if name == ev.AGENT_SESSION_RESUMED:
                # A resume after the message was sent, and nothing runs or waits: the message never got
                # there (or was refused while the server drained). A resume before it says nothing.
                if event.get("seq", 0) > sent_at and not meta.get("turn_running") and not meta.get("queued"):
                    if turn_id is not None:
                        self.printer.error("the end of this turn could not be replayed")
                        return FAILED
                    sent_at = await self.link.send(message)
                continue
            if name == ev.SYSTEM_ERROR and "seq" not in event:  # a refused request, not a turn's end
                request = meta.get("request_event")
                if request in _IGNORED_REFUSALS:
                    continue
                if request == ev.USER_MESSAGE and meta.get("error_code") == "SHUTTING_DOWN":
                    self.printer.note("the server is restarting: the message is sent again once resumed", "yellow")
                    continue
                self.printer.show(name, event.get("content"), meta)
                if request == ev.USER_MESSAGE:  # the message will not run
                    return FAILED
                continue  # say a refused confirmation: the turn goes on
            if name == ev.SYSTEM_NOTICE and meta.get("duplicate") and meta.get("message_id") == message_id:
                self.printer.error("the message had reached the server already; its answer could not be replayed")
                return FAILED
            if turn_id is None and meta.get("turn_id"):
                turn_id = meta["turn_id"]
            self.printer.show(name, event.get("content"), meta)
            if name == ev.AGENT_USER_CONFIRM:
                await self._confirm(event, interactive)
            if name in ev.TERMINAL_EVENTS:
                await self._ack()
                if name == ev.AGENT_FINAL_ANSWER:
                    return ANSWERED
                if name == ev.AGENT_INTERRUPTED and meta.get("reason") == "CANCELLED" and self.cancel_requested:
                    return CANCELLED
                return FAILED

    async def _confirm(self, event: dict, interactive: bool) -> None:
        if interactive:
            answer = await self.ask("Approve? [y/N] ")
        else:
            self.printer.note("denied: nobody to ask (-m, or no terminal); approve in an interactive chat", "yellow")
            answer = "n"
        confirmed = (answer or "").strip().lower() in ("y", "yes")
        step_id = event.get("step_id")
        await self.link.send(lambda sid: {"event": ev.USER_RESPONSE, "session_id": sid, "step_id": step_id,
                                          "content": {"confirmed": confirmed}})

    async def _ack(self) -> None:
        """Let the server drop what we have from its replay buffer (best effort)."""
        client, session = self.link.client, self.link.session
        if client is None or session is None or client.closed.is_set():
            return
        try:
            await session.ack()
        except ConnectionLost:
            pass


async def chat(url: str, token: str | None, messages: list[str], backoff: Backoff | None = None) -> int:
    printer = EventPrinter()
    try:
        target = ws_url(url)
    except ValueError as exc:
        printer.error(f"bad server URL {exc}")
        return EXIT_NO_SERVER
    try:
        return await Chat(target, token, messages, printer, backoff=backoff).run()
    except asyncio.CancelledError:  # a second Ctrl-C while closing
        return EXIT_CTRL_C
