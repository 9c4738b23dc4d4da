"""Regenerate the marked sections of docs/*.md from the code.

A generated section sits between two markers (the name picks the generator)::

    <!-- gen:error-codes -->
    ...generated text, do not edit by hand...
    <!-- /gen:error-codes -->

    python scripts/gen_docs.py           # rewrite every marked section in docs/*.md
    python scripts/gen_docs.py --check   # exit 1 and name the stale files, change nothing

tests/test_docs_sync.py fails when a section is stale. README.md's option table
has its own script (scripts/sync_readme.py) and markers.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
from typing import Callable

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from myagent.protocol.errors import ERROR_DESCRIPTIONS, RECOVERABLE, ErrorCode  # noqa: E402
from myagent.protocol.schema import CLIENT_SCHEMA, SERVER_SCHEMA  # noqa: E402
from myagent.settings import SETTINGS_BY_NAME, markdown_table  # noqa: E402
from myagent.supervisor.environment import ALLOWED, ALLOWED_PREFIXES, DENIED_PREFIXES  # noqa: E402

DOCS = ROOT / "docs"
SECTION = re.compile(r"(<!-- gen:(?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- /gen:(?P=name) -->)", re.DOTALL)


def _cell(text: str) -> str:
    """One markdown table cell: RST ``code`` becomes `code`; pipes and, outside code, angle brackets escaped."""
    text = re.sub(r"``(.+?)``", r"`\1`", " ".join(str(text).split())).replace("|", "\\|")
    parts = re.split(r"(`[^`]*`)", text)  # odd items are code spans: left as they are
    return "".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def error_codes() -> str:
    rows = ["| code | recoverable | meaning |", "|---|---|---|"]
    for code in ErrorCode:
        rows.append(f"| `{code.value}` | {'yes' if RECOVERABLE[code] else '**no**'} | "
                    f"{_cell(ERROR_DESCRIPTIONS[code])} |")
    return "\n".join(rows)


def _one_of(branches: list[dict], prefix: str = "") -> str:
    return "one of " + " / ".join(f"`{prefix}{b['required'][0]}`" for b in branches)


def _fields(schema: dict) -> tuple[list[str], list[str]]:
    """Required and optional fields of a client event; fields of an object ``content`` as ``content.x``."""
    required_top = [f for f in schema.get("required", []) if f != "event"]
    required: list[str] = []
    optional: list[str] = []
    for name, sub in schema.get("properties", {}).items():
        if name == "event":
            continue
        is_required = name in required_top
        inner = sub.get("properties") or {}
        if not inner:
            (required if is_required else optional).append(f"`{name}`")
            continue
        alternatives = sub.get("anyOf", [])
        chosen = {b["required"][0] for b in alternatives}
        for key in inner:
            if key in chosen:
                continue
            needed = is_required and key in sub.get("required", [])
            (required if needed else optional).append(f"`{name}.{key}`")
        if alternatives:
            (required if is_required else optional).append(_one_of(alternatives, f"{name}."))
    if "anyOf" in schema:  # e.g. content.state or the legacy top-level signed_state
        names = [b["required"][0] for b in schema["anyOf"]]
        state = [f for f in optional if f.startswith("`content.")]
        required.append("one of " + " / ".join(state or [f"`{n}`" for n in names[:1]])
                        + "".join(f" / `{n}`" for n in names[1:]))
        optional = [f for f in optional if f not in state and f.strip("`") not in names]
    return required, optional


def client_events() -> str:
    rows = ["| event | required | optional | what it does |", "|---|---|---|---|"]
    for name, schema in CLIENT_SCHEMA["definitions"].items():
        required, optional = _fields(schema)
        rows.append(f"| `{name}` | {', '.join(required) or '—'} | {', '.join(optional) or '—'} | "
                    f"{_cell(schema['description'])} |")
    return "\n".join(rows)


def server_events() -> str:
    rows = ["| event | the schema requires (besides `event`, `timestamp`, `content`, `metadata`) | what it means |",
            "|---|---|---|"]
    for name, schema in SERVER_SCHEMA["definitions"].items():
        fields = [f"`{f}`" for f in schema.get("required", [])]
        meta = schema.get("properties", {}).get("metadata", {})
        fields += [f"`metadata.{k}`" for k in meta.get("required", [])]
        rows.append(f"| `{name}` | {', '.join(fields) or '—'} | {_cell(schema['description'])} |")
    return "\n".join(rows)


def settings() -> str:
    return markdown_table()


LIMITS = ("max-connections", "max-connections-per-address", "open-timeout", "max-message-size", "rate-limit",
          "rate-burst", "rate-strikes", "max-outbound-buffer", "idle-timeout", "ping-interval", "ping-timeout",
          "max-sessions", "max-sessions-per-connection", "max-sessions-per-address", "max-sessions-per-principal",
          "max-user-message-chars", "max-queued-messages", "session-ttl", "replay-buffer", "replay-buffer-bytes",
          "max-history-messages", "max-history-bytes", "turn-timeout", "confirm-timeout",
          "max-tool-result-chars", "max-state-size", "state-ttl", "max-memory", "max-cpu", "worker-timeout",
          "sandbox-max-files", "sandbox-max-file-size", "sandbox-max-procs", "sandbox-max-offences", "max-sandboxes",
          "max-restarts", "restart-window", "quarantine-after", "quarantine-window")


def limits() -> str:
    rows = ["| option | default | what it bounds, and the refusal |", "|---|---|---|"]
    for name in LIMITS:
        s = SETTINGS_BY_NAME[name]
        rows.append(f"| `--{name}` | `{s.default}` | {_cell(s.help)} |")
    return "\n".join(rows)


def sandbox_env() -> str:
    names = ", ".join(f"`{n}`" for n in ALLOWED)
    prefixes = ", ".join(f"`{p}*`" for p in ALLOWED_PREFIXES)
    denied = ", ".join(f"`{p}*`" for p in DENIED_PREFIXES)
    return (f"* passed: {names}, and every variable starting with {prefixes}\n"
            f"* never passed, even when allowed above: {denied} (the server's own settings and secrets)\n"
            "* added: `PYTHONUNBUFFERED=1`; the names the agent file declares (`env=[...]`, `ENV = [...]`: "
            "[writing-agents.md](writing-agents.md#secrets-and-other-environment-variables)); "
            "`--sandbox-env NAME` (repeatable) passes more names")


def _wirejson_rows() -> list[tuple[str, str]]:
    """The input/outcome table of myagent/protocol/wirejson.py's docstring, read from the source.

    Read from the file (not ``__doc__``) so that columns stay aligned where the
    source escapes a backslash. A row starts where the outcome column starts
    with one of the outcome words; other lines continue the row above.
    """
    lines = (ROOT / "myagent" / "protocol" / "wirejson.py").read_text(encoding="utf-8").splitlines()
    rules = [i for i, line in enumerate(lines) if re.fullmatch(r"=+ +=+", line)]
    if len(rules) != 3:
        raise SystemExit("gen_docs: the table in wirejson.py's docstring changed shape; update _wirejson_rows")
    split = lines[rules[0]].index(" ") + 1
    while lines[rules[0]][split] == " ":
        split += 1
    rows: list[list[str]] = []
    for line in lines[rules[1] + 1:rules[2]]:
        left, right = line[:split].strip(), line[split:].strip()
        if right.startswith(("InvalidJSON", "accepted")):
            rows.append([left, right])
        elif rows:
            rows[-1][0] = f"{rows[-1][0]} {left}".strip()
            rows[-1][1] = f"{rows[-1][1]} {right}".strip()
    return [(a.replace("\\\\", "\\"), b.replace("\\\\", "\\")) for a, b in rows]


def json_edge_cases() -> str:
    rows = ["| input | outcome |", "|---|---|"]
    for text, outcome in _wirejson_rows():
        outcome = re.sub(r"^InvalidJSON", "`INVALID_JSON`", outcome)
        rows.append(f"| {_cell(text)} | {_cell(outcome)} |")
    return "\n".join(rows)


GENERATORS: dict[str, Callable[[], str]] = {
    "error-codes": error_codes,
    "client-events": client_events,
    "server-events": server_events,
    "settings": settings,
    "limits": limits,
    "sandbox-env": sandbox_env,
    "json-edge-cases": json_edge_cases,
}


def render(text: str, where: str = "") -> str:
    """``text`` with every marked section regenerated; an unknown section name is an error."""

    def replace(match: re.Match) -> str:
        name = match.group("name")
        if name not in GENERATORS:
            raise SystemExit(f"gen_docs: {where}: unknown section gen:{name} (known: {', '.join(GENERATORS)})")
        return f"{match.group(1)}{GENERATORS[name]()}\n{match.group(4)}"

    return SECTION.sub(replace, text)


def doc_files() -> list[pathlib.Path]:
    return sorted(DOCS.glob("*.md"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report stale files, change nothing")
    args = parser.parse_args(argv)
    stale = []
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        new = render(text, str(path.relative_to(ROOT)))
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(new, encoding="utf-8")
    verb = "stale (run: python scripts/gen_docs.py)" if args.check else "regenerated"
    for path in stale:
        print(f"{path}: {verb}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
