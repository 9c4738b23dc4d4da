"""The real-LLM rows: the OpenAI provider (official SDK) against ``myagent-ws fake-llm``.

What one turn is: the bench agent (llm_agent.py, one tool) answers a user message with three
streamed requests to the fake LLM (llm_script.json): a tool call, a second tool call once the
first result is in, the streamed answer. Per row (token delay, clients, turns per session):

* turns/s, turn p50/p99 and time to first event;
* CPU ms per turn of the front process, of the sandboxes (zygote included, idle), of the
  store's writer process, and of the fake LLM (apart: it is the model, not us);
* beside them, in the same run, the SDK-alone reference (sdk_reference.py: the same three
  requests from a bare script, ``typed`` = what a user writes, ``lean`` = the request path
  our provider takes).

Plus two probes: CPU per turn along one long conversation (turn 1 against the turn with ~100
and ~400 messages of history), and sandbox memory per idle session (each after one turn).
And the cost of traces: the same row with OpenTelemetry export off and on (to otlp_sink.py,
a stand-in collector).

Server options are the defaults (store, logging, heartbeats, two sandboxes on two CPUs),
except: ``--port 0``, a fresh ``--state-dir``, and where the load needs it (each row says so)
the per-connection rate limit (a single client at 0 ms sends ~100 messages/s, the default
allows 20) and the per-address connection limit (500 clients on 127.0.0.1; default 256).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from common import HERE, ROOT, Proc, cpu_of, load_average, median, memory_of, run_load, server_env, split_tree

FAKE_LISTEN = re.compile(r"LLM on http://127\.0\.0\.1:(\d+)/v1")
RATE_RAISED = ["--rate-limit", "1000", "--rate-burst", "1000"]
SINK_LISTEN = re.compile(r"OTLP sink on http://127\.0\.0\.1:(\d+)")
OTEL_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
STATE = Path(tempfile.mkdtemp(prefix="myagent-bench-llm-"))


def start_fake_llm(token_delay_ms: int) -> "_FakeProc":
    cmd = [sys.executable, "-m", "myagent.cli", "fake-llm", "--port", "0", "--script",
           str(HERE / "llm_script.json"), "--token-delay-ms", str(token_delay_ms)]
    return _FakeProc(cmd)


class _FakeProc(Proc):
    """The fake LLM: always this tree's (it is the instrument: TCP_NODELAY, backlog), not the subject's."""

    def __init__(self, cmd: list[str]) -> None:
        import os

        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT)
        super().__init__(cmd, env, FAKE_LISTEN)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def start_llm_server(fake: _FakeProc, extra: list[str] = (), env: dict | None = None) -> Proc:
    """``env``: more variables for the server (the tracing rows set OTEL_EXPORTER_OTLP_ENDPOINT;
    every other row runs with tracing off, whatever this environment says)."""
    state = tempfile.mkdtemp(dir=STATE)
    cmd = [sys.executable, "-m", "myagent.cli", "server", str(HERE / "llm_agent.py"), "--port", "0",
           "--state-dir", state, *extra]
    env = server_env({"OPENAI_BASE_URL": fake.base_url, "MYAGENT_MODEL": "fake-model", **(env or {})},
                     drop=("MYAGENT_LLM", "OPENAI_API_KEY", "MYAGENT_WS_STORE", "MYAGENT_WS_LOG_LEVEL",
                           *(() if env else OTEL_ENDPOINTS)))
    return Proc(cmd, env)


def _limits(delay_ms: int, clients: int) -> list[str]:
    extra = list(RATE_RAISED) if delay_ms == 0 else []
    if clients > 200:  # one load generator, one address: the per-address caps would refuse it
        extra += ["--max-connections-per-address", str(clients * 2), "--max-sessions-per-address", "0"]
    return extra


@contextlib.contextmanager
def llm_stack(delay_ms: int, extra: list[str], env: dict | None = None) -> Iterator[tuple[_FakeProc, Proc]]:
    """A fake LLM and a server pointed at it; both stopped (by pid) on the way out."""
    fake = start_fake_llm(delay_ms)
    server = None
    try:
        server = start_llm_server(fake, extra, env)
        time.sleep(0.2)  # both sandboxes up
        yield fake, server
    finally:
        if server is not None:
            server.track()
            server.stop()
        fake.stop()


def llm_row(delay_ms: int, clients: int, turns_per_session: int, duration: float,
            stack: tuple[_FakeProc, Proc] | None = None) -> dict:
    """One row: the load for ``duration`` seconds (after warm-up), on a fresh fake LLM and
    server unless ``stack`` (quick mode: one 0-ms stack for everything) is given."""
    extra = _limits(delay_ms, clients)
    if stack is None:
        with llm_stack(delay_ms, extra) as fresh:
            return llm_row(delay_ms, clients, turns_per_session, duration, fresh)
    fake, server = stack
    roles = split_tree(server)
    roles["fake_llm"] = [fake.ps]

    def sample() -> dict[str, float]:
        return {role: cpu_of(procs) for role, procs in roles.items()}

    result = run_load(server, ["sessions", server.url, "--clients", str(clients), "--turns-per-session",
                               str(turns_per_session), "--duration", str(duration)], sample=sample)
    memory = {role: memory_of(procs)[1] / 2**20 for role, procs in split_tree(server).items()}
    turns = max(1, result["turns"])
    cpu = result["cpu"]
    row = {
        "token_delay_ms": delay_ms, "clients": clients, "turns_per_session": turns_per_session,
        "turns": result["turns"], "turns_per_s": result["turns_per_s"],
        "turn_p50_ms": result["latency_ms"]["p50"], "turn_p99_ms": result["latency_ms"]["p99"],
        "ttfe_p50_ms": result["ttfe_ms"]["p50"], "ttfe_p99_ms": result["ttfe_ms"]["p99"],
        "front_cpu_ms_per_turn": cpu["front"] / turns * 1000,
        "sandbox_cpu_ms_per_turn": cpu["sandboxes"] / turns * 1000,
        "writer_cpu_ms_per_turn": cpu["writer"] / turns * 1000,
        "fake_llm_cpu_ms_per_turn": cpu["fake_llm"] / turns * 1000,
        "mean_turn_index": result.get("mean_turn_index"),
        "errors": result["errors"], "raised": " ".join(extra) or "none", "load_average": load_average(),
        "front_uss_mib_after": memory["front"], "sandboxes_uss_mib_after": memory["sandboxes"],
    }
    row["server_cpu_ms_per_turn"] = (row["front_cpu_ms_per_turn"] + row["sandbox_cpu_ms_per_turn"]
                                     + row["writer_cpu_ms_per_turn"])
    print(f"  llm {delay_ms} ms/token, {clients} clients, {turns_per_session}-turn sessions: "
          f"{row['turns_per_s']:.0f} turns/s, p50 {row['turn_p50_ms'] or 0:.0f} ms, CPU ms/turn front "
          f"{row['front_cpu_ms_per_turn']:.2f} sandboxes {row['sandbox_cpu_ms_per_turn']:.2f} writer "
          f"{row['writer_cpu_ms_per_turn']:.2f} (fake LLM {row['fake_llm_cpu_ms_per_turn']:.2f}), "
          f"errors {row['errors']}", flush=True)
    return row


def reference_rows(histories: list[int], turns: int, base_url: str | None = None) -> list[dict]:
    """The SDK alone (one process, typed then lean per history length, and lean over aiohttp
    when installed: the server's provider uses it then) against a 0-ms fake LLM (``base_url``,
    or one started here)."""
    fake = start_fake_llm(0) if base_url is None else None
    try:
        url = base_url or fake.base_url
        modes = "typed,lean" + (",lean_aiohttp" if importlib.util.find_spec("aiohttp") else "")
        run = subprocess.run([sys.executable, str(HERE / "sdk_reference.py"), url, "--mode", modes,
                              "--history", ",".join(map(str, histories)), "--turns", str(turns),
                              "--warmup", "3"], capture_output=True, text=True, timeout=900, cwd=ROOT)
        if run.returncode != 0:
            raise RuntimeError(f"sdk_reference failed: {run.stderr[-2000:]}")
        rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        for row in rows:
            print(f"  SDK alone, {row['mode']}, {row['history']} messages of history: "
                  f"{row['cpu_ms_per_turn']:.2f} CPU ms per 3-request turn", flush=True)
        return rows
    finally:
        if fake is not None:
            fake.stop()


async def _conversation(url: str, turns: int, sample) -> list[float]:
    from myagent.client import AgentClient

    client = await AgentClient.connect(url)
    try:
        # Warm up on another session first (lazy imports, the shared SDK client, its connection):
        # the measured session's first turn must cost what any first turn costs.
        warm = await client.create_session()
        for n in range(5):
            await warm.ask(f"warm up {n}", timeout=60)
        await warm.close()
        session = await client.create_session()
        costs = []
        for n in range(turns):
            before = sample()
            final, _ = await session.ask(f"weather please {n}", timeout=60)
            if final["event"] != "agent.final_answer":
                raise RuntimeError(f"turn {n} ended with {final['event']}: {final.get('content')}")
            costs.append(sample() - before)
        return costs
    finally:
        await client.close()


def long_conversation(server: Proc, turns: int) -> dict:
    """CPU of the server tree per turn along one session (1 client, 0 ms): does it grow with
    the history? A least-squares line through every turn's CPU against its history length
    gives the turn at message 1 and at message 100 (one turn's CPU is noisy: the watchdog,
    heartbeats and the store's commits land on some turns and not others); the first and last
    windows of 5 turns are reported raw beside it."""
    roles = split_tree(server)
    procs = roles["front"] + roles["sandboxes"] + roles["writer"]
    costs = [c * 1000 for c in asyncio.run(_conversation(server.url, turns, lambda: cpu_of(procs)))]
    # A turn adds 6 messages (user, 2 tool calls, 2 results, answer): turn n (from 0) is sent
    # with 6 * n + 1 messages of history (its own user message included).
    xs = [6 * n + 1 for n in range(len(costs))]
    mean_x, mean_y = sum(xs) / len(xs), sum(costs) / len(costs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, costs)) / sum((x - mean_x) ** 2 for x in xs)
    at = lambda messages: mean_y + slope * (messages - mean_x)  # noqa: E731
    result = {"turns": len(costs), "fit_ms_at_msg_1": at(1), "fit_ms_at_msg_100": at(100),
              "fit_us_per_message": slope * 1000, "first_5_ms": sum(costs[:5]) / 5,
              "last_5_ms": sum(costs[-5:]) / 5, "history_at_last": xs[-1], "load_average": load_average()}
    result["msg_100_vs_msg_1"] = result["fit_ms_at_msg_100"] / result["fit_ms_at_msg_1"]
    result["last_vs_first"] = result["last_5_ms"] / result["first_5_ms"]
    print(f"  long conversation ({len(costs)} turns): CPU ms/turn fitted at message 1 "
          f"{result['fit_ms_at_msg_1']:.2f}, at message 100 {result['fit_ms_at_msg_100']:.2f} "
          f"({result['msg_100_vs_msg_1']:.2f}x; {result['fit_us_per_message']:.1f} µs per message of history); "
          f"raw first 5 {result['first_5_ms']:.2f}, last 5 (~{xs[-1]} messages) {result['last_5_ms']:.2f}",
          flush=True)
    return result


async def _open_sessions(url: str, count: int, per_connection: int = 100, concurrency: int = 50) -> list:
    from myagent.client import AgentClient

    clients = [await AgentClient.connect(url) for _ in range(-(-count // per_connection))]
    sessions = []
    for i in range(count):
        sessions.append((clients[i // per_connection], None))
    gate = asyncio.Semaphore(concurrency)

    async def one(client) -> None:
        async with gate:
            session = await client.create_session()
            final, _ = await session.ask("weather please", timeout=120)
            if final["event"] != "agent.final_answer":
                raise RuntimeError(f"turn ended with {final['event']}")

    await asyncio.gather(*(one(client) for client, _ in sessions))
    return clients


def idle_memory(server: Proc, count: int) -> dict:
    """Memory per idle session with the OpenAI provider: ``count`` sessions, one turn each
    (50 at a time), then idle; USS of the sandboxes (and of the front) over a warmed baseline."""

    async def run() -> dict:
        warm = await _open_sessions(server.url, 4, concurrency=4)  # imports, the shared client
        await asyncio.sleep(1.0)
        roles = split_tree(server)
        base_sand = memory_of(roles["sandboxes"])[1]
        base_front = memory_of(roles["front"])[1]
        clients = await _open_sessions(server.url, count)
        await asyncio.sleep(1.0)
        roles = split_tree(server)
        sand = memory_of(roles["sandboxes"])[1]
        front = memory_of(roles["front"])[1]
        for client in warm + clients:
            await client.close()
        return {"sessions": count, "sandbox_uss_mib": sand / 2**20,
                "sandbox_kib_per_idle_session": (sand - base_sand) / count / 1024,
                "front_kib_per_idle_session": (front - base_front) / count / 1024,
                "load_average": load_average()}

    result = asyncio.run(run())
    print(f"  idle sessions with the OpenAI provider: {result['sandbox_kib_per_idle_session']:.1f} KiB each in the "
          f"sandboxes, {result['front_kib_per_idle_session']:.1f} KiB in the front ({count} sessions)", flush=True)
    return result


def _sink_stats(sink: Proc) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{sink.port}/stats", timeout=10) as answer:
        return json.loads(answer.read())


def tracing_rows(quick: bool, off: dict | None = None) -> dict:
    """The cost of traces: the same load (0 ms/token, 50 clients, one turn per session) on a fresh
    stack with tracing off, then on (OTEL_EXPORTER_OTLP_ENDPOINT pointing at otlp_sink.py, a
    stand-in collector in a process of its own), ``reps`` times alternating; medians of CPU ms
    per turn, front and sandboxes (the exporter's thread included: it is a thread of theirs).
    ``off``: a row already measured with that load and tracing off (quick mode reuses its one)."""
    clients, duration, reps = (50, 1.5, 1) if quick else (50, 8.0, 3)
    runs: dict[str, list[dict]] = {"off": [] if off is None else [{**off, "spans_exported": 0}], "on": []}
    sink = Proc([sys.executable, str(HERE / "otlp_sink.py"), "0"], None, SINK_LISTEN)
    try:
        for _ in range(reps):
            for mode in ("on",) if off is not None else runs:
                env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}"} if mode == "on" else None
                before = _sink_stats(sink)
                with llm_stack(0, RATE_RAISED, env) as stack:
                    row = llm_row(0, clients, 1, duration, stack)
                received = _sink_stats(sink)  # after the stop: the sandboxes flushed their last spans
                row["spans_exported"] = received["spans"] - before["spans"]
                runs[mode].append(row)
    finally:
        sink.stop()
    out: dict = {"clients": clients, "reps": reps, "duration_s": duration}
    for mode, rows in runs.items():
        for key in ("front_cpu_ms_per_turn", "sandbox_cpu_ms_per_turn", "turns_per_s", "turn_p50_ms"):
            out[f"{mode}_{key}"] = median([r[key] for r in rows])
        out[f"{mode}_spans_exported"] = sum(r["spans_exported"] for r in rows)
        out[f"{mode}_errors"] = sum(r["errors"] for r in rows)
    for part in ("front", "sandbox"):
        key = f"{part}_cpu_ms_per_turn"
        out[f"{part}_delta_ms_per_turn"] = out[f"on_{key}"] - out[f"off_{key}"]
        out[f"{part}_on_vs_off"] = out[f"on_{key}"] / out[f"off_{key}"]
    print(f"  tracing on vs off: CPU ms/turn front {out['off_front_cpu_ms_per_turn']:.2f} -> "
          f"{out['on_front_cpu_ms_per_turn']:.2f}, sandboxes {out['off_sandbox_cpu_ms_per_turn']:.2f} -> "
          f"{out['on_sandbox_cpu_ms_per_turn']:.2f}; {out['on_spans_exported']} spans exported "
          f"({out['off_spans_exported']} with tracing off)", flush=True)
    return out


def llm_part(quick: bool) -> dict:
    if quick:  # the CI smoke: every kind of figure once, small, on one fake LLM and one server
        with llm_stack(0, RATE_RAISED) as stack:
            out = {"reference": reference_rows([2, 100], 5, stack[0].base_url),
                   "rows": [llm_row(0, 50, 1, 1.5, stack)]}
            out["long_conversation"] = long_conversation(stack[1], 20)
            out["idle_memory"] = idle_memory(stack[1], 100)
    else:
        rows = [(0, 1, 1, 6.0), (0, 50, 1, 8.0), (0, 500, 1, 10.0),
                (0, 1, 100, 6.0), (0, 50, 100, 10.0), (0, 500, 100, 12.0),
                (50, 1, 1, 10.0), (50, 50, 1, 12.0), (50, 500, 1, 15.0), (50, 50, 100, 15.0)]
        out = {"rows": [llm_row(*row) for row in rows]}
        with llm_stack(0, RATE_RAISED) as stack:
            out["reference"] = reference_rows([2, 100, 400], 40, stack[0].base_url)
            out["long_conversation"] = long_conversation(stack[1], 100)
            out["idle_memory"] = idle_memory(stack[1], 1000)
    out["tracing"] = tracing_rows(quick, out["rows"][0] if quick else None)
    ref = {(r["mode"], r["history"]): r["cpu_ms_per_turn"] for r in out["reference"]}
    # Our provider's own request path alone: lean, over the HTTP client it uses here.
    own = ref.get(("lean_aiohttp", 2)) if http_transport() == "aiohttp" else None
    out["http_transport"] = http_transport()
    for row in out["rows"]:
        row["vs_sdk_typed"] = row["server_cpu_ms_per_turn"] / ref[("typed", 2)]
        row["vs_sdk_lean"] = row["server_cpu_ms_per_turn"] / (own or ref[("lean", 2)])
    return out


def http_transport() -> str:
    """What the server's OpenAI provider will put under the SDK in this environment."""
    sys.path.insert(0, str(ROOT))
    from myagent.agents.llm.openai_client import http_transport as chosen

    return chosen()


def markdown(part: dict) -> list[str]:
    f = lambda v, d=1: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
    lines = ["", "**Real-LLM rows** (OpenAI provider, official SDK, against `myagent-ws fake-llm`; "
                 "default server options except what the `raised` column lists)", "",
             f"HTTP client under the SDK: {part.get('http_transport', 'httpx')}. `÷ SDK typed`: server total over the "
             "SDK alone as users call it (2-message history); `÷ SDK lean`: over the SDK alone on our provider's own "
             "request path and HTTP client.", "",
             "| token delay | clients | turns/session | turns/s | p50 / p99 turn ms | TTFE p50 ms | CPU ms/turn: "
             "front | sandboxes | store writer | server total | ÷ SDK typed | ÷ SDK lean | fake LLM | raised |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in part["rows"]:
        lines.append(f"| {r['token_delay_ms']} ms | {r['clients']} | {r['turns_per_session']} | "
                     f"{f(r['turns_per_s'], 0)} | {f(r['turn_p50_ms'], 0)} / {f(r['turn_p99_ms'], 0)} | "
                     f"{f(r['ttfe_p50_ms'], 1)} | {f(r['front_cpu_ms_per_turn'], 2)} | "
                     f"{f(r['sandbox_cpu_ms_per_turn'], 2)} | {f(r['writer_cpu_ms_per_turn'], 2)} | "
                     f"{f(r['server_cpu_ms_per_turn'], 2)} | {f(r['vs_sdk_typed'], 2)} | {f(r['vs_sdk_lean'], 2)} | "
                     f"{f(r['fake_llm_cpu_ms_per_turn'], 2)} | {r['raised']} |")
    lines += ["", "**SDK alone** (the same three streamed requests from a bare script, same fake LLM, same run)",
              "", "| request path | history messages | CPU ms per turn (3 requests) | per request |", "|---|---|---|---|"]
    for r in part["reference"]:
        lines.append(f"| {r['mode']} | {r['history']} | {f(r['cpu_ms_per_turn'], 2)} | "
                     f"{f(r['cpu_ms_per_request'], 2)} |")
    c = part["long_conversation"]
    lines.append(f"\n**long conversation** ({c['turns']} turns, 1 client, 0 ms): server CPU ms per turn fitted "
                 f"at message 1 {f(c['fit_ms_at_msg_1'], 2)}, at message 100 {f(c['fit_ms_at_msg_100'], 2)} "
                 f"(**{f(c['msg_100_vs_msg_1'], 2)}x**; {f(c['fit_us_per_message'], 1)} µs per message of history); "
                 f"raw: first 5 turns {f(c['first_5_ms'], 2)}, last 5 (~{c['history_at_last']} messages) "
                 f"{f(c['last_5_ms'], 2)} ({f(c['last_vs_first'], 2)}x)")
    t = part.get("tracing")
    if t:
        lines.append(f"\n**traces on vs off** ({t['clients']} clients, 0 ms/token, median of {t['reps']}; on: "
                     f"OTLP/HTTP to a stand-in collector, {t['on_spans_exported']} spans received): CPU ms per turn, "
                     f"front {f(t['off_front_cpu_ms_per_turn'], 2)} -> {f(t['on_front_cpu_ms_per_turn'], 2)} "
                     f"(+{f(t['front_delta_ms_per_turn'], 2)}, {f(t['front_on_vs_off'], 2)}x), sandboxes "
                     f"{f(t['off_sandbox_cpu_ms_per_turn'], 2)} -> {f(t['on_sandbox_cpu_ms_per_turn'], 2)} "
                     f"(+{f(t['sandbox_delta_ms_per_turn'], 2)}, {f(t['sandbox_on_vs_off'], 2)}x); turns/s "
                     f"{f(t['off_turns_per_s'], 0)} -> {f(t['on_turns_per_s'], 0)}")
    m = part["idle_memory"]
    lines.append(f"\n**idle sessions, OpenAI provider**: {m['sessions']} sessions after one turn each: "
                 f"{f(m['sandbox_kib_per_idle_session'])} KiB each in the sandboxes, "
                 f"{f(m['front_kib_per_idle_session'])} KiB in the front")
    return lines
