"""Compact terminal rendering of agent events (used by `run` and `chat`)."""

from __future__ import annotations

from typing import Any

from rich.console import Console


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
        if event == "agent.partial_answer":
            self.console.print(str(content), end="", markup=False)
            self._streaming = True
            return
        if event == "agent.final_answer":
            if not self._streaming:
                self.console.print(str(content), markup=False)
            self._newline()
            return
        self._newline()
        if event == "agent.thinking":
            self.console.print(f"[dim]… {content}[/dim]")
        elif event == "agent.tool_call":
            self.console.print(f"[cyan]→ {meta.get('tool')}[/cyan] [dim]{meta.get('args')}[/dim]")
        elif event == "agent.tool_result":
            mark = "[green]✓[/green]" if meta.get("status") == "success" else "[red]✗[/red]"
            text = str(content)
            self.console.print(f"{mark} [dim]{text[:300]}{'…' if len(text) > 300 else ''}[/dim]", markup=True)
        elif event == "agent.user_confirm":
            self.console.print(f"[yellow]? {content}[/yellow]")
        elif event in ("agent.error", "system.error"):
            self.console.print(f"[red]error {meta.get('error_code', '')}: {content}[/red]")
        elif event == "agent.interrupted":
            self.console.print(f"[yellow]interrupted ({meta.get('reason', '')}): {content}[/yellow]")
        elif event == "system.notice":
            self.console.print(f"[blue]notice: {content}[/blue]")

    def end(self) -> None:
        self._newline()
