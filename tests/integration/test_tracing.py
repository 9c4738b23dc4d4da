"""Traces: a real OTLP/HTTP endpoint in the test process receives a server's spans.

The server runs the OpenAI provider (the real SDK) against `myagent-ws fake-llm`, with
OTEL_EXPORTER_OTLP_ENDPOINT pointing at a small HTTP server here that accepts
POST /v1/traces; what it receives is decoded with the official opentelemetry-proto
package. Checked: one trace per turn, the front's `turn` span its root, the sandbox's
`invoke_agent` span its child, under it one `chat {model}` span per LLM request (model,
time to first chunk, tokens as fake-llm reported them) and one `execute_tool {name}` span
per tool call (name, outcome); the trace id is the terminal event's metadata.trace_id and
is on the JSON log lines about the turn, in both processes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

pytest.importorskip("opentelemetry.proto")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from myagent.client import AgentClient  # noqa: E402
from tests.serverproc import AGENTS, ROOT, SCRIPTS, ServerProcess  # noqa: E402

from .helpers import assert_turn  # noqa: E402

pytestmark = pytest.mark.integration

AGENT = AGENTS / "traced_agent.py"
MODEL = "trace-model"
TTFT_MS = 60  # fake-llm's delay before each reply's first byte


class Collector:
    """An OTLP/HTTP traces endpoint: POST /v1/traces, protobuf in, spans kept by trace id."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests = 0
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - stdlib naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                collector.add(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, request: ExportTraceServiceRequest) -> None:
        with self.lock:
            self.requests += 1
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append({
                            "name": span.name, "kind": span.kind, "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                            "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
                            "status": span.status.code, "attributes": _attributes(span.attributes),
                            "resource": resource})

    def trace(self, trace_id: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The spans of ``trace_id`` once ``count`` of them arrived (fails after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                spans = [s for s in self.spans if s["trace_id"] == trace_id]
            if len(spans) >= count:
                return spans
            assert time.monotonic() < deadline, f"{len(spans)} of {count} spans arrived: {spans}"
            time.sleep(0.05)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _attributes(items: Any) -> dict[str, Any]:
    out = {}
    for item in items:
        value = item.value
        kind = value.WhichOneof("value")
        if kind == "array_value":
            out[item.key] = [getattr(v, v.WhichOneof("value")) for v in value.array_value.values]
        else:
            out[item.key] = getattr(value, kind)
    return out


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    collector = Collector()
    yield collector
    collector.close()


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "myagent.cli", "fake-llm", "--port", "0", "--script",
                             str(SCRIPTS / "test_script.json"), "--ttft-ms", str(TTFT_MS)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            match = re.search(r"on (http://127\.0\.0\.1:\d+/v1)", line)
            if match:
                break
        else:
            pytest.fail("fake-llm did not start")
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # never block it on a full pipe
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(10)


def start_server(collector: Collector, fake_url: str, **env: str) -> ServerProcess:
    return ServerProcess(AGENT, "--workers", "1", "--log-format", "json", "--log-level", "debug", env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_SERVICE_NAME": "traced-test", "OPENAI_BASE_URL": fake_url, "OPENAI_API_KEY": "",
        "MYAGENT_LLM": "", **env}).start(timeout=30)


@pytest.fixture(scope="module")
def server(collector: Collector, fake_llm: str) -> Iterator[ServerProcess]:
    srv = start_server(collector, fake_llm)
    yield srv
    srv.stop()


async def ask(server: ServerProcess, text: str) -> tuple[str, list[dict]]:
    client = await AgentClient.connect(server.url)
    try:
        session = await client.create_session()
        events = [event async for event in session.send(text)]
        return session.id, events
    finally:
        await client.close()


def by_name(spans: list[dict], prefix: str) -> list[dict]:
    return sorted((s for s in spans if s["name"].startswith(prefix)), key=lambda s: s["start"])


async def test_one_trace_per_turn_with_llm_and_tool_spans(server, collector):
    sid, events = await ask(server, "weather in Beijing?")
    turn_id = assert_turn(events, sid)
    trace_id = events[-1]["metadata"]["trace_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    # turn (front) > invoke_agent (sandbox) > chat x2 (tool call, then the answer) + execute_tool
    spans = collector.trace(trace_id, 5)
    assert len(spans) == 5, [s["name"] for s in spans]
    [root] = by_name(spans, "turn ")
    [agent] = by_name(spans, "invoke_agent ")
    chats = by_name(spans, "chat ")
    [tool] = by_name(spans, "execute_tool ")
    assert root["parent"] == "" and root["name"] == "turn traced-agent"
    assert root["attributes"]["myagent.turn.id"] == turn_id and root["attributes"]["gen_ai.conversation.id"] == sid
    assert root["attributes"]["myagent.turn.outcome"] == "final_answer"
    assert root["resource"]["myagent.role"] == "front" and root["resource"]["service.name"] == "traced-test"
    assert agent["parent"] == root["span_id"] and agent["resource"]["myagent.role"] == "sandbox"
    assert agent["resource"]["process.pid"] != root["resource"]["process.pid"]
    assert agent["attributes"]["gen_ai.operation.name"] == "invoke_agent"
    assert [c["parent"] for c in chats] == [agent["span_id"]] * 2 and tool["parent"] == agent["span_id"]
    assert [c["name"] for c in chats] == [f"chat {MODEL}"] * 2
    for chat in chats:
        attrs = chat["attributes"]
        assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.provider.name"] == "openai"
        assert attrs["gen_ai.request.model"] == MODEL and attrs["gen_ai.response.model"] == MODEL
        assert attrs["server.address"] == "127.0.0.1"
        # fake-llm waits TTFT_MS before each reply's first byte; the whole request took longer
        assert TTFT_MS / 1000 <= attrs["gen_ai.response.time_to_first_chunk"] <= (chat["end"] - chat["start"]) / 1e9
    assert chats[0]["attributes"]["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert chats[1]["attributes"]["gen_ai.response.finish_reasons"] == ["stop"]
    # the tool ran between the two requests
    assert chats[0]["end"] <= tool["start"] <= tool["end"] <= chats[1]["start"]
    assert tool["name"] == "execute_tool get_weather"
    assert tool["attributes"]["gen_ai.tool.name"] == "get_weather"
    assert tool["attributes"]["myagent.tool.status"] == "success" and "error.type" not in tool["attributes"]
    assert tool["attributes"]["gen_ai.tool.call.id"] == next(e["step_id"] for e in events
                                                             if e["event"] == "agent.tool_call")

    # A second turn is a trace of its own.
    _, again = await ask(server, "weather again")
    assert again[-1]["metadata"]["trace_id"] != trace_id
    assert len(collector.trace(again[-1]["metadata"]["trace_id"], 5)) == 5


async def test_a_failing_tool_is_a_failed_tool_span(server, collector):
    sid, events = await ask(server, "make it fail")
    assert_turn(events, sid)
    spans = collector.trace(events[-1]["metadata"]["trace_id"], 5)
    [tool] = by_name(spans, "execute_tool ")
    assert tool["name"] == "execute_tool fail"
    assert tool["attributes"]["myagent.tool.status"] == "failed"
    assert tool["attributes"]["error.type"] == "tool_error"
    assert tool["status"] == 2  # STATUS_CODE_ERROR


async def test_the_trace_id_is_on_the_log_lines_about_the_turn(server, collector):
    sid, events = await ask(server, "weather for the logs")
    trace_id = events[-1]["metadata"]["trace_id"]
    turn_id = events[-1]["metadata"]["turn_id"]
    collector.trace(trace_id, 5)  # the turn is over in both processes
    lines = [json.loads(line) for line in server.output if line.startswith("{")]
    about = [line for line in lines if line.get("trace_id") == trace_id]
    # The front's "turn ... started/ended" lines and the sandbox's lines written during the turn
    # (the OpenAI provider's request lines), each naming the session and the turn.
    assert {line["logger"] for line in about} >= {"myagent.supervisor.turns", "myagent.agents.llm.openai"}
    assert all(line["session_id"] == sid and line["turn_id"] == turn_id for line in about)
    sandbox_lines = [line for line in about if line["logger"].startswith("myagent.agents")]
    assert all(re.fullmatch(r"[0-9a-f]{16}", line["span_id"]) for line in sandbox_lines)


async def test_tokens_as_fake_llm_reported_them_and_spans_flushed_on_stop(collector, fake_llm):
    # fake-llm counts the usage it reports (GET /v1/fake/stats): the spans must say the same.
    def stats() -> dict:
        with urllib.request.urlopen(fake_llm + "/fake/stats", timeout=5) as response:
            return json.load(response)

    before = stats()
    # Batches would leave after a minute: what arrives was flushed when the processes stopped.
    srv = start_server(collector, fake_llm, MYAGENT_TEST_UNSTREAMED="1", OTEL_BSP_SCHEDULE_DELAY="60000")
    try:
        sid, events = await ask(srv, "a long story")
    finally:
        assert srv.stop() == 0
    after = stats()
    assert after["reported"] - before["reported"] == after["requests"] - before["requests"] >= 1
    assert_turn(events, sid)
    spans = collector.trace(events[-1]["metadata"]["trace_id"], 3, timeout=5)
    assert {s["resource"]["myagent.role"] for s in spans} == {"front", "sandbox"}
    chats = by_name(spans, "chat ")
    assert len(chats) == after["requests"] - before["requests"]
    for key, field in (("gen_ai.usage.input_tokens", "prompt_tokens"), ("gen_ai.usage.output_tokens",
                                                                        "completion_tokens")):
        assert sum(chat["attributes"][key] for chat in chats) == after[field] - before[field] > 0
    assert all(chat["attributes"]["gen_ai.response.time_to_first_chunk"] >= TTFT_MS / 1000 for chat in chats)


async def test_no_trace_id_when_tracing_is_off(fake_llm):
    srv = ServerProcess(AGENT, "--workers", "1", env={"OPENAI_BASE_URL": fake_llm, "OPENAI_API_KEY": "",
                                                      "MYAGENT_LLM": "", "OTEL_EXPORTER_OTLP_ENDPOINT": "",
                                                      "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ""}).start(timeout=30)
    try:
        sid, events = await ask(srv, "weather in Beijing?")
    finally:
        srv.stop()
    assert_turn(events, sid)
    assert "trace_id" not in events[-1]["metadata"]
