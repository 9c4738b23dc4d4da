"""Translate openai SDK exceptions into user-safe :class:`LLMError` messages.

Messages name the endpoint (without credentials or query string) and the HTTP
status, never the API key, request bodies or tracebacks.
"""

from __future__ import annotations

import errno
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai

from .base import LLMError

__all__ = ["map_openai_error", "redact", "safe_url"]

MAX_DETAIL_CHARS = 300
# Provider key shapes (OpenAI sk-..., generic bearer-ish tokens) that error
# bodies sometimes echo back, e.g. "Incorrect API key provided: sk-abc...".
_KEYLIKE = re.compile(r"\b(sk|pk|rk|key|api|tok)[-_][A-Za-z0-9_\-*]{6,}", re.IGNORECASE)
_RETRYABLE = {408, 409, 429}
_HINTS = {401: " (check OPENAI_API_KEY)", 404: " (check the model name and OPENAI_BASE_URL)"}


def safe_url(url: str | None) -> str:
    """``url`` without userinfo, query or fragment (those may carry secrets)."""
    if not url:
        return "the default OpenAI endpoint"
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def redact(text: str, secret: str | None = None) -> str:
    """Remove the configured key and key-like tokens; cap the length."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    text = _KEYLIKE.sub("***", text)
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL_CHARS else text[:MAX_DETAIL_CHARS] + "..."


def _detail(exc: openai.APIError) -> str:
    body: Any = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if isinstance(message, str) and message:
            return message
    return exc.message or type(exc).__name__


def map_openai_error(exc: BaseException, *, url: str | None, attempts: int, api_key: str | None) -> LLMError:
    """Build the LLMError for ``exc`` raised while talking to ``url``.

    ``attempts`` is how many tries the SDK makes for retryable failures
    (max_retries + 1); the SDK gives up only after all of them.
    """
    where = safe_url(url)
    tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    if isinstance(exc, openai.APITimeoutError) and not _refused(exc):
        return LLMError(f"LLM endpoint {where} timed out {tries}")
    if isinstance(exc, openai.APIConnectionError):
        return LLMError(f"LLM endpoint unreachable at {where} {tries}")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retried = f" {tries}" if status in _RETRYABLE or status >= 500 else ""
        hint = _HINTS.get(status, "")
        return LLMError(f"LLM returned HTTP {status}{retried}{hint}: {redact(_detail(exc), api_key)}")
    if isinstance(exc, openai.APIError):
        return LLMError(f"LLM error from {where}: {redact(_detail(exc), api_key)}")
    if isinstance(exc, openai.OpenAIError):
        return LLMError(f"LLM client error ({type(exc).__name__}): {redact(str(exc), api_key)}")
    return LLMError(f"LLM request to {where} failed ({type(exc).__name__})")


def _refused(exc: BaseException) -> bool:
    """A connection refused somewhere in the cause chain. The SDK's aiohttp transport maps a
    refused connection to a connect *timeout*; the user should read "unreachable"."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if isinstance(current, ConnectionRefusedError) or getattr(current, "errno", None) == errno.ECONNREFUSED:
            return True
        os_error = getattr(current, "os_error", None)  # aiohttp's ClientConnectorError keeps it here
        if isinstance(os_error, ConnectionRefusedError):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False
