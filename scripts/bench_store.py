"""The session store's hot-path cost: turns/s with --store memory: vs sqlite vs redis, one run.

    python scripts/bench_store.py                     # 50 sessions x 60 turns per backend, 3 rounds
    python scripts/bench_store.py --sessions 50 --turns 40 --rounds 3 --json artifacts/bench/store.json

For every backend in turn (the order rotates each round; figures are medians over the
rounds) a fresh server is started on 127.0.0.1 with the benchmark agent and the scripted
LLM (scripts/bench/: one tool call, then a streamed answer: ~12 events and 4 history
messages per turn, every one of them written behind to the store). The same load is sent
each time: --sessions sessions spread over --connections connections, each running --turns
turns back to back. Reported: turns/s over the measured window, turn latency p50/p95, the
server front process's CPU per turn (where the store's cost lands: the write queue, the
SQLite writer thread, the Redis flusher), and writes still pending when the load ends.

Redis is a real redis-server started here on a free loopback port (Debian package
redis-server; the redis backend is skipped without it or without the redis package).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psutil
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "scripts" / "bench"))
from common import cpu_of  # noqa: E402  (ns-precise CPU of live threads)
from tests.serverproc import ServerProcess  # noqa: E402
from tests.supervisor.store.redisproc import RedisServer  # noqa: E402
from tests.supervisor.store.redisproc import available as redis_available  # noqa: E402

AGENT = ROOT / "scripts" / "bench" / "bench_agent.py"
SCRIPT = ROOT / "scripts" / "bench" / "bench_script.json"
TERMINAL = {"agent.final_answer", "agent.error", "agent.interrupted"}


class Conn:
    """One WebSocket carrying several sessions; a reader routes events by session."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.created: asyncio.Queue = asyncio.Queue()
        self.done: dict[str, asyncio.Future] = {}
        self.events = 0
        self.errors: list[dict] = []

    async def reader(self) -> None:
        async for message in self.ws:
            event = orjson.loads(message)
            name = event["event"]
            if name == "agent.session_created":
                self.created.put_nowait(event["session_id"])
            elif name in TERMINAL:
                future = self.done.pop(event["session_id"], None)
                if future is not None and not future.done():
                    future.set_result(name)
            elif name == "system.error":
                self.errors.append(event)
                sid = (event.get("metadata") or {}).get("session_id")
                future = self.done.pop(sid, None) if sid else None
                if future is not None and not future.done():
                    future.set_exception(RuntimeError(f"refused: {event}"))
            if "seq" in event:
                self.events += 1

    async def create(self) -> str:
        await self.ws.send(orjson.dumps({"event": "user.create_session"}).decode())
        return await asyncio.wait_for(self.created.get(), 15)

    async def turn(self, sid: str, text: str) -> str:
        future = asyncio.get_running_loop().create_future()
        self.done[sid] = future
        await self.ws.send(orjson.dumps({"event": "user.message", "session_id": sid, "content": text}).decode())
        return await asyncio.wait_for(future, 30)


async def load(url: str, sessions: int, connections: int, turns: int, front: psutil.Process,
               rate: float = 0.0) -> dict:
    writer = [p for p in front.children() if any("sqlite_writer" in part for part in p.cmdline())]
    conns = []
    for _ in range(connections):
        ws = await connect(url, max_size=16 * 1024 * 1024, compression=None, open_timeout=10)
        await ws.recv()  # system.connected
        conn = Conn(ws)
        conn.task = asyncio.get_running_loop().create_task(conn.reader())
        conns.append(conn)
    placed = [(conns[i % connections], await conns[i % connections].create()) for i in range(sessions)]
    # One warm-up turn per session (imports, first allocations), not measured.
    await asyncio.gather(*(conn.turn(sid, "warm up") for conn, sid in placed))
    latencies: list[float] = []
    events_before = sum(c.events for c in conns)

    interval = sessions / rate if rate else 0.0  # each session's turns start this far apart

    async def run(conn: Conn, sid: str, offset: float) -> None:
        begin = time.perf_counter() + offset
        for n in range(turns):
            if interval:  # a fixed rate: every backend does the same work per second
                await asyncio.sleep(max(0.0, begin + n * interval - time.perf_counter()))
            started = time.perf_counter()
            outcome = await conn.turn(sid, f"weather please {n}")
            if outcome != "agent.final_answer":
                raise RuntimeError(f"turn ended with {outcome}")
            latencies.append(time.perf_counter() - started)

    cpu0, wcpu0 = cpu_of([front]), cpu_of(writer)
    t0 = time.perf_counter()
    await asyncio.gather(*(run(conn, sid, interval * i / sessions) for i, (conn, sid) in enumerate(placed)))
    elapsed = time.perf_counter() - t0
    cpu, wcpu = cpu_of([front]) - cpu0, cpu_of(writer) - wcpu0
    events = sum(c.events for c in conns) - events_before
    for conn in conns:
        await conn.ws.close()
        conn.task.cancel()
    errors = [e for c in conns for e in c.errors]
    if errors:
        raise RuntimeError(f"{len(errors)} requests refused, first: {errors[0]}")
    latencies.sort()
    done = sessions * turns
    return {"turns": done, "seconds": elapsed, "turns_per_s": done / elapsed, "events": events,
            "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p95_ms": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] * 1000,
            "front_cpu_ms_per_turn": cpu / done * 1000, "writer_cpu_ms_per_turn": wcpu / done * 1000,
            "front_cpu_us_per_event": cpu / max(1, events) * 1e6}


def one(backend: str, store_url: str, args: argparse.Namespace, state_dir: str) -> dict:
    server = ServerProcess(AGENT, "--workers", str(args.workers), "--store", store_url, "--state-dir", state_dir,
                           "--rate-limit", "100000", "--rate-burst", "100000", "--log-level", "warning",
                           llm=f"scripted:{SCRIPT}")
    server.start(timeout=30)
    try:
        front = psutil.Process(server.proc.pid)
        result = asyncio.run(load(server.url, args.sessions, args.connections, args.turns, front, args.rate))
        # Write-behind: the load may end with writes still queued. Time how long the store takes
        # to catch up; "sustained" counts that time too (what the store can keep up with).
        store = server.status()["store"]
        pending, t0 = store["pending_writes"], time.perf_counter()
        while server.status()["store"]["pending_writes"] and time.perf_counter() - t0 < 60:
            time.sleep(0.01)
        drain = time.perf_counter() - t0 if pending else 0.0
        result.update(backend=backend, pending_after=pending, drain_s=drain, healthy=store["healthy"],
                      where=store["where"], sustained_turns_per_s=result["turns"] / (result["seconds"] + drain))
    finally:
        server.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--turns", type=int, default=60, help="measured turns per session")
    parser.add_argument("--rounds", type=int, default=3, help="each backend once per round; medians reported")
    parser.add_argument("--workers", type=int, default=1, help="sandbox processes of each server")
    parser.add_argument("--backends", default="memory,sqlite,redis")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="turns/s in total, paced (0: as fast as possible). At a fixed rate every backend's "
                             "front does the same work per second, so CPU per event compares the store alone")
    args = parser.parse_args()

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    redis = None
    if "redis" in backends:
        if importlib.util.find_spec("redis") is None:
            print("redis backend skipped: pip install 'redis>=5'", file=sys.stderr)
            backends.remove("redis")
        elif not redis_available():
            print("redis backend skipped: apt-get install redis-server", file=sys.stderr)
            backends.remove("redis")
        else:
            redis = RedisServer().start()
    runs: dict[str, list[dict]] = {b: [] for b in backends}
    tmp = tempfile.mkdtemp(prefix="bench-store-")
    try:
        for round_ in range(args.rounds):
            order = backends[round_ % len(backends):] + backends[:round_ % len(backends)]
            for backend in order:
                url = {"memory": "memory:", "sqlite": f"sqlite://{tmp}/r{round_}.db",
                       "redis": f"{redis.url}?prefix=r{round_}" if redis else ""}[backend]
                result = one(backend, url, args, tmp)
                runs[backend].append(result)
                print(f"round {round_ + 1}/{args.rounds} {backend:>6}: {result['turns_per_s']:7.1f} turns/s  "
                      f"p50 {result['p50_ms']:6.1f} ms  front CPU {result['front_cpu_ms_per_turn']:.3f} ms/turn "
                      f"(writer process {result['writer_cpu_ms_per_turn']:.3f})",
                      file=sys.stderr, flush=True)
    finally:
        if redis is not None:
            redis.stop()

    def med(backend: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[backend])

    base = med(backends[0], "turns_per_s") if backends else 0
    base_cpu = med(backends[0], "front_cpu_ms_per_turn") if backends else 0
    print(f"\n{args.sessions} sessions x {args.turns} turns on {args.connections} connections, {args.workers} sandbox(es), "
          f"median of {args.rounds} rounds; {os.cpu_count()} CPUs\n")
    print("| store | turns/s | vs memory | sustained turns/s | turn p50 ms | turn p95 ms | front CPU ms/turn "
          "| front CPU ÷ memory | front µs/event | writer process CPU ms/turn | writes queued at the end |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for backend in backends:
        tps = med(backend, "turns_per_s")
        cpu = med(backend, "front_cpu_ms_per_turn")
        summary[backend] = {"turns_per_s": tps, "p50_ms": med(backend, "p50_ms"), "p95_ms": med(backend, "p95_ms"),
                            "front_cpu_ms_per_turn": cpu, "events_per_turn": med(backend, "events") /
                            runs[backend][0]["turns"], "runs": runs[backend],
                            "front_cpu_us_per_event": med(backend, "front_cpu_us_per_event"),
                            "writer_cpu_ms_per_turn": med(backend, "writer_cpu_ms_per_turn")}
        summary[backend]["sustained_turns_per_s"] = med(backend, "sustained_turns_per_s")
        print(f"| {backend} | {tps:.1f} | {tps / base:.2f}x | {summary[backend]['sustained_turns_per_s']:.1f} | "
              f"{summary[backend]['p50_ms']:.1f} | {summary[backend]['p95_ms']:.1f} | {cpu:.3f} | "
              f"{cpu / base_cpu:.2f}x | {summary[backend]['front_cpu_us_per_event']:.1f} | "
              f"{summary[backend]['writer_cpu_ms_per_turn']:.3f} | "
              f"{max(r['pending_after'] for r in runs[backend])} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"config": vars(args), "results": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
