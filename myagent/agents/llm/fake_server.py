"""FakeLLMServer: a local OpenAI-compatible HTTP server for tests and demos.

Stdlib only: a ThreadingHTTPServer on a background thread, HTTP/1.1 with
keep-alive, SSE over chunked transfer encoding. Replies come from a script
(:mod:`myagent.agents.llm.script`) applied to the request's messages, so the
real ``openai`` SDK can be tested end to end on 127.0.0.1.

Fault knobs (attributes; change them at any time): ``ttft_ms`` delay before
the first byte, ``token_delay_ms`` between stream chunks (else the script's),
``fail_first_n`` answer HTTP 500 to the first N chat requests,
``status_code`` answer every chat request with that status, and
``retry_after_ms`` to send a ``retry-after-ms`` header with failures so SDK
retries in tests do not wait for the real backoff, and ``cut_after_chunks``
to drop the connection mid-stream after that many SSE events, ``report_usage``
False to answer without token usage (a provider that reports none).

Usage: a non-streamed reply carries ``usage``; a streamed one ends with a usage chunk when the
request asks for it (``stream_options.include_usage``), as OpenAI does. What was reported is
counted (:attr:`FakeLLMServer.stats`, also ``GET /v1/fake/stats``) so tests can compare it with
what a server says it spent.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping

from .fake_wire import FAKE_MODEL, completion_body, error_body, models_body, stream_chunks, usage_body
from .script import Reply, Script, coerce_script, plan_reply

__all__ = ["FakeLLMServer", "serve_forever_cli"]

logger = logging.getLogger("myagent.agents.llm.fake_server")

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_RECORDED = 100
LISTEN_BACKLOG = 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Each SSE chunk is its own small write: without TCP_NODELAY, Nagle holds it until the
    # client's delayed ACK (40 ms on Linux), which made every request look 40 ms slower.
    disable_nagle_algorithm = True
    server: "_HTTPServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("%s " + format, self.address_string(), *args)

    def _send_json(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(200, models_body())
        elif self.path.rstrip("/") == "/v1/fake/stats":
            self._send_json(200, self.server.fake.stats)
        else:
            self._send_json(404, error_body(f"no route GET {self.path}", "not_found"))

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send_json(413, error_body("request body too large", "invalid_request_error"))
            return
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(404, error_body(f"no route POST {self.path}", "not_found"))
            return
        try:
            body = json.loads(raw)
            messages = body["messages"]
            if not isinstance(messages, list):
                raise TypeError("messages must be a list")
        except (ValueError, KeyError, TypeError) as exc:
            self._send_json(400, error_body(f"bad request: {exc}", "invalid_request_error"))
            return
        self.server.fake._answer(self, body, messages)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of concurrent clients (one shared
    # connection pool opening 50 connections at once) overflowed it and got resets.
    request_queue_size = LISTEN_BACKLOG
    fake: "FakeLLMServer"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.fake._lock:
            self.fake.connection_count += 1  # tests check that clients keep connections alive
        super().process_request(request, client_address)


class FakeLLMServer:
    """A scripted OpenAI-compatible endpoint at :attr:`url` (``.../v1``)."""

    def __init__(
        self,
        script: Script | Mapping[str, Any] | str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ttft_ms: float = 0,
        token_delay_ms: float = 0,
        fail_first_n: int = 0,
        status_code: int | None = None,
        retry_after_ms: float | None = None,
        cut_after_chunks: int | None = None,
        report_usage: bool = True,
    ) -> None:
        self.script = coerce_script(script)
        self.host, self.port = host, port
        self.ttft_ms, self.token_delay_ms = ttft_ms, token_delay_ms
        self.fail_first_n, self.status_code, self.retry_after_ms = fail_first_n, status_code, retry_after_ms
        self.cut_after_chunks = cut_after_chunks
        self.report_usage = report_usage
        # Token usage reported so far (summed), and how many replies carried none.
        self.usage_totals = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "reported": 0,
                             "unreported": 0}
        self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_RECORDED)
        self.request_count = 0
        self.connection_count = 0  # TCP connections accepted
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL for the SDK, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """Decoded JSON bodies of the recorded chat requests, oldest first."""
        with self._lock:
            return [r["body"] for r in self.requests]

    @property
    def stats(self) -> dict[str, int]:
        """Chat requests received and the token usage reported in replies (``GET /v1/fake/stats``)."""
        with self._lock:
            return {"requests": self.request_count, **self.usage_totals}

    def _count_usage(self, usage: dict[str, int] | None) -> None:
        with self._lock:
            if usage is None:
                self.usage_totals["unreported"] += 1
                return
            self.usage_totals["reported"] += 1
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                self.usage_totals[key] += usage[key]

    def start(self) -> "FakeLLMServer":
        """Bind and serve on a daemon thread; returns self."""
        self._stopping.clear()
        self._httpd = _HTTPServer((self.host, self.port), _Handler)
        self._httpd.fake = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-llm", daemon=True
        )
        self._thread.start()
        logger.info("fake LLM listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving; in-flight delays are cut short. Safe to call twice."""
        self._stopping.set()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        logger.info("fake LLM stopped")

    def __enter__(self) -> "FakeLLMServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------ handling

    def _record(self, handler: _Handler, body: dict[str, Any]) -> int:
        with self._lock:
            self.request_count += 1
            headers = {k.lower(): v for k, v in handler.headers.items()}
            self.requests.append({"path": handler.path, "headers": headers, "body": body})
            return self.request_count

    def _pause(self, ms: float) -> None:
        if ms > 0:
            self._stopping.wait(ms / 1000)

    def _failure_status(self, number: int) -> int | None:
        if self.status_code is not None and self.status_code != 200:
            return self.status_code
        return 500 if number <= self.fail_first_n else None

    def _answer(self, handler: _Handler, body: dict[str, Any], messages: list[dict]) -> None:
        number = self._record(handler, body)
        failure = self._failure_status(number)
        if failure is not None:
            headers = {} if self.retry_after_ms is None else {"retry-after-ms": f"{self.retry_after_ms:g}"}
            handler._send_json(failure, error_body(f"fake failure on request {number}"), headers)
            return
        reply = plan_reply(self.script, messages)
        self._pause(self.ttft_ms + reply.delay_ms)
        ids = {"completion_id": f"chatcmpl-fake-{number}", "model": body.get("model") or FAKE_MODEL,
               "created": int(time.time())}
        options = body.get("stream_options")
        asked = not body.get("stream") or (isinstance(options, dict) and options.get("include_usage") is True)
        usage = usage_body(messages, reply, body.get("tools")) if self.report_usage and asked else None
        if not body.get("stream"):
            self._count_usage(usage)
            handler._send_json(200, completion_body(reply, **ids, usage=usage))
            return
        try:
            self._stream(handler, reply, ids, usage)
        except (BrokenPipeError, ConnectionResetError):
            logger.debug("client went away mid-stream")
            handler.close_connection = True

    def _stream(self, handler: _Handler, reply: Reply, ids: dict[str, Any], usage: dict[str, int] | None) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        delay = self.token_delay_ms or reply.token_delay_ms
        events = stream_chunks(reply, chunk_size=self.script.chunk_size, usage=usage, **ids)
        for i, event in enumerate(events):
            if i == self.cut_after_chunks:
                # No terminating chunk: the client sees a truncated body.
                handler.close_connection = True
                return
            if i > 1:  # the role chunk and first delta go out together, like TTFT
                self._pause(delay)
            self._write_chunk(handler, f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode())
        self._count_usage(usage)  # reported: the whole stream went out
        self._write_chunk(handler, b"data: [DONE]\n\n")
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()

    @staticmethod
    def _write_chunk(handler: _Handler, data: bytes) -> None:
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        handler.wfile.flush()


def serve_forever_cli(
    host: str, port: int, script_path: str | None, ttft_ms: float, token_delay_ms: float,
    report_usage: bool = True,
) -> None:
    """Run a FakeLLMServer in the foreground until Ctrl-C or SIGTERM (``myagent-ws fake-llm``).

    A bad script or an unusable address exits with a one-line message
    (SystemExit), not a traceback.
    """
    try:
        server = FakeLLMServer(
            script_path, host=host, port=port, ttft_ms=ttft_ms, token_delay_ms=token_delay_ms,
            report_usage=report_usage,
        )
        server.start()
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    except OSError as exc:
        raise SystemExit(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    stop = threading.Event()
    # The handler only sets the event; the loop below does the shutdown. Installed before
    # the line is printed: a caller may send SIGTERM as soon as it reads it.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    print(f"fake OpenAI-compatible LLM on {server.url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
