"""`myagent-ws status [URL]`: a terminal view of a server's /status.

Exit code: 0 when the server is ready (/ready answers 200), 1 when it answers
but is not ready (draining, restart budget spent, no sandbox), 2 when it
cannot be reached or does not answer like a myagent-ws server.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from myagent.client.urls import http_url as base_url  # shared with `chat`

EXIT_READY, EXIT_NOT_READY, EXIT_UNREACHABLE = 0, 1, 2


@dataclass
class Snapshot:
    ready_code: int | None = None      # HTTP status of /ready, None if unreachable
    status: dict | None = None         # parsed /status
    raw: bytes = b""                   # /status body as received
    error: str | None = None           # why the server could not be read

    @property
    def exit_code(self) -> int:
        if self.error is not None or self.ready_code is None:
            return EXIT_UNREACHABLE
        return EXIT_READY if self.ready_code == 200 else EXIT_NOT_READY


def _get(url: str, timeout: float, token: str | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def fetch(base: str, timeout: float = 5.0, token: str | None = None) -> Snapshot:
    snap = Snapshot()
    try:
        snap.ready_code, _ = _get(base + "/ready", timeout, token)
        code, snap.raw = _get(base + "/status", timeout, token)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        snap.ready_code, snap.error = None, f"{base} is unreachable: {reason}"
        return snap
    if code != 200:
        snap.error = f"{base}/status answered HTTP {code}"
        return snap
    try:
        snap.status = json.loads(snap.raw)
    except ValueError:
        snap.error = f"{base}/status did not answer JSON"
    return snap


# Rendering ----------------------------------------------------------------------------


def human_bytes(n: float | None) -> str:
    if not n:
        return "0"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def human_seconds(s: float | None) -> str:
    if s is None:
        return "—"
    s = int(s)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{s:02d}s"
    return f"{s}s"


def _ms(v: Any) -> str:
    return "—" if v is None else f"{v:.0f} ms" if v >= 100 else f"{v:.1f} ms"


def _ms_pair(p50: Any, p99: Any) -> str:
    """``3.8/12 ms``: a percentile pair in one narrow cell."""
    if p50 is None and p99 is None:
        return "—"
    return "/".join("—" if v is None else f"{v:.0f}" if v >= 100 else f"{v:.1f}" for v in (p50, p99)) + " ms"


def _usage(value: float, cap: float, text: str) -> Text:
    """``text`` coloured by how close ``value`` is to ``cap`` (no cap: plain)."""
    if not cap:
        return Text(text)
    ratio = value / cap
    style = "red" if ratio >= 0.9 else "yellow" if ratio >= 0.7 else "green"
    return Text(f"{text} {ratio:.0%}", style=style)


def _counts(d: dict | None) -> str:
    if not d:
        return "—"
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))


def render(snap: Snapshot, base: str) -> Any:
    if snap.status is None:
        return Panel(Text(snap.error or "no data", style="bold red"), title="myagent-ws status", border_style="red")
    st = snap.status
    ready = snap.ready_code == 200
    state = Text("READY", style="bold green") if ready else Text(
        f"NOT READY: {st.get('ready_reason', '?')}", style="bold red")
    # Several agents: one row each and every agent's sandboxes; one agent: the view as it always was.
    sections = st.get("agents") or [st]
    several = len(sections) > 1
    agent = st.get("agent") or {}
    named = (f"{len(sections)} agents", "bold cyan") if several else (str(agent.get("name")), "bold cyan")
    header = Text.assemble(("myagent-ws ", "bold"), f"{st.get('version', '?')}  ·  {'' if several else 'agent '}",
                           named, f"  ·  up {human_seconds(st.get('uptime_seconds'))}  ·  {base}  ·  ", state)

    overview = Table(box=box.SIMPLE_HEAD, show_header=True, expand=False, title="Agents" if several else "Overview",
                     title_justify="left")
    # Two-line headers and paired cells: the view fits an 80-column terminal, several agents too
    # (which leave out the first-event latency for their agent and state columns).
    columns = (["agent", "state"] if several else []) + ["conns", "sessions\nact/det", "turns\nrun/all",
                                                         "turn\np50/p99"] + \
        ([] if several else ["1st event\np50/p99"]) + ["restarts\n(recent)"]
    for col in columns:
        overview.add_column(col, justify="left" if col in ("agent", "state") else "right")
    for section in sections:
        sessions, totals = section.get("sessions") or {}, section.get("totals") or {}
        latency, restarts = section.get("latency") or {}, section.get("restarts") or {}
        first = [str(section.get("path")),
                 Text("ready", style="green") if section.get("ready") else
                 Text(str(section.get("ready_reason")), style="red")] if several else []
        first_event = [] if several else [_ms_pair(latency.get("first_event_p50_ms"),
                                                   latency.get("first_event_p99_ms"))]
        overview.add_row(
            *first, str(section.get("connections", 0)),
            f"{sessions.get('active', 0)}/{sessions.get('detached', 0)}",
            f"{sessions.get('turns_running', 0)}/{totals.get('turns_started', 0)}",
            _ms_pair(latency.get("turn_p50_ms"), latency.get("turn_p99_ms")), *first_event,
            f"{restarts.get('total', 0)} ({restarts.get('recent', 0)})")

    # One sandbox table per agent (titled with its path) rather than an agent column: 80 columns.
    tables = []
    for section in sections:
        title = f"Sandboxes of {section.get('path')}" if several else "Sandboxes"
        sandboxes = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", collapse_padding=True)
        for col, justify in [("id", "right"), ("pid", "right"), ("state", "left"), ("sess", "right"),
                             ("turns", "right"), ("RSS", "right"), ("CPU", "right"), ("up", "right"),
                             ("last\nbeat", "right"), ("kill\nreason", "left")]:
            sandboxes.add_column(col, justify=justify)
        _sandbox_rows(sandboxes, section, [])
        tables.append(sandboxes)

    counts = Table(box=box.SIMPLE_HEAD, show_header=False, title="Totals", title_justify="left")
    counts.add_column(style="dim")
    counts.add_column()
    for section in sections:
        _total_rows(counts, section, f"{section.get('name')}: " if several else "")
    return Group(header, overview, *tables, counts)


def _sandbox_rows(table: Table, section: dict, first: list[str]) -> None:
    limits = section.get("limits") or {}
    max_mem, max_cpu = limits.get("max_memory") or 0, limits.get("max_cpu") or 0
    per_worker = limits.get("sessions_per_worker") or 0
    for sb in section.get("sandboxes") or []:
        state_style = {"ready": "green", "starting": "yellow", "draining": "yellow"}.get(sb.get("state"), "red")
        table.add_row(
            *first, str(sb.get("id")), str(sb.get("pid")), Text(str(sb.get("state")), style=state_style),
            _usage(sb.get("sessions", 0), per_worker, str(sb.get("sessions", 0))) if per_worker else
            str(sb.get("sessions", 0)),
            str(sb.get("turns_served", 0)),
            _usage(sb.get("rss_bytes", 0), max_mem, human_bytes(sb.get("rss_bytes"))),
            _usage(sb.get("cpu_percent", 0.0), max_cpu, f"{sb.get('cpu_percent', 0.0):.1f}%"),
            human_seconds(sb.get("uptime_seconds")), f"{sb.get('heartbeat_age_seconds', 0):.1f}s",
            sb.get("kill_reason") or "")
    if not section.get("sandboxes"):
        table.add_row(*first, "—", "", Text("no sandbox", style="red"), "", "", "", "", "", "", "")


def _total_rows(counts: Table, section: dict, prefix: str) -> None:
    totals, restarts, limits = section.get("totals") or {}, section.get("restarts") or {}, section.get("limits") or {}
    max_mem, max_cpu = limits.get("max_memory") or 0, limits.get("max_cpu") or 0
    counts.add_row(prefix + "connections opened / refused",
                   f"{totals.get('connections_opened', 0)} / {_counts(totals.get('connections_refused'))}")
    counts.add_row(prefix + "sessions created / closed / restored",
                   f"{totals.get('sessions_created', 0)} / {totals.get('sessions_closed', 0)} / "
                   f"{totals.get('sessions_restored', 0)}")
    counts.add_row(prefix + "turns ended", _counts(totals.get("turns_ended")))
    counts.add_row(prefix + "interrupted", _counts(totals.get("interrupted_by_reason")))
    counts.add_row(prefix + "errors", _counts(totals.get("errors_by_code")))
    counts.add_row(prefix + "restarts by reason", _counts(restarts.get("by_reason")))
    for row in (section.get("usage") or {}).get("by_model", []):  # what the LLM reported, per model
        unknown = f" · {row['unknown_requests']} requests without usage" if row.get("unknown_requests") else ""
        counts.add_row(prefix + f"LLM tokens ({row.get('model') or '?'})",
                       f"{row.get('prompt_tokens', 0)} prompt / {row.get('completion_tokens', 0)} completion · "
                       f"{row.get('llm_requests', 0)} requests{unknown}")
    if restarts.get("unavailable_reason"):
        counts.add_row(Text(prefix + "unavailable", style="red"), Text(restarts["unavailable_reason"], style="red"))
    limits_text = (f"workers {limits.get('workers')} · {limits.get('sessions_per_worker') or 0} sessions each · "
                   f"max memory {human_bytes(max_mem) if max_mem else 'off'} · max CPU "
                   f"{f'{max_cpu:g}%' if max_cpu else 'off'}")
    counts.add_row(prefix + "limits", limits_text)


# Command ------------------------------------------------------------------------------


def run(url: str, watch: bool = False, as_json: bool = False, token: str | None = None,
        interval: float = 1.0, timeout: float = 5.0, console: Console | None = None) -> int:
    console = console or Console()
    try:
        base = base_url(url)
    except ValueError as exc:
        console.print(Text(str(exc), style="bold red"))
        return EXIT_UNREACHABLE
    if as_json:
        return _run_json(base, watch, token, interval, timeout)
    if not watch:
        snap = fetch(base, timeout, token)
        console.print(render(snap, base))
        return snap.exit_code
    from rich.live import Live

    snap = fetch(base, timeout, token)
    try:
        with Live(render(snap, base), console=console, refresh_per_second=4, screen=False) as live:
            while True:
                time.sleep(interval)
                snap = fetch(base, timeout, token)
                live.update(render(snap, base))
    except KeyboardInterrupt:
        pass
    return snap.exit_code


def _run_json(base: str, watch: bool, token: str | None, interval: float, timeout: float) -> int:
    import sys

    while True:
        snap = fetch(base, timeout, token)
        if snap.status is None:
            print(json.dumps({"error": snap.error}), file=sys.stderr)
        elif watch:  # one compact document per line
            print(json.dumps(snap.status, separators=(",", ":")), flush=True)
        else:  # the body exactly as the server sent it
            sys.stdout.write(snap.raw.decode() + ("" if snap.raw.endswith(b"\n") else "\n"))
        if not watch:
            return snap.exit_code
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return snap.exit_code
