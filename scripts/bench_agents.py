"""What each agent served beside the first costs: time to "listening" and memory.

    python scripts/bench_agents.py 1 3 5     # servers with 1, 3 and 5 agents, one after the other

Each server serves N copies of tests/fixtures/agents/test_agent.py with --workers 1 and the
memory store on 127.0.0.1 (port 0), from this tree or MYAGENT_BENCH_TREE. Reported: seconds from exec to the "listening" line, the
front process's RSS, and the processes it started (a zygote and a sandbox per agent) with
their summed USS (private memory: what an agent really adds), 2 s after listening. Every
server is stopped by pid.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "tests" / "fixtures" / "agents" / "test_agent.py"
TREE = Path(os.environ.get("MYAGENT_BENCH_TREE") or ROOT)  # the server's code (another tree: before/after)


def measure(n: int) -> str:
    folder = Path(tempfile.mkdtemp(prefix="bench-agents-"))
    try:
        targets = []
        for i in range(n):
            shutil.copy(AGENT, folder / f"agent{i}.py")
            targets.append(str(folder / f"agent{i}.py"))
        env = {**os.environ, "PYTHONPATH": str(TREE), "MYAGENT_WS_STORE": "memory:"}
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "myagent.cli", "server", *targets, "--port", "0",
                                 "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, cwd=TREE)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if "listening on" in line:
                    break
            else:
                raise SystemExit(f"the server with {n} agents exited before listening")
            elapsed = time.monotonic() - started
            time.sleep(2)
            front = psutil.Process(proc.pid)
            children = front.children(recursive=True)
            uss = sum(child.memory_full_info().uss for child in children if child.is_running())
            return (f"| {n} | {elapsed:.1f} s | {front.memory_info().rss / 2**20:.1f} MiB | {len(children)} | "
                    f"{uss / 2**20:.1f} MiB |")
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    counts = [int(arg) for arg in sys.argv[1:]] or [1, 3]
    print("| agents | to \"listening\" | front RSS | processes | their USS |")
    print("|---|---|---|---|---|")
    for n in counts:
        print(measure(n), flush=True)


if __name__ == "__main__":
    main()
