"""What the docs say about error codes is what the server does.

* Every error-code-looking name in README.md and docs/*.md (a backquoted
  UPPER_CASE word that is not an environment variable or an OS name) is an
  ``ErrorCode``, and so is every ``error_code``/``reason`` of a JSON example.
* docs/protocol.md's "Where each code is sent" places every ``ErrorCode``; the
  codes it calls reserved appear nowhere in the server's code, every other
  one does (``ErrorCode.NAME`` or the string ``"NAME"``, outside errors.py).
* Every reason of the ``agent.interrupted`` table comes with that
  ``error_code`` and ``recoverable``, as the page says (one translator builds
  every interruption, in the sandbox and in the front).

(That every JSON example validates against the schema is tests/test_docs_sync.py.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import orjson
import pytest

from myagent.protocol.errors import ErrorCode, is_recoverable
from myagent.protocol.translate import Translator

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
CODES = {code.value for code in ErrorCode}

# Upper-case names the docs quote that are not error codes: variables, kernel and libc names.
NOT_CODES = re.compile(r"^(MYAGENT_|OPENAI_|RLIMIT_|CONFIG_|CLONE_|CAP_|SIG[A-Z]+$|SSL_|HTTPS?_|NO_PROXY$|PYTHON"
                       r"|NAME$|INCRBY$|HOME$|PATH$|LANG|TMPDIR$|VIRTUAL_ENV$|EAGAIN$|GET$|HEALTHCHECK$|RETIRED$|ENV$|OTEL_"
                       # environment variables the docs name (declared secrets and the like)
                       r"|.*_(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS|ENDPOINT|HEADERS)$)")
QUOTED = re.compile(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+|[A-Z]{3,})`")
SERVER_CODE = [p for p in (ROOT / "myagent").rglob("*.py")
               if p.name != "errors.py" and "client" not in p.relative_to(ROOT / "myagent").parts]


def _quoted_names() -> list[tuple[str, str]]:
    return [(path.name, name) for path in DOCS for name in QUOTED.findall(path.read_text(encoding="utf-8"))]


def _example_codes() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for block in re.findall(r"^```json\s*\n(.*?)^```", path.read_text(encoding="utf-8"), re.DOTALL | re.M):
            for row in block.splitlines():
                if row.startswith("{") and row.rstrip().endswith("}"):
                    meta = (json.loads(row).get("metadata") or {})
                    for key in ("error_code", "reason"):
                        if isinstance(meta.get(key), str) and meta[key].isupper():
                            found.append((path.name, meta[key]))
    return found


def test_every_code_the_docs_name_exists():
    unknown = sorted({f"{where}: {name}" for where, name in _quoted_names()
                      if name not in CODES and not NOT_CODES.match(name)})
    assert not unknown, f"not an ErrorCode (nor listed in NOT_CODES as something else): {unknown}"
    examples = _example_codes()
    assert examples, "no error_code found in the JSON examples: the pattern is stale"
    assert not [e for e in examples if e[1] not in CODES], examples


def _where_sent() -> dict[str, set[str]]:
    """The bullets of protocol.md's "Where each code is sent": first words -> codes named."""
    start = PROTOCOL.index("Where each code is sent:")
    section = PROTOCOL[start:PROTOCOL.index("\n## ", start)]
    bullets = re.split(r"\n\* ", section)[1:]
    assert len(bullets) >= 5, section
    places = {}
    for bullet in bullets:
        head = " ".join(bullet.split()[:3])
        # The reserved bullet explains each code in parentheses, naming others: take the listed ones.
        pattern = r"(?:: |\),\s+)`([A-Z_]+)`" if head.startswith("reserved") else r"`([A-Z_]+)`"
        places[head] = set(re.findall(pattern, bullet)) & CODES
    return places


def _referenced(code: str) -> list[str]:
    pattern = re.compile(rf"ErrorCode\.{code}\b|[\"']{code}[\"']")
    return [str(p.relative_to(ROOT)) for p in SERVER_CODE if pattern.search(p.read_text(encoding="utf-8"))]


def test_every_code_is_placed_and_the_server_sends_what_the_page_says():
    places = _where_sent()
    reserved = next(codes for head, codes in places.items() if head.startswith("reserved"))
    placed = set().union(*places.values())
    assert CODES - placed == set(), f"codes protocol.md does not say where they are sent: {CODES - placed}"
    assert "UNAUTHORIZED" in reserved, reserved  # (the parse still finds the reserved list)
    sent = placed - reserved
    assert not [c for c in sent if not _referenced(c)], [c for c in sent if not _referenced(c)]
    assert not {c: _referenced(c) for c in reserved if _referenced(c)}, "a reserved code is sent: update the doc"


def _interrupted_reasons() -> set[str]:
    start = PROTOCOL.index("`metadata.reason` says why:")
    table = PROTOCOL[start:PROTOCOL.index("\n\n", PROTOCOL.index("|---|", start))]
    rows = [row.split("|")[1] for row in table.splitlines() if row.startswith("| `")]
    reasons = set(re.findall(r"`([A-Z_]+)`", " ".join(rows)))
    assert len(reasons) >= 10, table
    return reasons


@pytest.mark.parametrize("reason", sorted(_interrupted_reasons()))
def test_every_interruption_reason_is_also_its_error_code(reason):
    assert reason in CODES
    assert f"`{reason}`" in PROTOCOL[PROTOCOL.index("in `agent.interrupted` ending a turn"):], reason
    name, body = Translator().interrupted("t1", reason)
    meta = orjson.loads(body)["metadata"]
    assert name == "agent.interrupted"
    assert meta["reason"] == meta["error_code"] == reason
    assert meta["recoverable"] is is_recoverable(reason)
    assert meta["recoverable"] is (reason != "SESSION_CLOSED")  # "false only for SESSION_CLOSED"
