"""A stand-in OpenTelemetry collector for the tracing rows: accepts POST /v1/traces (OTLP/HTTP,
protobuf), counts requests, bytes and spans; GET /stats answers them as JSON. A process of its
own, so decoding spans costs the server nothing.

    python scripts/bench/otlp_sink.py PORT   # 0: any free port; prints "OTLP sink on http://..."
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

STATS = {"requests": 0, "bytes": 0, "spans": 0}
LOCK = threading.Lock()
ANSWER = ExportTraceServiceResponse().SerializeToString()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with LOCK:
            STATS["requests"] += 1
            STATS["bytes"] += len(body)
            STATS["spans"] += spans
        self._reply(200, ANSWER, "application/x-protobuf")

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        with LOCK:
            data = json.dumps(STATS).encode()
        self._reply(200, data, "application/json")


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Handler)
    server.daemon_threads = True
    print(f"OTLP sink on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
