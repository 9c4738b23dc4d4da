"""myagent-ws benchmark: every figure beside its bare-library reference, in one run.

    python scripts/bench/run.py            # full run
    python scripts/bench/run.py --quick    # CI smoke configuration (about a minute)
    python scripts/bench/run.py --only llm # one part: routed, llm, other

Starts everything itself on 127.0.0.1, with the load generator in its own
process, and writes artifacts/bench/results.json and results.md. Figures are
medians over --reps repetitions; CPU figures are processes' own CPU time
(psutil) during the measured window divided by the events or turns delivered,
so a busy neighbour on this shared machine does not inflate them (it still
adds noise: the load average is recorded with the results).

Parts: ``routed`` (the scripted model; each row with the memory store and the
default SQLite store, beside a bare websockets echo server), ``llm`` (the
OpenAI provider against ``myagent-ws fake-llm``, default server options, beside
the SDK-alone reference: scripts/bench/llm.py), ``other`` (half-rate latency,
idle capacity, churn, streaming, sandbox start). Every process started is
stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import llm  # noqa: E402
from common import (SERVER_TREE, Proc, cpu_of, load_average, median, memory_of, run_load,  # noqa: E402
                    server_env, split_tree)

STATE = Path(tempfile.mkdtemp(prefix="myagent-bench-"))  # the default store's file lives here, not in ~


def start_server(workers: int, extra: list[str] = (), store: str = "memory:") -> Proc:
    """The scripted-model server. ``store`` "memory:" or "sqlite://" (the default store, its file
    in a fresh state dir). Default options (info logging, heartbeats) except the limits one load
    generator on one address must raise: rate, sessions and connections per address/connection."""
    state = tempfile.mkdtemp(dir=STATE)
    cmd = [sys.executable, "-m", "myagent.cli", "server", str(HERE / "bench_agent.py"), "--port", "0",
           "--workers", str(workers), "--store", store, "--state-dir", state, "--rate-limit", "0",
           "--idle-timeout", "0",
           "--max-sessions-per-connection", "100000", "--max-connections-per-address", "1000000",
           "--max-sessions-per-address", "0",
           "--max-sessions", "1000000", "--max-connections", "100000", "--sessions-per-worker", "100000",
           *extra]
    return Proc(cmd, server_env({"MYAGENT_LLM": f"scripted:{HERE / 'bench_script.json'}"}))


def run_turns_load(server: Proc, mode: str, sessions: int, connections: int, duration: float,
                   rate: float = 0.0, text: str = "hello") -> dict:
    """CPU per event (or echo round trip) of the front process, and of the store's writer process."""
    roles = split_tree(server)

    def sample() -> dict[str, float]:
        return {"front": cpu_of(roles["front"]), "writer": cpu_of(roles["writer"])}

    result = run_load(server, [mode, server.url, "--sessions", str(sessions), "--connections", str(connections),
                               "--duration", str(duration), "--rate", str(rate), "--text", text], sample=sample)
    result["server_cpu_s"] = result["cpu"]["front"]
    count = result.get("events") or result.get("round_trips") or 1
    result["server_cpu_us_per_unit"] = result["cpu"]["front"] / count * 1e6
    result["writer_cpu_us_per_unit"] = result["cpu"]["writer"] / count * 1e6
    return result


def routed_vs_echo(sizes: list[int], reps: int, duration: float, workers: int) -> list[dict]:
    """Each row with the memory store and with the default store (SQLite), beside the echo server."""
    rows = []
    for sessions in sizes:
        connections = min(sessions, 100)
        ours: dict[str, list[dict]] = {"memory:": [], "sqlite://": []}
        bare: list[dict] = []
        for _ in range(reps):
            for store in ours:
                server = start_server(workers, store=store)
                try:
                    ours[store].append(run_turns_load(server, "turns", sessions, connections, duration))
                finally:
                    server.stop()
            echo = Proc([sys.executable, str(HERE / "echo_server.py"), "0"])
            try:
                bare.append(run_turns_load(echo, "echo", sessions, connections, duration))
            finally:
                echo.stop()
        mem, sql = ours["memory:"], ours["sqlite://"]
        row = {
            "sessions": sessions, "connections": connections,
            "turns_per_s": median([r["turns_per_s"] for r in mem]),
            "events_per_s": median([r["events_per_s"] for r in mem]),
            "turn_p50_ms": median([r["latency_ms"]["p50"] for r in mem]),
            "turn_p99_ms": median([r["latency_ms"]["p99"] for r in mem]),
            "turn_p999_ms": median([r["latency_ms"]["p999"] for r in mem]),
            "ttfe_p50_ms": median([r["ttfe_ms"]["p50"] for r in mem]),
            "ttfe_p99_ms": median([r["ttfe_ms"]["p99"] for r in mem]),
            "front_cpu_us_per_event": median([r["server_cpu_us_per_unit"] for r in mem]),
            "sqlite_turns_per_s": median([r["turns_per_s"] for r in sql]),
            "sqlite_turn_p99_ms": median([r["latency_ms"]["p99"] for r in sql]),
            "sqlite_front_cpu_us_per_event": median([r["server_cpu_us_per_unit"] for r in sql]),
            "sqlite_writer_cpu_us_per_event": median([r["writer_cpu_us_per_unit"] for r in sql]),
            "errors": sum(r["errors"] for r in mem + sql),
            "echo_round_trips_per_s": median([r["round_trips_per_s"] for r in bare]),
            "echo_cpu_us_per_round_trip": median([r["server_cpu_us_per_unit"] for r in bare]),
            "load_average": load_average(),
        }
        row["events_per_s_ratio"] = row["events_per_s"] / row["echo_round_trips_per_s"]
        row["cpu_per_event_ratio"] = row["front_cpu_us_per_event"] / row["echo_cpu_us_per_round_trip"]
        row["sqlite_vs_memory_cpu"] = row["sqlite_front_cpu_us_per_event"] / row["front_cpu_us_per_event"]
        rows.append(row)
        print(f"  routed turns, {sessions} sessions: {row['turns_per_s']:.0f} turns/s, "
              f"{row['events_per_s']:.0f} events/s, {row['front_cpu_us_per_event']:.1f} µs/event "
              f"(echo {row['echo_cpu_us_per_round_trip']:.1f} µs/rt, ratio {row['cpu_per_event_ratio']:.2f}); "
              f"default store {row['sqlite_front_cpu_us_per_event']:.1f} µs/event "
              f"({row['sqlite_vs_memory_cpu']:.2f}x memory; writer process "
              f"{row['sqlite_writer_cpu_us_per_event']:.1f} µs/event), {row['sqlite_turns_per_s']:.0f} turns/s",
              flush=True)
    return rows


def store_cost_at_fixed_rate(sessions: int, rate: float, reps: int, duration: float, workers: int) -> dict:
    """Front CPU per event with the memory store and with the default store, both at the same
    paced turn rate: at saturation the default store's writer process takes CPU from the rest
    on a 2-core machine, fewer turns/s batch less, and CPU per event rises for that reason
    alone; at one rate both fronts do the same work per second and the store's own cost shows."""
    runs: dict[str, list[dict]] = {"memory:": [], "sqlite://": []}
    for _ in range(reps):
        for store in runs:
            server = start_server(workers, store=store)
            try:
                runs[store].append(run_turns_load(server, "turns", sessions, min(sessions, 100), duration, rate=rate))
            finally:
                server.stop()
    mem, sql = runs["memory:"], runs["sqlite://"]
    result = {"sessions": sessions, "rate": rate,
              "memory_turns_per_s": median([r["turns_per_s"] for r in mem]),
              "sqlite_turns_per_s": median([r["turns_per_s"] for r in sql]),
              "memory_front_us_per_event": median([r["server_cpu_us_per_unit"] for r in mem]),
              "sqlite_front_us_per_event": median([r["server_cpu_us_per_unit"] for r in sql]),
              "sqlite_writer_us_per_event": median([r["writer_cpu_us_per_unit"] for r in sql]),
              "memory_turn_p99_ms": median([r["latency_ms"]["p99"] for r in mem]),
              "sqlite_turn_p99_ms": median([r["latency_ms"]["p99"] for r in sql]), "load_average": load_average()}
    result["sqlite_vs_memory_cpu"] = result["sqlite_front_us_per_event"] / result["memory_front_us_per_event"]
    print(f"  at a fixed {rate:.0f} turns/s, {sessions} sessions: front {result['memory_front_us_per_event']:.1f} "
          f"µs/event (memory) vs {result['sqlite_front_us_per_event']:.1f} (default store): "
          f"{result['sqlite_vs_memory_cpu']:.2f}x", flush=True)
    return result


@contextlib.contextmanager
def server_for(workers: int, shared: Proc | None) -> Iterator[Proc]:
    """A fresh scripted-model server (stopped after), or ``shared`` (quick mode reuses one)."""
    if shared is not None:
        yield shared
        return
    server = start_server(workers)
    try:
        yield server
    finally:
        server.stop()


def half_rate_latency(max_turns_per_s: float, sessions: int, duration: float, workers: int,
                      shared: Proc | None = None) -> dict:
    with server_for(workers, shared) as server:
        result = run_turns_load(server, "turns", sessions, min(sessions, 100), duration, rate=max_turns_per_s / 2)
    return {"target_turns_per_s": max_turns_per_s / 2, "turns_per_s": result["turns_per_s"],
            "turn_p50_ms": result["latency_ms"]["p50"], "turn_p99_ms": result["latency_ms"]["p99"],
            "ttfe_p99_ms": result["ttfe_ms"]["p99"]}


async def _idle_connections(url: str, count: int) -> list:
    from websockets.asyncio.client import connect

    sockets = []
    for start in range(0, count, 200):
        batch = await asyncio.gather(*(connect(url, compression=None, ping_interval=None, open_timeout=60)
                                       for _ in range(min(200, count - start))))
        for ws in batch:
            await ws.recv()  # system.connected
            await ws.send('{"event":"user.create_session"}')
        for ws in batch:
            await ws.recv()  # agent.session_created
        sockets.extend(batch)
    return sockets


def idle_capacity(count: int, workers: int, shared: Proc | None = None) -> dict:
    with server_for(workers, shared) as server:
        time.sleep(0.5)
        base_rss, base_uss = memory_of(server.tree())

        async def hold() -> dict:
            sockets = await _idle_connections(server.url, count)
            await asyncio.sleep(1.0)
            rss, uss = memory_of(server.tree())
            for ws in sockets:
                await ws.close()
            return {"sessions": count, "total_rss_mib": rss / 2**20, "total_uss_mib": uss / 2**20,
                    "baseline_uss_mib": base_uss / 2**20,
                    "uss_kib_per_session": (uss - base_uss) / count / 1024,
                    "total_uss_kib_per_session": uss / count / 1024}

        return asyncio.run(hold())


def churn(duration: float, workers: int, shared: Proc | None = None) -> dict:
    with server_for(workers, shared) as server:
        async def go() -> dict:
            from myagent.client import AgentClient

            clients = [await AgentClient.connect(server.url) for _ in range(4)]
            count = 0
            deadline = time.perf_counter() + duration

            async def loop(client) -> None:
                nonlocal count
                while time.perf_counter() < deadline:
                    session = await client.create_session()
                    await session.close()
                    count += 1

            begin = time.perf_counter()
            await asyncio.gather(*(loop(c) for c in clients))
            elapsed = time.perf_counter() - begin
            for client in clients:
                await client.close()
            return {"sessions_created_and_closed_per_s": count / elapsed}

        return asyncio.run(go())


def streaming(duration: float, workers: int, shared: Proc | None = None) -> dict:
    with server_for(workers, shared) as server:
        async def go() -> dict:
            from myagent.client import AgentClient

            client = await AgentClient.connect(server.url)
            session = await client.create_session()
            deltas = 0
            begin = time.perf_counter()
            while time.perf_counter() - begin < duration:
                async for event in session.send("long " * 1):
                    if event["event"] == "agent.partial_answer":
                        deltas += 1
            elapsed = time.perf_counter() - begin
            await client.close()
            return {"token_deltas_per_s": deltas / elapsed}

        return asyncio.run(go())


def sandbox_start(reps: int) -> dict:
    """Zygote fork vs a fresh interpreter that imports the runtime and the agent file."""
    from myagent.settings import config_from
    from myagent.supervisor.pool import SandboxPool
    from myagent.supervisor.environment import sandbox_environment

    async def forks() -> dict:
        config = config_from({"workers": 1, "store": "memory:"}, agent_file=str(HERE / "bench_agent.py"))
        pool = SandboxPool(config, 1, sandbox_environment())
        await pool.start()
        times, uss = [], []
        for _ in range(reps):
            begin = time.perf_counter()
            sandbox = await pool.spawn()
            times.append((time.perf_counter() - begin) * 1000)
            uss.append(psutil.Process(sandbox.pid).memory_full_info().uss)
        await pool.stop()
        return {"fork_ms_median": statistics.median(times), "sandbox_uss_mib": statistics.median(uss) / 2**20}

    result = asyncio.run(forks())
    fresh = []
    code = ("import time,sys; t=time.perf_counter(); import uvloop, myagent.sandbox.host; "
            "from myagent.agents.loader import load_agent_file; load_agent_file(sys.argv[1]).new(); "
            "print((time.perf_counter()-t)*1000)")
    for _ in range(reps):
        begin = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, str(HERE / "bench_agent.py")], check=True, capture_output=True)
        fresh.append((time.perf_counter() - begin) * 1000)
    result["fresh_interpreter_ms_median"] = statistics.median(fresh)
    result["fork_speedup"] = result["fresh_interpreter_ms_median"] / result["fork_ms_median"]
    return result


def markdown(results: dict) -> str:
    lines = [f"### {results['when']} · commit {results['commit']} · `{results['command']}`", "",
             f"Machine: {results['machine']}; servers from {results['server_tree']}", ""]
    f = lambda v, d=1: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
    if results.get("routed"):
        lines += ["| sessions | turns/s | events/s | p50 / p99 / p99.9 turn ms | TTFE p50 / p99 ms | front µs/event | "
                  "echo rt/s | echo µs/rt | events/s ÷ echo | CPU/event ÷ echo | default store: turns/s | "
                  "front µs/event | ÷ memory | writer process µs/event |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results.get("routed", []):
        lines.append(f"| {r['sessions']} | {f(r['turns_per_s'], 0)} | {f(r['events_per_s'], 0)} | "
                     f"{f(r['turn_p50_ms'], 2)} / {f(r['turn_p99_ms'], 2)} / {f(r['turn_p999_ms'], 2)} | "
                     f"{f(r['ttfe_p50_ms'], 2)} / {f(r['ttfe_p99_ms'], 2)} | {f(r['front_cpu_us_per_event'])} | "
                     f"{f(r['echo_round_trips_per_s'], 0)} | {f(r['echo_cpu_us_per_round_trip'])} | "
                     f"{f(r['events_per_s_ratio'], 2)} | {f(r['cpu_per_event_ratio'], 2)} | "
                     f"{f(r['sqlite_turns_per_s'], 0)} | {f(r['sqlite_front_cpu_us_per_event'])} | "
                     f"{f(r['sqlite_vs_memory_cpu'], 2)} | {f(r.get('sqlite_writer_cpu_us_per_event'))} |")
    if "store_fixed_rate" in results:
        r = results["store_fixed_rate"]
        lines.append(f"\n**default store at a fixed rate** ({r['sessions']} sessions paced at {f(r['rate'], 0)} "
                     f"turns/s, both stores): front µs/event memory {f(r['memory_front_us_per_event'])}, default "
                     f"store {f(r['sqlite_front_us_per_event'])} (**{f(r['sqlite_vs_memory_cpu'], 2)}x**), writer "
                     f"process {f(r['sqlite_writer_us_per_event'])} µs/event; turn p99 {f(r['memory_turn_p99_ms'])} "
                     f"vs {f(r['sqlite_turn_p99_ms'])} ms")
    for key in ("half_rate", "idle", "churn", "streaming", "sandbox_start"):
        if key in results:
            body = ", ".join(f"{k} {f(v, 2) if isinstance(v, float) else v}" for k, v in results[key].items())
            lines.append(f"\n**{key}**: {body}")
    if "llm" in results:
        lines += llm.markdown(results["llm"])
    lines.append(f"\nLoad average (1/5/15 min) at the end: {results.get('load_average_end', '?')}; "
                 f"at the start: {results.get('load_average_start', '?')}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smallest configuration (CI smoke test)")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1, help="sandboxes of the routed/other rows' servers")
    parser.add_argument("--only", choices=["routed", "llm", "other"], action="append",
                        help="run only these parts (repeatable); default all")
    parser.add_argument("--out", default=str(ROOT / "artifacts" / "bench"))
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    quick = args.quick
    if quick:
        common.WARMUP = 0.5
    parts = set(args.only or ["routed", "llm", "other"])
    reps = args.reps or (1 if quick else 3)
    duration = 1.0 if quick else 4.0
    sizes = [1, 20] if quick else [1, 100, 1000]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=SERVER_TREE, capture_output=True,
                            text=True).stdout.strip() or str(SERVER_TREE)
    command = "python scripts/bench/run.py" + (" --quick" if quick else "") + "".join(
        f" --only {p}" for p in args.only or [])
    results: dict = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit,
                     "command": command, "server_tree": str(SERVER_TREE),
                     "machine": f"{platform.machine()}, {psutil.cpu_count()} CPUs, "
                                f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}",
                     "workers": args.workers, "load_average_start": load_average()}
    try:
        if "routed" in parts:
            print("routed turns vs bare echo (memory store and default store)", flush=True)
            results["routed"] = routed_vs_echo(sizes, reps, duration, args.workers)
            if not quick:
                middle = results["routed"][len(sizes) // 2]
                results["store_fixed_rate"] = store_cost_at_fixed_rate(
                    middle["sessions"], middle["turns_per_s"] / 2, reps, duration, args.workers)
        if "llm" in parts:
            print("real-LLM rows (OpenAI provider against fake-llm) and the SDK-alone reference", flush=True)
            results["llm"] = llm.llm_part(quick)
        if "other" in parts:
            best = max((r["turns_per_s"] for r in results.get("routed", [])), default=1000.0)
            shared = start_server(args.workers) if quick else None  # quick: one server for all of these
            try:
                print("latency at half the max turn rate", flush=True)
                results["half_rate"] = half_rate_latency(best, sizes[-1], duration, args.workers, shared)
                print("session churn, streaming", flush=True)
                results["churn"] = churn(1.0 if quick else 3.0, args.workers, shared)
                results["streaming"] = streaming(1.0 if quick else 3.0, args.workers, shared)
                print("idle capacity", flush=True)
                capacity = 200 if quick else min(10000, hard - 500)  # client and server each have their own fd limit
                results["idle"] = idle_capacity(capacity, args.workers, shared)
            finally:
                if shared is not None:
                    shared.stop()
            print("sandbox start", flush=True)
            results["sandbox_start"] = sandbox_start(3 if quick else 10)
    finally:
        shutil.rmtree(STATE, ignore_errors=True)
        shutil.rmtree(llm.STATE, ignore_errors=True)
    results["load_average_end"] = load_average()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
