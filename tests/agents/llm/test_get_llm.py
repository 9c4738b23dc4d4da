"""Tests for get_llm / describe_llm_choice in myagent.agents.llm."""

from __future__ import annotations

import pytest

from myagent.agents.llm import LLMError, OfflineLLM, OpenAILLM, ScriptedLLM, describe_llm_choice, get_llm

ENV = ("MYAGENT_LLM", "OPENAI_API_KEY", "OPENAI_BASE_URL", "MYAGENT_MODEL")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def test_unconfigured_is_offline() -> None:
    assert isinstance(get_llm(), OfflineLLM)
    line = describe_llm_choice()
    assert line.startswith("offline demo model") and "OPENAI_API_KEY" in line


@pytest.mark.parametrize("var", ["OPENAI_API_KEY", "OPENAI_BASE_URL"])
def test_configured_is_openai(monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    monkeypatch.setenv(var, "http://127.0.0.1:1/v1" if var == "OPENAI_BASE_URL" else "sk-secret-value")
    llm = get_llm()
    assert isinstance(llm, OpenAILLM) and llm.name == "openai:gpt-4o-mini"
    assert describe_llm_choice().startswith("OpenAI-compatible model gpt-4o-mini")
    assert "secret" not in describe_llm_choice()


def test_env_spec_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("MYAGENT_LLM", "offline")
    assert isinstance(get_llm(), OfflineLLM)
    assert describe_llm_choice() == "offline demo model (chosen by MYAGENT_LLM)"
    path = tmp_path / "s.json"
    path.write_text('{"default": [{"content": "x"}]}', encoding="utf-8")
    monkeypatch.setenv("MYAGENT_LLM", f"scripted:{path}")
    llm = get_llm()
    assert isinstance(llm, ScriptedLLM) and llm.name == f"scripted:{path}"
    assert str(path) in describe_llm_choice()


def test_argument_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYAGENT_LLM", "offline")
    assert isinstance(get_llm("scripted"), ScriptedLLM)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    assert get_llm("openai:local-llama").name == "openai:local-llama"


def test_errors_are_llm_errors(tmp_path) -> None:
    with pytest.raises(LLMError, match="unknown LLM spec 'gpt'"):
        get_llm("gpt")
    with pytest.raises(LLMError, match="file not found"):
        get_llm(f"scripted:{tmp_path / 'nope.json'}")
    with pytest.raises(LLMError, match="OPENAI_API_KEY"):
        get_llm("openai")
    assert "not usable" in describe_llm_choice("openai")
    assert describe_llm_choice("bogus").startswith("no usable LLM")
