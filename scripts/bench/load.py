"""Load generator (its own process): agent turns against myagent-ws, or echo round trips.

Prints ``phase:measure`` when set-up is done and ``phase:done`` when the
measured window ends (the orchestrator samples server CPU at both), then one
JSON line with the results.

    python load.py turns URL --sessions 100 --connections 20 --duration 5 [--rate R]
    python load.py echo URL --sessions 100 --connections 100 --duration 5
    python load.py sessions URL --clients 50 --turns-per-session 100 --duration 10

``sessions`` is the real-LLM mode's load: each client has its own connection and runs
sessions of --turns-per-session turns back to back (create, the turns, close).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import sys
import time

import orjson
import uvloop
from websockets.asyncio.client import connect

TERMINAL = {b"agent.final_answer", b"agent.error", b"agent.interrupted"}
TURN_TIMEOUT = 120.0  # seconds a sessions-mode turn may take before it counts as an error


def pct(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class Stats:
    def __init__(self) -> None:
        self.measuring = False
        self.turns = 0
        self.events = 0
        self.errors = 0
        self.latency: list[float] = []
        self.ttfe: list[float] = []


WARMUP = 1.0  # seconds of load before the measured window (--warmup)


async def measured_window(stats: Stats, tasks: list[asyncio.Task], duration: float) -> float:
    """Warm up (WARMUP seconds), measure for ``duration`` (telling the orchestrator when, so it
    samples server CPU at both ends), then let the load tasks finish; return the window."""
    await asyncio.sleep(WARMUP)
    print("phase:measure", flush=True)
    stats.measuring = True
    begin = time.perf_counter()
    await asyncio.sleep(duration)
    stats.measuring = False
    elapsed = time.perf_counter() - begin
    print("phase:done", flush=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    return elapsed


class TurnConnection:
    """One WebSocket with several sessions; a reader routes events by session_id."""

    def __init__(self, ws, stats: Stats) -> None:
        self.ws = ws
        self.stats = stats
        self.waiting: dict[str, list] = {}  # sid -> [first_event_future, terminal_future]
        self.created: asyncio.Queue = asyncio.Queue()
        self.ended: dict[str, asyncio.Future] = {}  # sid -> agent.session_end

    async def reader(self) -> None:
        stats = self.stats
        async for message in self.ws:
            event = orjson.loads(message)
            name = event["event"]
            if name == "agent.session_created":
                self.created.put_nowait(event["session_id"])
                continue
            sid = event.get("session_id")
            if name == "agent.session_end":
                ended = self.ended.pop(sid, None)
                if ended is not None and not ended.done():
                    ended.set_result(None)
                continue
            slot = self.waiting.get(sid)
            if slot is None:
                if name == "system.error":
                    stats.errors += 1
                continue
            if stats.measuring:
                stats.events += 1
            if not slot[0].done():
                slot[0].set_result(time.perf_counter())
            if name.encode() in TERMINAL:
                if name != "agent.final_answer":
                    stats.errors += 1
                slot[1].set_result(time.perf_counter())

    async def create(self) -> str:
        await self.ws.send(b'{"event":"user.create_session"}', text=True)
        return await self.created.get()

    async def close(self, sid: str) -> None:
        ended = self.ended[sid] = asyncio.get_running_loop().create_future()
        self.waiting.pop(sid, None)
        await self.ws.send(b'{"event":"user.close_session","session_id":"' + sid.encode() + b'"}', text=True)
        await ended

    async def turn(self, sid: str, text: bytes) -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        slot = [loop.create_future(), loop.create_future()]
        self.waiting[sid] = slot
        start = time.perf_counter()
        await self.ws.send(b'{"event":"user.message","session_id":"' + sid.encode() + b'","content":"' + text + b'"}',
                           text=True)
        first = await slot[0]
        end = await slot[1]
        return first - start, end - start


async def run_turns(args) -> dict:
    stats = Stats()
    conns = []
    for _ in range(args.connections):
        ws = await connect(args.url, compression=None, max_size=2**24, open_timeout=30, ping_interval=None)
        conn = TurnConnection(ws, stats)
        asyncio.get_running_loop().create_task(conn.reader())
        conns.append(conn)
    sessions = []
    for i in range(args.sessions):
        conn = conns[i % len(conns)]
        sessions.append((conn, await conn.create()))
    text = args.text.encode()
    interval = args.sessions / args.rate if args.rate else 0.0
    deadline = 0.0

    async def loop_session(conn: TurnConnection, sid: str) -> None:
        if interval:  # spread the sessions over one interval: an open-loop rate, not synchronized bursts
            await asyncio.sleep(random.uniform(0, interval))
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            ttfe, latency = await conn.turn(sid, text)
            if stats.measuring:
                stats.turns += 1
                stats.latency.append(latency)
                stats.ttfe.append(ttfe)
            if interval:
                await asyncio.sleep(max(0.0, random.expovariate(1.0 / interval) - (time.perf_counter() - started)))

    deadline = time.perf_counter() + args.duration + WARMUP
    tasks = [asyncio.create_task(loop_session(c, s)) for c, s in sessions]
    elapsed = await measured_window(stats, tasks, args.duration)
    for conn in conns:
        await conn.ws.close()
    return {"mode": "turns", "sessions": args.sessions, "connections": args.connections, "seconds": elapsed,
            "turns": stats.turns, "events": stats.events, "errors": stats.errors,
            "turns_per_s": stats.turns / elapsed, "events_per_s": stats.events / elapsed,
            "latency_ms": {"p50": pct(stats.latency, 0.5), "p99": pct(stats.latency, 0.99),
                           "p999": pct(stats.latency, 0.999)},
            "ttfe_ms": {"p50": pct(stats.ttfe, 0.5), "p99": pct(stats.ttfe, 0.99)}}


async def run_sessions(args) -> dict:
    """Clients with a connection each, running sessions of N turns back to back."""
    stats = Stats()
    conns: list[TurnConnection] = []
    for start in range(0, args.clients, 100):  # connect in bursts the server's backlog can take
        batch = await asyncio.gather(*(connect(args.url, compression=None, max_size=2**24, open_timeout=60,
                                               ping_interval=None) for _ in range(min(100, args.clients - start))))
        for ws in batch:
            conn = TurnConnection(ws, stats)
            asyncio.get_running_loop().create_task(conn.reader())
            conns.append(conn)
    text = args.text.encode()
    history_at: dict[int, list[float]] = {}  # turn index in its session -> latencies (measured window)
    deadline = 0.0

    async def client(conn: TurnConnection) -> None:
        await asyncio.sleep(random.uniform(0, 0.2))  # clients do not start in lockstep
        while time.perf_counter() < deadline:
            try:  # bounded too: a refused session (system.error, no session_created) must not hang us
                sid = await asyncio.wait_for(conn.create(), TURN_TIMEOUT)
            except TimeoutError:
                stats.errors += 1
                continue
            for index in range(args.turns_per_session):
                if time.perf_counter() >= deadline:
                    break
                try:  # bounded: a refused message (an error, not a turn) must not hang the client
                    ttfe, latency = await asyncio.wait_for(conn.turn(sid, text), TURN_TIMEOUT)
                except TimeoutError:
                    stats.errors += 1
                    break
                if stats.measuring:
                    stats.turns += 1
                    stats.latency.append(latency)
                    stats.ttfe.append(ttfe)
                    history_at.setdefault(index, []).append(latency)
            try:
                await asyncio.wait_for(conn.close(sid), TURN_TIMEOUT)
            except TimeoutError:
                stats.errors += 1

    deadline = time.perf_counter() + args.duration + WARMUP
    tasks = [asyncio.create_task(client(c)) for c in conns]
    elapsed = await measured_window(stats, tasks, args.duration)
    for conn in conns:
        await conn.ws.close()
    return {"mode": "sessions", "clients": args.clients, "turns_per_session": args.turns_per_session,
            "seconds": elapsed, "turns": stats.turns, "events": stats.events, "errors": stats.errors,
            "turns_per_s": stats.turns / elapsed, "events_per_s": stats.events / elapsed,
            "mean_turn_index": (sum(i * len(v) for i, v in history_at.items()) / stats.turns) if stats.turns else 0,
            "latency_ms": {"p50": pct(stats.latency, 0.5), "p99": pct(stats.latency, 0.99),
                           "p999": pct(stats.latency, 0.999)},
            "ttfe_ms": {"p50": pct(stats.ttfe, 0.5), "p99": pct(stats.ttfe, 0.99)}}


async def run_echo(args) -> dict:
    stats = Stats()
    payload = orjson.dumps({"event": "agent.partial_answer", "timestamp": "2026-01-01T00:00:00.000Z",
                            "session_id": "s_xxxxxxxxxxxxxxxx", "seq": 1, "event_id": "s_xxxxxxxxxxxxxxxx:1",
                            "content": "tokn", "metadata": {"turn_id": "t1", "connection_id": "c_xxxxxxxxxxxx"}})
    conns = [await connect(args.url, compression=None, open_timeout=30, ping_interval=None)
             for _ in range(args.connections)]
    pending = {id(ws): collections.deque() for ws in conns}

    async def reader(ws) -> None:
        queue = pending[id(ws)]
        async for _ in ws:
            queue.popleft().set_result(None)

    for ws in conns:
        asyncio.get_running_loop().create_task(reader(ws))
    deadline = time.perf_counter() + args.duration + WARMUP

    async def loop_one(ws) -> None:
        loop = asyncio.get_running_loop()
        queue = pending[id(ws)]
        while time.perf_counter() < deadline:
            future = loop.create_future()
            queue.append(future)
            start = time.perf_counter()
            await ws.send(payload, text=True)
            await future
            if stats.measuring:
                stats.turns += 1
                stats.latency.append(time.perf_counter() - start)

    tasks = [asyncio.create_task(loop_one(conns[i % len(conns)])) for i in range(args.sessions)]
    elapsed = await measured_window(stats, tasks, args.duration)
    for ws in conns:
        await ws.close()
    return {"mode": "echo", "sessions": args.sessions, "connections": args.connections, "seconds": elapsed,
            "round_trips": stats.turns, "round_trips_per_s": stats.turns / elapsed,
            "latency_ms": {"p50": pct(stats.latency, 0.5), "p99": pct(stats.latency, 0.99)}}


def main() -> None:
    global WARMUP
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["turns", "echo", "sessions"])
    parser.add_argument("url")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=0.0, help="target turns/s in total (0 = as fast as possible)")
    parser.add_argument("--text", default="hello")
    parser.add_argument("--clients", type=int, default=1, help="sessions mode: connections, one session each")
    parser.add_argument("--turns-per-session", type=int, default=1, help="sessions mode: turns before closing")
    parser.add_argument("--warmup", type=float, default=WARMUP, help="seconds of load before measuring")
    args = parser.parse_args()
    WARMUP = args.warmup
    runner = {"turns": run_turns, "echo": run_echo, "sessions": run_sessions}[args.mode]
    result = uvloop.run(runner(args))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
