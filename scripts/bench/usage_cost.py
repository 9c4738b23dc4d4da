"""What usage accounting and budgets cost: server CPU per turn, on vs off, in one run.

The real-LLM workload of llm.py (the OpenAI provider through the official SDK against
``myagent-ws fake-llm``; three streamed requests per turn: two tool calls, then the answer),
one row per variant, the variants alternated ``--reps`` times (the machine's noise lands on
all of them) and the median reported:

* ``usage off``: the provider does not ask for usage (``MYAGENT_LLM_STREAM_USAGE=0``) and the
  fake LLM sends none (``--no-usage``): no usage chunk is sent, parsed or summed into tokens
  (the agent still times its requests and the front still sums the per-turn object);
* ``usage on``: the defaults: usage asked for and reported on every request, summed per turn,
  per session, per agent and model;
* ``usage on + budgets``: plus ``--budget-tokens-per-day`` and ``--max-tokens-per-turn`` (a
  balance read before each turn, a charge after it, in the default SQLite store);
* ``before`` (with ``--before-tree PATH``, a checkout without this work): the same workload
  on that tree's server.

    python scripts/bench/usage_cost.py [--reps 3] [--duration 8] [--clients 50] [--before-tree PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from common import Proc, load_average, run_load, split_tree, cpu_of
from llm import _FakeProc, HERE, RATE_RAISED, start_llm_server

BUDGETS = ["--budget-tokens-per-day", str(10**12), "--max-tokens-per-turn", str(10**9)]


def variants(before_tree: str | None) -> dict[str, dict]:
    out = {
        "usage off": {"fake": ["--no-usage"], "env": {"MYAGENT_LLM_STREAM_USAGE": "0"}, "args": []},
        "usage on": {"fake": [], "env": {}, "args": []},
        "usage on + budgets": {"fake": [], "env": {}, "args": BUDGETS},
    }
    if before_tree:
        out["before"] = {"fake": [], "env": {"PYTHONPATH": before_tree}, "args": []}
    return out


def one(variant: dict, clients: int, turns_per_session: int, duration: float) -> dict:
    fake = _FakeProc([sys.executable, "-m", "myagent.cli", "fake-llm", "--port", "0", "--script",
                      str(HERE / "llm_script.json"), *variant["fake"]])
    server = None
    try:
        server = _server(fake, dict(variant["env"]), [*RATE_RAISED, *variant["args"]])
        roles = split_tree(server)
        result = run_load(server, ["sessions", server.url, "--clients", str(clients), "--turns-per-session",
                                   str(turns_per_session), "--duration", str(duration)],
                          sample=lambda: {role: cpu_of(procs) for role, procs in roles.items()})
        turns = max(1, result["turns"])
        cpu = result["cpu"]
        return {"turns": result["turns"], "errors": result["errors"], "turns_per_s": result["turns_per_s"],
                "front": cpu["front"] / turns * 1000, "sandboxes": cpu["sandboxes"] / turns * 1000,
                "writer": cpu["writer"] / turns * 1000,
                "total": (cpu["front"] + cpu["sandboxes"] + cpu["writer"]) / turns * 1000}
    finally:
        if server is not None:
            server.track()
            server.stop()
        fake.stop()


def _server(fake: _FakeProc, env: dict, extra: list[str]) -> Proc:
    import os

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # server_env() copies os.environ: the variant's variables reach the server
    try:
        return start_llm_server(fake, extra)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def micro(turns: int = 200_000) -> dict[str, float]:
    """The accounting code alone, in µs per turn of three requests (timeit, no processes): what the
    sandbox adds (read three usage objects, time three requests, build the turn's usage, encode it
    in the terminal event) and what the front adds (check it, sum it per session and per model)."""
    import time as _time
    import timeit

    import orjson

    sys.path.insert(0, str(HERE.parent.parent))
    from myagent.agents.usage import TokenUsage, TurnUsage
    from myagent.protocol.usage import UsageTotals, check_usage
    from myagent.supervisor.metrics import Metrics

    raw = {"prompt_tokens": 812, "completion_tokens": 17, "total_tokens": 829}

    def sandbox() -> bytes:
        usage = TurnUsage(10**9)
        for _ in range(3):
            usage.check()
            usage.request(TokenUsage.from_openai(raw), _time.perf_counter_ns(), "gpt-4o-mini")
        return orjson.dumps(usage.as_dict())

    totals, metrics, doc = UsageTotals(), Metrics(), orjson.loads(sandbox())

    def front() -> None:
        usage = check_usage(doc)
        totals.add(usage)
        metrics.add_usage("agent", usage)
        totals.as_dict()  # the session record written at the turn's end carries the totals

    return {name: min(timeit.repeat(fn, number=turns, repeat=3)) / turns * 1e6
            for name, fn in (("sandbox_us_per_turn", sandbox), ("front_us_per_turn", front))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--turns-per-session", type=int, default=100)
    parser.add_argument("--before-tree", default=None)
    parser.add_argument("--out", default=None, help="write the JSON results here")
    parser.add_argument("--micro-only", action="store_true", help="only the in-process timing of the accounting code")
    args = parser.parse_args()
    costs = micro()
    print(f"accounting code alone: sandbox {costs['sandbox_us_per_turn']:.2f} µs per 3-request turn, "
          f"front {costs['front_us_per_turn']:.2f} µs per turn", flush=True)
    if args.micro_only:
        return
    table = variants(args.before_tree)
    runs: dict[str, list[dict]] = {name: [] for name in table}
    for rep in range(args.reps):
        for name, variant in table.items():
            row = one(variant, args.clients, args.turns_per_session, args.duration)
            runs[name].append(row)
            print(f"  rep {rep + 1} {name}: {row['turns_per_s']:.0f} turns/s, CPU ms/turn front {row['front']:.2f} "
                  f"sandboxes {row['sandboxes']:.2f} writer {row['writer']:.2f} total {row['total']:.2f} "
                  f"(errors {row['errors']})", flush=True)
    summary = {name: {key: statistics.median(r[key] for r in rows) for key in ("turns_per_s", "front", "sandboxes",
                                                                                "writer", "total")}
               for name, rows in runs.items()}
    print(f"\nload average {load_average()}; {args.clients} clients, {args.turns_per_session}-turn sessions, "
          f"0 ms token delay, median of {args.reps}\n")
    print("| variant | turns/s | CPU ms/turn: front | sandboxes | store writer | server total |")
    print("|---|---|---|---|---|---|")
    for name, s in summary.items():
        print(f"| {name} | {s['turns_per_s']:.0f} | {s['front']:.2f} | {s['sandboxes']:.2f} | {s['writer']:.2f} | "
              f"{s['total']:.2f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": runs, "summary": summary, "micro": costs}, indent=1))


if __name__ == "__main__":
    main()
