"""No example passes a secret on a command line, where `ps` shows it to every local user.

The server refuses `--auth-token` and `--state-secret` on its command line (exit 2;
tests/integration/test_hardening.py runs that); this test keeps every file the project
ships to readers (README, docs and their example clients, deploy/, docker/, the
Dockerfile, scripts/, examples/) and the test helpers free of them, so that no reader
copies a command that the server refuses or that leaks a token. Client tokens on a
client's command line (`myagent-ws chat --token`, `?token=` in a URL argument, a token
argument to the example clients) are refused here too: the examples read
MYAGENT_WS_TOKEN instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from myagent.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [ROOT / "README.md", ROOT / "Dockerfile", *sorted((ROOT / "docs").rglob("*.md")),
           *sorted((ROOT / "docs" / "clients").iterdir()), *sorted((ROOT / "deploy").rglob("*")),
           *sorted((ROOT / "docker").rglob("*")), *sorted((ROOT / "scripts").rglob("*.py")),
           *sorted((ROOT / "examples").rglob("*.py")), ROOT / "tests" / "serverproc.py",
           *sorted((ROOT / "tests" / "integration").glob("*.py"))]
SECRET_OPTIONS = [f"--{s.name}" for s in SETTINGS if s.secret]
# `--auth-token VALUE` or `--auth-token=VALUE`, and the same as a YAML/JSON list item or a
# Python string ("--auth-token"); `--auth-tokens-file` and `--state-secret-file` are fine.
OPTION = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, SECRET_OPTIONS)) + r")(?![\w-])")
CLIENT_TOKEN = re.compile(r"myagent-ws (chat|status)\b[^\n]*--token[ =]|\bdocker run\b[^\n]*-e MYAGENT_WS_[A-Z_]*"
                          r"(TOKEN|SECRET)[A-Z_]*=")


def shipped_files() -> list[Path]:
    return [p for p in SHIPPED if p.is_file() and p.suffix not in (".png", ".pyc")]


def test_the_secret_settings_are_the_ones_we_think():
    assert SECRET_OPTIONS == ["--state-secret", "--auth-token"]


FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def commands_of(path: Path) -> str:
    """What a reader may copy: the whole file, or a Markdown file's code blocks (prose may
    name the refused options to say that they are refused)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        return "\n".join(FENCE.findall(text))
    return text


@pytest.mark.parametrize("path", shipped_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_secret_on_a_command_line(path):
    text = commands_of(path)
    allowed = ("tests/integration/test_hardening.py",)  # it runs the refusal on purpose
    if str(path.relative_to(ROOT)) not in allowed:
        found = [m.group(0) for m in OPTION.finditer(text)
                 if not _explains_the_refusal(text, m.start())]
        assert not found, f"{path.name} passes {found[0]} on a command line: use the environment or a file"
    found = CLIENT_TOKEN.search(text)
    assert not found, f"{path.name}: a token on a command line ({found.group(0)!r}): use MYAGENT_WS_TOKEN"


def _explains_the_refusal(text: str, at: int) -> bool:
    """The server's own refusal message, shown in the docs, names the option."""
    end = text.find("\n", at)
    return "is refused on the command line" in text[text.rfind("\n", 0, at) + 1:end if end >= 0 else None]


def test_the_check_catches_what_it_should():
    for bad in ('myagent-ws server a.py --auth-token "$T"', "- --state-secret=abc", '"--auth-token", TOKEN'):
        assert OPTION.search(bad), bad
    for fine in ("--auth-tokens-file /etc/t", "--state-secret-file key", "MYAGENT_WS_AUTH_TOKENS=x"):
        assert not OPTION.search(fine), fine
    assert _explains_the_refusal("x\n❌ --auth-token is refused on the command line, ...\ny", 3)
    assert CLIENT_TOKEN.search('myagent-ws chat ws://x --token "$T"')
    assert CLIENT_TOKEN.search("docker run -e MYAGENT_WS_AUTH_TOKENS=change-me img")
    assert not CLIENT_TOKEN.search("docker run -e MYAGENT_WS_AUTH_TOKENS img")
