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
