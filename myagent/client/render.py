"""Compact terminal rendering of agent events (used by `run` and `chat`).

Everything the server (or the model, or a tool) wrote is printed as text,
never as rich markup: ``[high] buy milk`` prints as typed and ``[/x]`` in a
tool result cannot crash the client. The console parses no markup and no
emoji codes at all; styles are applied with :class:`rich.text.Text`, and
control characters (terminal escape sequences a model or a tool may emit)
are shown as ``\\x1b`` rather than sent to the terminal.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from rich.console import Console
from rich.text import Text

from myagent.protocol import events as ev

RESULT_CHARS = 300  # a tool result is cut after this many characters (the full text is in the event)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(value: Any, limit: int | None = None) -> str:
    """``value`` as inert display text: JSON for non-strings, control characters made visible."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = orjson.dumps(value).decode()
        except TypeError:
            text = str(value)
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text.replace("\r\n", "\n"))
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    return text


def make_console() -> Console:
    """A console that prints strings literally: no markup, no emoji codes, no highlighting, and
    no hard wrapping (the terminal wraps; copied text stays whole)."""
    return Console(highlight=False, markup=False, emoji=False, soft_wrap=True)


class EventPrinter:
    """Tokens print as they arrive; steps print as one dim line each."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or make_console()
        self._streaming = False
        self.prompt_text: str | None = None  # shown while waiting for the user's line

    def _newline(self) -> None:
        if self._streaming:
            self.console.print()
            self._streaming = False

    def line(self, *parts: str | tuple[str, str]) -> None:
        """One line from (text, style) parts; text is never parsed as markup. A prompt being
        shown is moved below the line (a reconnect may be announced while the user types)."""
        if self.prompt_text is not None:
            self.console.print()
        self._newline()
        self.console.print(Text.assemble(*(plain(p) if isinstance(p, str) else (plain(p[0]), p[1]) for p in parts)))
        if self.prompt_text is not None:
            self.console.print(self.prompt_text, end="")

    def note(self, text: str, style: str = "dim") -> None:
        self.line((text, style))

    def error(self, text: str) -> None:
        self.line((text, "red"))

    def prompt(self, text: str) -> None:
        self._newline()
        self.prompt_text = text
        self.console.print(Text(plain(text), style="bold"), end="")

    def prompt_done(self) -> None:
        self.prompt_text = None

    def show(self, event: str, content: Any, metadata: dict | None = None) -> None:
        meta = metadata or {}
        if event == ev.AGENT_PARTIAL_ANSWER:
            self.console.print(Text(plain(content)), end="")
            self._streaming = True
            return
        if event == ev.AGENT_FINAL_ANSWER:
            if not self._streaming:
                self.console.print(Text(plain(content)))
            self._newline()
            return
        if event == ev.AGENT_THINKING:
            self.line((f"… {plain(content)}", "dim"))
        elif event == ev.AGENT_TOOL_CALL:
            args = meta.get("args")
            args_text = plain(str(args) if isinstance(args, dict) else args, RESULT_CHARS)
            self.line((f"→ {plain(meta.get('tool'))}", "cyan"), " ", (args_text, "dim"))
        elif event == ev.AGENT_TOOL_RESULT:
            mark = ("✓", "green") if meta.get("status") == "success" else ("✗", "red")
            self.line(mark, " ", (plain(content, RESULT_CHARS), "dim"))
        elif event == ev.AGENT_USER_CONFIRM:
            self.line((f"? {plain(content)}", "yellow"))
        elif event in (ev.AGENT_ERROR, ev.SYSTEM_ERROR):
            self.line((f"error {plain(meta.get('error_code', ''))}: {plain(content)}", "red"))
        elif event == ev.AGENT_INTERRUPTED:
            self.line((f"interrupted ({plain(meta.get('reason', ''))}): {plain(content)}", "yellow"))
        elif event == ev.AGENT_MESSAGE_QUEUED:
            self.line((f"queued (position {plain(meta.get('position'))})", "dim"))
        elif event == ev.SYSTEM_NOTICE:
            self.line((f"notice: {plain(content)}", "blue"))

    def end(self) -> None:
        self._newline()
