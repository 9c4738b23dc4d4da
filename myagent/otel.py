"""OpenTelemetry plumbing shared by the front process and the sandboxes: export on or off,
the tracer provider, the W3C ``traceparent`` that links a turn's spans across the pipe.

Tracing is on when the standard ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (and not ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none``): spans are batched (the SDK's BatchSpanProcessor, bounded by
``OTEL_BSP_MAX_QUEUE_SIZE``, default 2048, dropping beyond) and sent over OTLP/HTTP by the
official exporter, which reads the rest of the ``OTEL_*`` variables itself. Off, nothing of
the SDK is imported and every hook is a constant check.

A process starts its provider itself: the zygote only imports the SDK (:func:`preload`) and
each sandbox calls :func:`start` after the fork, since the processor's export thread would
not survive one. :func:`stop` flushes, bounded by :data:`FLUSH_TIMEOUT`.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Mapping

__all__ = ["FLUSH_TIMEOUT", "SERVICE_NAME", "wanted", "preload", "start", "stop", "tracer", "traceparent",
           "parent_context", "trace_id"]

log = logging.getLogger("myagent.otel")

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
SERVICE_NAME = "myagent-ws"  # service.name unless OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES name one
FLUSH_TIMEOUT = 2.0  # seconds a stopping process waits for its last spans to be exported

_provider: Any = None
_tracer: Any = None


def wanted(env: Mapping[str, str] | None = None) -> bool:
    """Whether this environment asks for traces to be exported."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARS)


def preload() -> None:
    """Import the SDK and the exporter (no thread, no provider): a zygote does it before forking
    so its sandboxes share the modules instead of each importing them."""
    if wanted():
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
        import opentelemetry.sdk.resources  # noqa: F401
        import opentelemetry.sdk.trace.export  # noqa: F401
        import opentelemetry.trace.propagation.tracecontext  # noqa: F401
        import requests  # noqa: F401 - the exporter's HTTP client, imported when an exporter is made


def start(role: str) -> Any:
    """The tracer of this process (``role``: front or sandbox), its provider set up and made the
    global one on the first call; None when tracing is off."""
    global _provider, _tracer
    if _tracer is not None or not wanted():
        return _tracer
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from myagent import __version__

    resource = Resource.create({"process.pid": os.getpid(), "myagent.role": role,
                                "service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)  # stop() flushes, bounded
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    # Global, so spans that agent code or its libraries make land in the same trace.
    trace.set_tracer_provider(provider)
    _provider, _tracer = provider, provider.get_tracer("myagent", __version__)
    # Once for the server; a sandbox (one per fork, and at every respawn) says it at debug.
    log.log(logging.INFO if role == "front" else logging.DEBUG, "traces exported over OTLP/HTTP to %s", _endpoint())
    return _tracer


def tracer() -> Any:
    """The tracer :func:`start` made, or None."""
    return _tracer


def stop(timeout: float = FLUSH_TIMEOUT) -> None:
    """Export what is still queued, waiting at most ``timeout`` seconds (a collector that does
    not answer must not hold a stopping process), then forget the provider."""
    global _provider, _tracer
    provider, _provider, _tracer = _provider, None, None
    if provider is None:
        return
    flusher = threading.Thread(target=provider.shutdown, name="otel-flush", daemon=True)
    flusher.start()
    flusher.join(timeout)
    if flusher.is_alive():
        log.warning("traces: the last spans were not exported within %.1f s", timeout)


def traceparent(span: Any) -> str:
    """The W3C ``traceparent`` naming ``span`` as the parent of spans in another process."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span))
    return carrier.get("traceparent", "")


def parent_context(value: str | None) -> Any:
    """The OpenTelemetry context whose parent is the ``traceparent`` ``value`` (None if it is
    missing or invalid: the span then starts a trace of its own)."""
    if not value or not isinstance(value, str):
        return None
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = TraceContextTextMapPropagator().extract({"traceparent": value})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def trace_id(span: Any) -> str | None:
    """``span``'s trace id as 32 hex digits, or None if the trace is not sampled (not exported)."""
    context = span.get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return format(context.trace_id, "032x")


def _endpoint() -> str:
    """The endpoint for a log line: no user, password or query (they may hold credentials)."""
    from urllib.parse import urlsplit

    for name in ENDPOINT_VARS:
        value = os.environ.get(name, "").strip()
        if value:
            parts = urlsplit(value)
            host = parts.hostname or ""
            return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"
    return ""
