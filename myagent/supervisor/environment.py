"""The scrubbed environment sandboxes run with.

Only an allow list passes: what Python and the LLM client need, the names
given with ``--sandbox-env``, and the names the agent file declares
(:mod:`myagent.declared_env`). The server's own secrets (auth tokens, the state
secret) never reach agent code. The zygote is started with this environment
(the sandboxes inherit it), so nothing else is ever in its memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Mapping

from myagent.declared_env import DeclarationError, check_names, read_declared, report
from myagent.supervisor.exceptions import AgentFileError, ConfigError

ALLOWED = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "PYTHONHASHSEED",
           "VIRTUAL_ENV", "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
           "http_proxy", "https_proxy", "no_proxy")
ALLOWED_PREFIXES = ("LC_", "OPENAI_", "MYAGENT_", "OTEL_")  # OTEL_: sandboxes export their own spans
# Server-side secrets and settings: never handed to agent code.
DENIED_PREFIXES = ("MYAGENT_WS_",)
# The OTLP headers carry a collector's credentials: withheld unless named with --sandbox-env.
UNLESS_NAMED = ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS")
# Names that look like credentials: the start-up hint names those withheld. Not every *_KEY:
# the python images (ours included) set GPG_KEY, which is public; these catch the *_ACCESS_KEY kind.
CREDENTIAL_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD", "_PASSWD", "_SECRET_KEY", "_ACCESS_KEY",
                       "_PRIVATE_KEY", "_CREDENTIALS")
HINT_NAMES = 10  # names the hint lists before "and N more"


def sandbox_environment(extra: Iterable[str] = (), source: Mapping[str, str] | None = None) -> dict[str, str]:
    """Allow-listed variables of ``source`` plus the names in ``extra`` (``--sandbox-env``)."""
    source = os.environ if source is None else source
    wanted = set(extra)
    env = {}
    for key, value in source.items():
        if key.startswith(DENIED_PREFIXES):
            continue
        if key in wanted or (key in ALLOWED or key.startswith(ALLOWED_PREFIXES)) and key not in UNLESS_NAMED:
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


@dataclass(frozen=True)
class SandboxEnv:
    """What one zygote, and every sandbox it forks, runs with."""

    env: dict[str, str]
    declared: tuple[str, ...] = ()  # the names the agent file declares


def prepare(agent_file: str, extra: Iterable[str] = (), source: Mapping[str, str] | None = None) -> SandboxEnv:
    """The environment for a zygote of ``agent_file``: the allow list, ``extra`` (``--sandbox-env``) and
    the names the file declares. Raises AgentFileError when the declaration cannot be read or names
    a variable ``source`` does not set (an empty value counts as unset), ConfigError for a bad ``extra``."""
    source = os.environ if source is None else source
    try:
        extra = check_names(list(extra), "--sandbox-env")
    except DeclarationError as exc:
        raise ConfigError(str(exc)) from None
    try:
        declared = read_declared(agent_file)
    except DeclarationError as exc:
        raise AgentFileError(f"{agent_file}: {exc}") from None
    missing = report(declared, source)[1]
    if missing:
        them = "it" if len(missing) == 1 else "them"
        raise AgentFileError(f"{agent_file} declares {', '.join(missing)}, not set in the server's environment "
                             f"(or empty): set {them} (export {missing[0]}=...) or take {them} out of the declaration")
    return SandboxEnv(absolute_llm_paths(sandbox_environment((*extra, *declared), source)), declared)


def looks_secret(name: str) -> bool:
    return ("_" + name.upper()).endswith(CREDENTIAL_SUFFIXES)


def withheld(passed: Iterable[str], source: Mapping[str, str] | None = None) -> list[str]:
    """Names in ``source`` that look like credentials and are not passed; the server's own are left out."""
    source = os.environ if source is None else source
    passed = set(passed)
    return sorted(k for k in source if k not in passed and looks_secret(k) and not k.startswith(DENIED_PREFIXES))


def declared_line(declared: Iterable[str]) -> str:
    """The declared names an agent's sandboxes get ("" when it declares none)."""
    declared = list(declared)
    return f"🔑 Passed to sandboxes as the agent file declares: {', '.join(declared)}" if declared else ""


def withheld_hint(names: list[str]) -> str:
    """One line naming withheld variables (never their values) and how to pass one."""
    shown = ", ".join(names[:HINT_NAMES]) + (f" and {len(names) - HINT_NAMES} more" if len(names) > HINT_NAMES else "")
    return (f"🔒 Withheld from sandboxes (they look like credentials): {shown}. A tool that needs one: declare "
            'it in the agent file (env=["NAME"] or ENV = ["NAME"]) or start the server with --sandbox-env NAME')
