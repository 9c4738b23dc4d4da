"""Compact terminal rendering of agent events (used by `run` and `chat`)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from myagent.protocol import events as ev


class EventPrinter:
    """Tokens print as they arrive; steps print as one dim line each."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False)
        self._streaming = False

    def _newline(self) -> None:
        if self._streaming:
            self.console.print()
            self._streaming = False

    def show(self, event: str, content: Any, metadata: dict | None = None) -> None:
        meta = metadata or {}
        if event == ev.AGENT_PARTIAL_ANSWER:
            self.console.print(str(content), end="", markup=False)
            self._streaming = True
            return
        if event == ev.AGENT_FINAL_ANSWER:
            if not self._streaming:
                self.console.print(str(content), markup=False)
            self._newline()
            return
        self._newline()
        if event == ev.AGENT_THINKING:
            self.console.print(f"[dim]… {content}[/dim]")
        elif event == ev.AGENT_TOOL_CALL:
            self.console.print(f"[cyan]→ {meta.get('tool')}[/cyan] [dim]{meta.get('args')}[/dim]")
        elif event == ev.AGENT_TOOL_RESULT:
            mark = "[green]✓[/green]" if meta.get("status") == "success" else "[red]✗[/red]"
            text = str(content)
            self.console.print(f"{mark} [dim]{text[:300]}{'…' if len(text) > 300 else ''}[/dim]", markup=True)
        elif event == ev.AGENT_USER_CONFIRM:
            self.console.print(f"[yellow]? {content}[/yellow]")
        elif event in (ev.AGENT_ERROR, ev.SYSTEM_ERROR):
            self.console.print(f"[red]error {meta.get('error_code', '')}: {content}[/red]")
        elif event == ev.AGENT_INTERRUPTED:
            self.console.print(f"[yellow]interrupted ({meta.get('reason', '')}): {content}[/yellow]")
        elif event == ev.AGENT_MESSAGE_QUEUED:
            self.console.print(f"[dim]queued (position {meta.get('position')})[/dim]")
        elif event == ev.SYSTEM_NOTICE:
            self.console.print(f"[blue]notice: {content}[/blue]")

    def end(self) -> None:
        self._newline()
