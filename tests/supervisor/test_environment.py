import pytest

from myagent.supervisor.environment import sandbox_environment

SOURCE = {"PATH": "/usr/bin", "HOME": "/root", "OPENAI_API_KEY": "sk-test", "MYAGENT_LLM": "offline",
          "MYAGENT_WS_AUTH_TOKENS": "secret", "MYAGENT_WS_STATE_SECRET": "s3", "AWS_SECRET_ACCESS_KEY": "x",
          "DATABASE_URL": "postgres://", "LC_ALL": "C.UTF-8"}


def test_allow_list_passes_what_agents_need():
    env = sandbox_environment(source=SOURCE)
    for key in ("PATH", "HOME", "OPENAI_API_KEY", "MYAGENT_LLM", "LC_ALL"):
        assert env[key] == SOURCE[key]


def test_server_secrets_and_unlisted_variables_never_pass():
    env = sandbox_environment(source=SOURCE)
    for key in ("MYAGENT_WS_AUTH_TOKENS", "MYAGENT_WS_STATE_SECRET", "AWS_SECRET_ACCESS_KEY", "DATABASE_URL"):
        assert key not in env


def test_sandbox_env_adds_named_variables():
    env = sandbox_environment(["DATABASE_URL"], source=SOURCE)
    assert env["DATABASE_URL"] == "postgres://" and "AWS_SECRET_ACCESS_KEY" not in env


def test_relative_script_paths_are_made_absolute(tmp_path, monkeypatch):
    from myagent.supervisor.environment import absolute_llm_paths

    monkeypatch.chdir(tmp_path)
    assert absolute_llm_paths({"MYAGENT_LLM": "scripted:s.json"})["MYAGENT_LLM"] == f"scripted:{tmp_path}/s.json"
    assert absolute_llm_paths({"MYAGENT_LLM": "scripted:/abs.json"})["MYAGENT_LLM"] == "scripted:/abs.json"
    assert absolute_llm_paths({"MYAGENT_LLM": "offline"})["MYAGENT_LLM"] == "offline"


# Declared names ---------------------------------------------------------------------------------
def agent_file(tmp_path, declaration: str) -> str:
    path = tmp_path / "agent.py"
    path.write_text(f"from myagent import create_react_agent\nagent = create_react_agent(name='a'{declaration})\n")
    return str(path)


def test_prepare_passes_exactly_the_declared_names_and_the_allow_list(tmp_path):
    from myagent.supervisor.environment import prepare

    source = {**SOURCE, "SERPER_API_KEY": "serper", "GITHUB_TOKEN": "ghp"}
    prepared = prepare(agent_file(tmp_path, ", env=['SERPER_API_KEY']"), ["DATABASE_URL"], source)
    assert prepared.declared == ("SERPER_API_KEY",)
    assert prepared.env["SERPER_API_KEY"] == "serper" and prepared.env["DATABASE_URL"] == "postgres://"
    assert set(prepared.env) == set(sandbox_environment(["DATABASE_URL"], source)) | {"SERPER_API_KEY"}
    assert "GITHUB_TOKEN" not in prepared.env and "MYAGENT_WS_AUTH_TOKENS" not in prepared.env


def test_prepare_refuses_a_missing_or_empty_declared_variable_in_one_line(tmp_path):
    from myagent.supervisor.environment import prepare
    from myagent.supervisor.exceptions import AgentFileError

    path = agent_file(tmp_path, ", env=['SERPER_API_KEY', 'WEATHER_API_KEY']")
    with pytest.raises(AgentFileError) as info:
        prepare(path, (), {**SOURCE, "WEATHER_API_KEY": ""})
    message = str(info.value)
    assert message.startswith(f"{path} declares SERPER_API_KEY, WEATHER_API_KEY, not set in the server's environment")
    assert "\n" not in message and "export SERPER_API_KEY=..." in message


def test_prepare_refuses_an_unreadable_declaration_and_server_names(tmp_path):
    from myagent.supervisor.environment import prepare
    from myagent.supervisor.exceptions import AgentFileError, ConfigError

    with pytest.raises(AgentFileError, match="line 2: env must list the variable names"):
        prepare(agent_file(tmp_path, ", env=[name for name in 'AB']"), (), SOURCE)
    with pytest.raises(ConfigError, match="--sandbox-env: MYAGENT_WS_STATE_SECRET is one of the server's own"):
        prepare(agent_file(tmp_path, ""), ["MYAGENT_WS_STATE_SECRET"], SOURCE)


def test_server_settings_never_pass_even_when_named():
    assert "MYAGENT_WS_STATE_SECRET" not in sandbox_environment(["MYAGENT_WS_STATE_SECRET"], source=SOURCE)


def test_withheld_names_credentials_only_and_not_the_servers_own():
    from myagent.supervisor.environment import withheld

    source = {**SOURCE, "GITHUB_TOKEN": "g", "SECRET_KEY": "d", "DB_PASSWORD": "p", "GPG_KEY": "public",
              "SORT_KEY": "x", "MYAGENT_WS_TOKEN": "t", "SERPER_API_KEY": "s", "GOOGLE_APPLICATION_CREDENTIALS": "/f"}
    passed = set(sandbox_environment(source=source)) | {"SERPER_API_KEY"}
    assert withheld(passed, source) == ["AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "GITHUB_TOKEN",
                                        "GOOGLE_APPLICATION_CREDENTIALS", "SECRET_KEY"]


def test_start_lines_name_without_values():
    from myagent.supervisor.environment import HINT_NAMES, declared_line, withheld, withheld_hint

    source = {"SERPER_API_KEY": "serper-value", "GITHUB_TOKEN": "ghp-value", "AWS_SECRET_ACCESS_KEY": "aws-value"}
    lines = [declared_line(["SERPER_API_KEY"]), withheld_hint(withheld(["PATH", "SERPER_API_KEY"], source))]
    assert lines[0] == "🔑 Passed to sandboxes as the agent file declares: SERPER_API_KEY"
    assert lines[1].startswith("🔒 Withheld from sandboxes (they look like credentials): "
                               "AWS_SECRET_ACCESS_KEY, GITHUB_TOKEN. A tool that needs one: declare it")
    assert "--sandbox-env NAME" in lines[1] and "value" not in "".join(lines)
    assert declared_line([]) == "" and withheld(["PATH"], {"PATH": "/bin"}) == []
    many = withheld_hint(withheld([], {f"K{i}_TOKEN": "v" for i in range(HINT_NAMES + 3)}))
    assert "and 3 more" in many


def test_otel_variables_reach_sandboxes_but_not_the_collectors_credentials():
    source = {**SOURCE, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SERVICE_NAME": "bot",
              "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s3cret",
              "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "api-key=s3cret"}
    env = sandbox_environment(source=source)
    for key in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_BSP_SCHEDULE_DELAY"):
        assert env[key] == source[key]
    assert "OTEL_EXPORTER_OTLP_HEADERS" not in env and "OTEL_EXPORTER_OTLP_TRACES_HEADERS" not in env
    # An operator who accepts that agent code can read them passes them by name.
    assert sandbox_environment(["OTEL_EXPORTER_OTLP_HEADERS"], source=source)["OTEL_EXPORTER_OTLP_HEADERS"]
