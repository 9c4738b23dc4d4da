"""The benchmark's smallest configuration completes and reports sane, non-zero figures.

No timing thresholds here: targets live in the benchmark, not in tests.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_quick_benchmark_reports_figures(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "run.py"), "--quick", "--out",
                          str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=220)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for row in results["routed"]:
        assert row["turns_per_s"] > 0 and row["events_per_s"] > row["turns_per_s"]
        assert row["front_cpu_us_per_event"] > 0 and row["echo_cpu_us_per_round_trip"] > 0
        assert row["sqlite_turns_per_s"] > 0 and row["sqlite_front_cpu_us_per_event"] > 0  # the default store
        assert row["sqlite_writer_cpu_us_per_event"] > 0  # its writer process did the writing
        assert row["errors"] == 0
    # The real-LLM mode: the OpenAI provider against the fake LLM, beside the SDK alone.
    llm = results["llm"]
    for row in llm["rows"]:
        assert row["turns"] > 0 and row["errors"] == 0
        assert row["front_cpu_ms_per_turn"] > 0 and row["sandbox_cpu_ms_per_turn"] > 0
        assert row["fake_llm_cpu_ms_per_turn"] > 0 and row["vs_sdk_typed"] > 0
    assert {(r["mode"], r["history"]) for r in llm["reference"]} >= {("typed", 2), ("lean", 2)}
    assert llm["long_conversation"]["turns"] >= 10 and llm["long_conversation"]["fit_ms_at_msg_1"] > 0
    assert llm["idle_memory"]["sessions"] > 0
    tracing = llm["tracing"]  # traces on vs off: the "on" servers exported spans, the "off" ones none
    assert tracing["on_spans_exported"] > 0 and tracing["off_spans_exported"] == 0
    assert tracing["on_sandbox_cpu_ms_per_turn"] > 0 and tracing["on_errors"] == 0
    assert results["idle"]["sessions"] > 0 and results["idle"]["uss_kib_per_session"] > 0
    assert results["churn"]["sessions_created_and_closed_per_s"] > 0
    assert results["streaming"]["token_deltas_per_s"] > 0
    assert results["sandbox_start"]["fork_ms_median"] > 0
    text = (tmp_path / "results.md").read_text()
    assert "| sessions |" in text and "Real-LLM rows" in text and "SDK alone" in text
