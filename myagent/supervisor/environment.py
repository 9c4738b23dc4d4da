"""The scrubbed environment sandboxes run with.

Only an allow list passes: what Python and the LLM client need. The server's
own secrets (auth tokens, the state secret) never reach agent code.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping

ALLOWED = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "PYTHONHASHSEED",
           "VIRTUAL_ENV", "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
           "http_proxy", "https_proxy", "no_proxy")
ALLOWED_PREFIXES = ("LC_", "OPENAI_", "MYAGENT_", "OTEL_")  # OTEL_: sandboxes export their own spans
# Server-side secrets and settings: never handed to agent code (--sandbox-env can still pass
# one on purpose). The OTLP headers carry a collector's credentials.
DENIED_PREFIXES = ("MYAGENT_WS_", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS")


def sandbox_environment(extra: Iterable[str] = (), source: Mapping[str, str] | None = None) -> dict[str, str]:
    """Allow-listed variables of ``source`` plus the names in ``extra`` (``--sandbox-env``)."""
    source = os.environ if source is None else source
    wanted = set(extra)
    env = {}
    for key, value in source.items():
        if key in wanted or (key in ALLOWED or key.startswith(ALLOWED_PREFIXES)) and not key.startswith(
                DENIED_PREFIXES):
            env[key] = value
    env["PYTHONUNBUFFERED"] = "1"
    return env


def absolute_llm_paths(env: dict[str, str]) -> dict[str, str]:
    """``MYAGENT_LLM=scripted:relative/path`` resolved against the server's working directory:
    sandboxes run in directories of their own, where a relative path would not be found."""
    spec = env.get("MYAGENT_LLM", "")
    if spec.startswith("scripted:") and len(spec) > len("scripted:"):
        path = spec[len("scripted:"):]
        if not os.path.isabs(path):
            env["MYAGENT_LLM"] = "scripted:" + os.path.abspath(path)
    return env
