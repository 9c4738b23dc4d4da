"""myagent/client/render.py: server text is printed as text (never markup, never raw escapes)."""

from __future__ import annotations

import io

from rich.console import Console

from myagent.client.render import EventPrinter, plain
from myagent.protocol import events as ev

HOSTILE = "[high] buy milk [/x] [bold red]boom :smile: \x1b[2J\x07"


def printer() -> tuple[EventPrinter, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, highlight=False, markup=False, emoji=False, soft_wrap=True, force_terminal=False)
    return EventPrinter(console), out


def test_plain_shows_control_characters_and_keeps_lines():
    assert plain("a\x1b[31mb\r\nc\td") == "a\\x1b[31mb\nc\td"
    assert plain({"k": "[/x]"}) == '{"k":"[/x]"}'
    assert plain("x" * 5, limit=3) == "xxx…"


def test_every_event_prints_server_text_literally():
    p, out = printer()
    meta = {"tool": "[/x]tool", "args": {"city": "[/x]"}, "status": "success", "error_code": "[b]E",
            "reason": "[i]R", "position": "[u]1"}
    for name in (ev.AGENT_THINKING, ev.AGENT_TOOL_CALL, ev.AGENT_TOOL_RESULT, ev.AGENT_USER_CONFIRM,
                 ev.AGENT_ERROR, ev.SYSTEM_ERROR, ev.AGENT_INTERRUPTED, ev.SYSTEM_NOTICE,
                 ev.AGENT_PARTIAL_ANSWER, ev.AGENT_FINAL_ANSWER):
        p.show(name, HOSTILE, meta)
    p.note(HOSTILE)
    p.error(HOSTILE)
    text = out.getvalue()
    # 8 events (the streamed final answer is not printed twice), the note and the error
    assert text.count("[high] buy milk [/x] [bold red]boom :smile: \\x1b[2J\\x07") == 10
    assert "\x1b" not in text and "\x07" not in text
    assert "→ [/x]tool {'city': '[/x]'}" in text
    assert "error [b]E:" in text and "interrupted ([i]R)" in text


def test_the_default_console_parses_no_markup():
    p = EventPrinter()
    assert p.console._markup is False and p.console._emoji is False


def test_a_line_during_the_prompt_reprints_the_prompt():
    p, out = printer()
    p.prompt("you: ")
    p.note("reconnecting…")
    p.prompt_done()
    assert out.getvalue() == "you: \nreconnecting…\nyou: "
