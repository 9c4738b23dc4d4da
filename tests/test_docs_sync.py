"""The documentation agrees with the code.

* Generated sections of docs/*.md (scripts/gen_docs.py) are up to date.
* Every JSON example of a protocol event validates against the published schema.
* Relative links (and #anchors) in README.md, CHANGELOG.md and docs/*.md resolve.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import jsonschema
import pytest

from myagent.protocol.schema import SERVER_SCHEMA, validate_client_frame, validate_server_event
from myagent.protocol.wirejson import parse_client_frame

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINKED = [ROOT / "README.md", ROOT / "CHANGELOG.md", *DOCS]


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_docs = _gen_docs()


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_generated_sections_are_up_to_date(path):
    text = path.read_text(encoding="utf-8")
    assert gen_docs.render(text, path.name) == text, "run: python scripts/gen_docs.py"


def test_every_generator_is_used():
    used = {m.group("name") for path in DOCS for m in gen_docs.SECTION.finditer(path.read_text(encoding="utf-8"))}
    assert used == set(gen_docs.GENERATORS), set(gen_docs.GENERATORS) ^ used


def test_check_mode_reports_stale_sections(tmp_path, monkeypatch, capsys):
    doc = tmp_path / "x.md"
    doc.write_text("a\n<!-- gen:error-codes -->\nstale\n<!-- /gen:error-codes -->\n")
    monkeypatch.setattr(gen_docs, "ROOT", tmp_path)
    monkeypatch.setattr(gen_docs, "doc_files", lambda: [doc])
    assert gen_docs.main(["--check"]) == 1 and "stale" in doc.read_text()
    assert gen_docs.main([]) == 0 and "`SESSION_BUSY`" in doc.read_text()
    assert gen_docs.main(["--check"]) == 0


def _json_examples() -> list[tuple[str, dict]]:
    examples = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"^```json\s*\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
            block = match.group(1)
            line = text.count("\n", 0, match.start(1)) + 1
            try:
                objects = [json.loads(block)]
            except ValueError:  # one JSON object per line
                objects = [json.loads(row) for row in block.splitlines() if row.strip()]
            for i, obj in enumerate(objects):
                if isinstance(obj, dict) and "event" in obj:
                    examples.append((f"{path.name}:{line + i}:{obj['event']}", obj))
    return examples


EXAMPLES = _json_examples()
SERVER_VALIDATOR = jsonschema.Draft7Validator(SERVER_SCHEMA)


def test_the_protocol_page_has_an_example_of_every_event():
    from myagent.protocol.events import CLIENT_EVENTS, SERVER_EVENTS

    shown = {obj["event"] for where, obj in EXAMPLES if where.startswith("protocol.md")}
    assert (CLIENT_EVENTS | SERVER_EVENTS) - shown == set()


@pytest.mark.parametrize("where, event", EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_json_examples_follow_the_schema(where, event):
    if event["event"].startswith("user."):
        validate_client_frame(parse_client_frame(json.dumps(event)))
    else:
        validate_server_event(event)
        errors = list(SERVER_VALIDATOR.iter_errors(event))
        assert not errors, errors[0].message


def _slug(heading: str) -> str:
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.MULTILINE)}


@pytest.mark.parametrize("path", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{path.name}: broken link {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), f"{path.name}: no heading #{anchor} in {linked.name}"
