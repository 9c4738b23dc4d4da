"""Requests per second of GET /status and GET /metrics while many sessions are open.

    python scripts/bench_ops.py                       # 1000 sessions over 50 connections, 4 HTTP clients
    python scripts/bench_ops.py --sessions 10000 --connections 200 --clients 8 --duration 10

Starts `myagent-ws server examples/weather_agent.py` (offline demo model) on a
free port, opens the sessions with the Python client, then hammers each
endpoint with ``--clients`` concurrent HTTP/1.1 clients for ``--duration``
seconds (one request per TCP connection, as the websockets HTTP layer closes
after every answer) and prints requests/s and latency percentiles.
``--busy`` keeps that many sessions running turns meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from myagent.client import AgentClient  # noqa: E402

LISTEN_RE = re.compile(r"listening on ws://[^:]+:(\d+)")


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "myagent.cli", "server", str(ROOT / "examples" / "weather_agent.py"),
           "--host", "127.0.0.1", "--port", "0", "--workers", str(args.workers), "--store", args.store,
           "--max-sessions-per-connection", str(max(100, args.sessions // args.connections + 1)),
           "--max-sessions-per-address", "0",
           "--sessions-per-worker", str(max(1000, args.sessions // args.workers + 1)),
           "--log-level", "warning"]
    env = {**os.environ, "MYAGENT_LLM": "offline", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        match = LISTEN_RE.search(line)
        if match:
            return proc, int(match.group(1))
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit("the server did not start")


async def http_get(port: int, path: str) -> tuple[int, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()  # the server closes after the answer
    writer.close()
    status = int(data[9:12])
    return status, len(data)


async def hammer(port: int, path: str, clients: int, duration: float) -> dict:
    latencies: list[float] = []
    sizes: list[int] = []
    failures = 0
    stop = time.perf_counter() + duration

    async def client() -> None:
        nonlocal failures
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                status, size = await http_get(port, path)
            except OSError:
                failures += 1
                continue
            if status != 200:
                failures += 1
                continue
            latencies.append(time.perf_counter() - t0)
            sizes.append(size)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return {"path": path, "requests": len(latencies), "rps": len(latencies) / elapsed, "failures": failures,
            "p50_ms": pick(0.5), "p99_ms": pick(0.99), "bytes": int(statistics.mean(sizes)) if sizes else 0}


async def busy_turns(clients: list[AgentClient], sessions: list, count: int, stop: asyncio.Event) -> int:
    turns = 0

    async def loop(session) -> None:
        nonlocal turns
        while not stop.is_set():
            await session.ask("/get_weather city=Beijing", timeout=30)
            turns += 1

    tasks = [asyncio.create_task(loop(s)) for s in sessions[:count]]
    await stop.wait()
    await asyncio.gather(*tasks, return_exceptions=True)
    return turns


async def main(args: argparse.Namespace) -> None:
    proc, port = start_server(args)
    clients: list[AgentClient] = []
    try:
        t0 = time.perf_counter()
        clients = list(await asyncio.gather(*(AgentClient.connect(f"ws://127.0.0.1:{port}")
                                              for _ in range(args.connections))))
        per_client = [args.sessions // args.connections + (1 if i < args.sessions % args.connections else 0)
                      for i in range(args.connections)]

        async def open_sessions(client: AgentClient, n: int) -> list:
            out = []
            for _ in range(n):  # one at a time per connection: stays inside the rate limit's burst
                out.append(await client.create_session())
            return out

        groups = await asyncio.gather(*(open_sessions(c, n) for c, n in zip(clients, per_client)))
        sessions = [s for group in groups for s in group]
        print(f"opened {len(sessions)} sessions over {len(clients)} connections in "
              f"{time.perf_counter() - t0:.1f}s (server on port {port}, {args.workers} sandboxes, "
              f"store {args.store})")

        stop = asyncio.Event()
        busy = asyncio.create_task(busy_turns(clients, sessions, args.busy, stop)) if args.busy else None
        for path in ("/status", "/metrics"):
            result = await hammer(port, path, args.clients, args.duration)
            print(f"GET {result['path']:<8} {result['rps']:8.0f} req/s  p50 {result['p50_ms']:6.2f} ms  "
                  f"p99 {result['p99_ms']:6.2f} ms  {result['bytes']:>7} bytes  "
                  f"({result['requests']} requests, {result['failures']} failed, {args.clients} clients, "
                  f"{args.duration:g}s)")
        if busy is not None:
            stop.set()
            print(f"meanwhile {args.busy} sessions ran {await busy} turns")
    finally:
        for client in clients:
            try:
                await client.close()
            except Exception:
                pass
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients per endpoint")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per endpoint")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--store", default="memory:", help="session store of the server (default memory:)")
    parser.add_argument("--busy", type=int, default=0, help="sessions running turns during the measurement")
    asyncio.run(main(parser.parse_args()))
