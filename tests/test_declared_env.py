"""myagent.declared_env: the environment an agent file declares, read without running it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from myagent.declared_env import DeclarationError, check_names, read_declared, report, unreadable


def declared(tmp_path: Path, source: str) -> tuple[str, ...]:
    path = tmp_path / "agent.py"
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return read_declared(path)


def refused(tmp_path: Path, source: str) -> str:
    with pytest.raises(DeclarationError) as info:
        declared(tmp_path, source)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_env_keyword_of_every_factory_call_and_module_env_add_up(tmp_path):
    assert declared(tmp_path, """
        import myagent
        from myagent import create_react_agent
        ENV = ["WEATHER_API_KEY"]
        agent = create_react_agent(name="a", env=["SERPER_API_KEY", "WEATHER_API_KEY"])
        def create_agent():
            return myagent.create_toolcall_agent(name="b", env=("DB_PASSWORD",))
    """) == ("WEATHER_API_KEY", "SERPER_API_KEY", "DB_PASSWORD")


def test_a_module_level_name_bound_to_a_list_counts(tmp_path):
    assert declared(tmp_path, """
        KEYS = ["SERPER_API_KEY"]
        ENV: list[str] = KEYS
        agent = create_react_agent(name="a", env=KEYS)
    """) == ("SERPER_API_KEY",)


def test_nothing_declared_and_env_none(tmp_path):
    assert declared(tmp_path, "agent = create_react_agent(name='a', env=None)\nx = dict(env=1)\n") == ()


def test_files_that_do_not_parse_declare_nothing_here(tmp_path):
    """The loader reports those (with the line); the front must not explain them twice."""
    assert declared(tmp_path, "def broken(:\n") == ()
    assert read_declared(tmp_path / "missing.py") == ()


def test_a_computed_declaration_is_refused_with_its_line(tmp_path):
    message = refused(tmp_path, """
        import os
        agent = create_react_agent(name="a", env=[os.environ["WHICH"]])
    """)
    assert message.startswith("line 3: env must list the variable names as strings") and "SERPER_API_KEY" in message
    assert refused(tmp_path, "ENV = 'production'\n").startswith("line 1: ENV must list")


def test_names_are_checked(tmp_path):
    assert "is not an environment variable name" in refused(tmp_path, "ENV = ['NOT A NAME']\n")
    assert "server's own settings" in refused(tmp_path, "ENV = ['MYAGENT_WS_AUTH_TOKENS']\n")


def test_check_names():
    assert check_names(None) == ()
    assert check_names(["A", "B", "A"]) == ("A", "B")
    for bad in ("SERPER_API_KEY", b"X", 3, ["1X"], [None], ["X=1"]):
        with pytest.raises(ValueError):
            check_names(bad)
    with pytest.raises(ValueError, match="at most"):
        check_names([f"V{i}" for i in range(65)])


def test_report_says_set_or_missing_never_the_value():
    lines, missing = report(["A", "B", "C"], {"A": "s3cr3t", "B": ""})
    assert lines == ["A: set", "B: empty", "C: missing"] and missing == ["B", "C"]
    assert "s3cr3t" not in "".join(lines)


def test_unreadable_names_what_the_static_read_missed():
    assert unreadable(["A"], ["A", "B"]) is None
    message = unreadable(["A", "C"], ["A"])
    assert message is not None and message.startswith("declares C in code the server does not run")
    assert 'env=["C"]' in message and 'ENV = ["C"]' in message
