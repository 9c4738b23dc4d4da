"""Every shell command the documentation shows works.

Commands are the lines of ```bash blocks in README.md and docs/*.md (a
trailing backslash continues a line; `&&`, `||`, `;` and `|` separate
commands; `# ...` is a comment; leading VAR=value words are environment).
Each one must be one of:

* a `myagent-ws` command whose subcommand exists, whose every option is one
  of that subcommand's parameters, and that click parses as a whole;
  the safe, fast ones (check, run with the offline model, new, schema,
  settings, --version, --help) are then run for real, in document order, in
  a temporary directory that sees the repository's examples/, tests/, docs/
  and scripts/;
* a command covered by another test (long-running servers, Docker, ...):
  COVERED below names the test for each; a test checks those files exist;
* a shell builtin that changes nothing here (`export`, `cd`).

A command that fits none of these fails the test: a doc may only show
commands that are checked somewhere.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest

from myagent.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(bash|sh|shell)\s*\n(.*?)^```", re.DOTALL | re.MULTILINE)
SEPARATORS = {"&&", "||", ";", "|", "&"}
REDIRECTS = {">", ">>", "<", "2>", "2>&1"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")

# myagent-ws subcommands run for real here (fast, no server, nothing outside a temp dir).
SAFE = {"check", "run", "new", "schema", "settings"}

# Subcommands that start servers or need one: parsed here, exercised by these tests.
COVERED_SUBCOMMANDS = {
    # `server FILE [options]`: served and driven through real clients.
    "server": ["tests/integration/test_examples.py",        # examples/*.py served and used
               "tests/integration/test_doc_clients.py",     # tokens from the environment, OPENAI_BASE_URL
               "tests/integration/test_hardening.py",       # --auth-tokens-file, --allow-host, --allow-origin, TLS
               "tests/integration/test_lifecycle.py",       # SIGTERM drain, exit codes
               "tests/integration/test_docs_claims.py",     # MYAGENT_LLM=scripted:RELATIVE
               "tests/chaos/test_reload.py"],               # --reload, SIGHUP
    # `chat URL [-m MESSAGE]`.
    "chat": ["tests/integration/test_doc_clients.py",       # test_chat_cli_one_shot, test_fake_llm_...
             "tests/integration/test_chat_cli.py"],         # URL forms, Ctrl-C, exit codes, resuming
    # `status [URL] [--watch] [--json]`.
    "status": ["tests/integration/test_ops_status_cli.py"],
    # `fake-llm --port N [--script FILE]` + OPENAI_BASE_URL.
    "fake-llm": ["tests/integration/test_doc_clients.py",   # test_fake_llm_and_openai_base_url_end_to_end
                 "tests/agents/llm/test_fake_server.py"],
}

# Other programs a doc may show, by their first words, and the tests that cover them.
COVERED = {
    ("pip", "install"): ["tests/test_docker.py"],            # docker/install.sh pip-installs the checkout
    ("scripts/test",): ["scripts/test"],                      # the test suite's own entry point
    ("docker", "build"): ["tests/test_docker.py"],           # Dockerfile linted, its build steps run
    ("docker", "run"): ["tests/test_docker.py"],             # ENTRYPOINT/CMD/ENV checked, image steps served
    ("curl",): ["tests/integration/test_ops_endpoints.py"],  # /health /ready /status /metrics
    ("jq",): ["tests/integration/test_ops_status_cli.py"],   # only after `myagent-ws status --json |`
    ("kill", "-HUP"): ["tests/chaos/test_reload.py"],         # SIGHUP reload
    ("python", "docs/clients/client.py"): ["tests/integration/test_doc_clients.py"],
    ("node", "--experimental-websocket", "docs/clients/client.js"): ["tests/integration/test_doc_clients.py"],
    ("node", "docs/clients/client.js"): ["tests/integration/test_doc_clients.py"],
    ("python", "scripts/bench/run.py"): ["tests/integration/test_bench_smoke.py"],
    ("python", "scripts/gen_docs.py"): ["tests/test_docs_sync.py"],
}
BUILTINS = {"export", "cd"}


@dataclass
class Command:
    doc: str
    line: int
    text: str
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    stdout_to: str | None = None

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}:{' '.join(self.argv)[:60]}"


def _lines(block: str, first_line: int) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    pending, start = "", first_line
    for offset, line in enumerate(block.splitlines()):
        if not pending:
            start = first_line + offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        if text and not text.startswith("#"):
            out.append((start, text))
    return out


def _split(text: str) -> list[list[str]]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in SEPARATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [c for c in commands if c]


def extract(path: Path) -> list[Command]:
    text = path.read_text(encoding="utf-8")
    doc = str(path.relative_to(ROOT))
    commands = []
    for match in FENCE.finditer(text):
        first_line = text.count("\n", 0, match.start(2)) + 1
        for line, source in _lines(match.group(2), first_line):
            for words in _split(source):
                command = Command(doc, line, source)
                while words and ASSIGNMENT.match(words[0]):
                    key, _, value = words.pop(0).partition("=")
                    command.env[key] = value
                while len(words) >= 2 and words[-2] in REDIRECTS:
                    if words[-2] == ">":
                        command.stdout_to = words[-1]
                    words = words[:-2]
                command.argv = words
                commands.append(command)
    return commands


ALL = [c for path in DOC_FILES for c in extract(path)]


def _covered(argv: list[str]) -> list[str] | None:
    words = ["python" if argv and argv[0] in ("python3", sys.executable) else argv[0], *argv[1:]] if argv else []
    for prefix, tests in COVERED.items():
        if tuple(words[:len(prefix)]) == prefix:
            return tests
    return None


def check_myagent_ws(args: list[str]) -> click.Command | None:
    """Raise AssertionError unless `myagent-ws ARGS` names real options and parses; return the subcommand."""
    if not args or args[0] in ("--version", "--help"):
        assert args in ([], ["--version"], ["--help"]), args
        return None
    name, rest = args[0], args[1:]
    assert name in cli.commands, f"no subcommand {name!r} (have: {', '.join(sorted(cli.commands))})"
    command = cli.commands[name]
    options: dict[str, click.Parameter] = {}
    for param in command.params:
        for opt in (*getattr(param, "opts", ()), *getattr(param, "secondary_opts", ())):
            if opt.startswith("-"):
                options[opt] = param
    skip = False
    for token in rest:
        if skip:
            skip = False
            continue
        if token == "--":
            break
        if token.startswith("-") and token != "-":
            opt = token.split("=", 1)[0]
            if opt == "--help":
                continue
            assert opt in options, f"`myagent-ws {name}` has no option {opt}"
            param = options[opt]
            skip = isinstance(param, click.Option) and not param.is_flag and not param.count and "=" not in token
    if "--help" not in rest:
        try:
            command.make_context(name, list(rest))
        except click.ClickException as exc:
            raise AssertionError(f"`myagent-ws {' '.join(args)}` does not parse: {exc.format_message()}") from None
    return command


def classify(command: Command) -> str:
    argv = command.argv
    assert argv, f"{command.doc}:{command.line}: empty command in {command.text!r}"
    if argv[0] == "myagent-ws":
        check_myagent_ws(argv[1:])
        if len(argv) == 1 or argv[1] in ("--version", "--help") or "--help" in argv or argv[1] in SAFE:
            return "run"
        assert argv[1] in COVERED_SUBCOMMANDS, f"`myagent-ws {argv[1]}` is neither run here nor covered"
        return "covered"
    if argv[0] in BUILTINS:
        assert all(ASSIGNMENT.match(w) for w in argv[1:]) or argv[0] == "cd", command.text
        return "builtin"
    assert _covered(argv) is not None, (
        f"{command.doc}:{command.line}: `{command.text}` is not checked by any test; "
        "add it to COVERED in tests/test_docs_commands.py with the test that covers it")
    return "covered"


def test_docs_show_commands():
    assert len(ALL) > 20, [c.id for c in ALL]
    docs = {c.doc for c in ALL}
    for doc in ("README.md", "docs/quickstart.md", "docs/writing-agents.md", "docs/operations.md"):
        assert doc in docs


@pytest.mark.parametrize("command", ALL, ids=lambda c: c.id)
def test_every_command_is_checked_somewhere(command):
    classify(command)


def test_covering_tests_exist():
    for tests in [*COVERED_SUBCOMMANDS.values(), *COVERED.values()]:
        for test in tests:
            assert (ROOT / test).exists(), test


def test_option_check_catches_mistakes():
    with pytest.raises(AssertionError, match="no option --wrokers"):
        check_myagent_ws(["server", "agent.py", "--wrokers", "2"])
    with pytest.raises(AssertionError, match="no subcommand"):
        check_myagent_ws(["serve", "agent.py"])
    with pytest.raises(AssertionError, match="does not parse"):
        check_myagent_ws(["server"])  # AGENT_FILE missing
    with pytest.raises(AssertionError, match="does not parse"):
        check_myagent_ws(["server", "a.py", "--log-format", "xml"])
    assert check_myagent_ws(["server", "a.py", "--workers", "4", "--no-reload"]).name == "server"


def _run_env(tmp: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "MYAGENT_LLM", "MYAGENT_MODEL")}
    env.update({"MYAGENT_LLM": "offline", "PWD": str(tmp), "PYTHONPATH": str(ROOT)})
    env.update({k: os.path.expandvars(v.replace("$PWD", str(tmp))) for k, v in extra.items()})
    return env


@pytest.mark.parametrize("doc", sorted({c.doc for c in ALL}))
def test_safe_commands_run(doc, tmp_path):
    """Run the doc's safe myagent-ws commands, in order, in a directory that sees the repository."""
    for name in ("examples", "tests", "docs", "scripts"):
        (tmp_path / name).symlink_to(ROOT / name)
    ran = 0
    for command in (c for c in ALL if c.doc == doc):
        if classify(command) != "run":
            continue
        result = subprocess.run([sys.executable, "-m", "myagent.cli", *command.argv[1:]], cwd=tmp_path,
                                env=_run_env(tmp_path, command.env), stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{command.id}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr, f"{command.id}\n{result.stderr}"
        if command.stdout_to:
            (tmp_path / command.stdout_to).write_text(result.stdout)
        ran += 1
    if ran == 0:
        pytest.skip(f"{doc} shows no command that runs here")
