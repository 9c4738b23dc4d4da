"""myagent.otel: on only when an OTLP endpoint is set, nothing imported when off, the
traceparent across the pipe, a bounded flush."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from myagent import otel
from tests.serverproc import ROOT


@pytest.mark.parametrize("env, on", [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"}, True),
])
def test_traces_are_wanted_only_with_an_endpoint(env, on):
    assert otel.wanted(env) is on


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**clean, "PYTHONPATH": str(ROOT), **env})


def test_off_nothing_of_opentelemetry_is_imported():
    run = python("""
        import sys
        import myagent.supervisor.server, myagent.sandbox.host, myagent.sandbox.zygote, myagent.agents.agent
        from myagent import otel
        from myagent.agents import tracing
        otel.preload()
        assert otel.start("front") is None and not tracing.start()
        otel.stop()
        print(sorted(m for m in sys.modules if m.startswith(("opentelemetry", "google.protobuf"))))
    """)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_on_the_provider_names_the_service_and_the_role():
    code = """
        from myagent import otel
        tracer = otel.start("sandbox")
        assert tracer is not None and otel.start("sandbox") is tracer  # once per process
        attrs = otel._provider.resource.attributes
        print(attrs["service.name"], attrs["myagent.role"])
    """
    run = python(code, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["myagent-ws", "sandbox"]
    named = python(code, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_SERVICE_NAME="weather-bot")
    assert named.stdout.split() == ["weather-bot", "sandbox"], named.stderr


def test_stop_waits_for_a_silent_collector_at_most_the_flush_timeout():
    silent = socket.socket()  # accepts connections (the backlog), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        run = python("""
            import time
            from myagent import otel
            otel.start("front").start_span("x").end()
            began = time.monotonic()
            otel.stop(0.5)
            print(time.monotonic() - began)
        """, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{silent.getsockname()[1]}")
    finally:
        silent.close()
    assert run.returncode == 0, run.stderr
    assert 0.4 < float(run.stdout) < 2.0
    assert "were not exported within 0.5 s" in run.stderr


def test_the_traceparent_makes_the_remote_span_a_child():
    tracer = TracerProvider().get_tracer("test")
    parent = tracer.start_span("turn")
    value = otel.traceparent(parent)
    context = parent.get_span_context()
    assert value.startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
    assert int(value[-2:], 16) & 1  # sampled
    child = tracer.start_span("invoke_agent", context=otel.parent_context(value))
    assert child.parent.span_id == context.span_id and child.parent.is_remote
    assert otel.trace_id(child) == f"{context.trace_id:032x}"
    for bad in (None, "", "garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", 42):
        assert otel.parent_context(bad) is None


def test_an_unsampled_trace_has_no_trace_id():
    span = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test").start_span("turn")
    assert otel.trace_id(span) is None


def test_the_logged_endpoint_hides_credentials(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://user:s3cret@collector:4318/otlp?key=s3cret")
    assert otel._endpoint() == "https://collector:4318/otlp"
