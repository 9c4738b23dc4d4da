"""Several agents on one server, without processes: names, the --config file, the reload plan,
routing of upgrades, and how /ready, /status, /agents and /metrics show each agent.

Servers are real ``Server`` objects that are never started (their pools get hand-made
``Sandbox`` records), asked exactly as websockets would ask them.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.datastructures import Headers
from websockets.http11 import Request

from myagent.settings import config_from
from myagent.supervisor.agent_specs import AgentSpec, load_overrides, parse_targets, with_overrides
from myagent.supervisor.exceptions import ConfigError
from myagent.supervisor.reloader import plan
from myagent.supervisor.sandboxes import READY, Sandbox
from myagent.supervisor.server import Server


def touch(path: Path, text: str = "agent = None\n") -> Path:
    path.write_text(text)
    return path


# Names -----------------------------------------------------------------------------------

def test_files_names_and_directories(tmp_path):
    a = touch(tmp_path / "a.py")
    d = tmp_path / "team"
    d.mkdir()
    touch(d / "weather.py"), touch(d / "_helpers.py"), touch(d / ".hidden.py"), touch(d / "notes.txt")
    specs, dirs = parse_targets([str(a), f"other={a}", str(d)])
    assert [(s.name, Path(s.path).name) for s in specs] == [("a", "a.py"), ("other", "a.py"),
                                                          ("weather", "weather.py")]
    assert dirs == [str(d)]
    assert all(Path(s.path).is_absolute() for s in specs)


@pytest.mark.parametrize("targets, message", [
    (["missing.py"], "Agent file not found: missing.py"),
    (["a.py", "a.py"], "two agents are named 'a'"),
    (["bad name=a.py"], "agent name 'bad name'"),
    (["status=a.py"], "one of the server's own paths"),
    (["x=emptydir"], "NAME=PATH names one agent file, not a directory"),
    (["emptydir"], "holds no agent file"),
])
def test_bad_targets_get_one_clear_error(tmp_path, monkeypatch, targets, message):
    monkeypatch.chdir(tmp_path)
    touch(tmp_path / "a.py")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        parse_targets(targets)
    assert "\n" not in str(info.value)


# --config ---------------------------------------------------------------------------------

def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "agents.toml"
    path.write_text(text)
    return str(path)


def test_overrides_are_converted_by_the_settings_parsers(tmp_path):
    path = write_config(tmp_path, '[agents.a]\nworkers = 3\nmax-memory = "256MiB"\nmax-cpu = 50\n'
                                  'sandbox-env = ["X", "Y"]\n[agents.b]\nsessions-per-worker = 1\n')
    overrides = load_overrides(path, ["a", "b"])
    assert overrides == {"a": {"workers": 3, "max_memory": 256 << 20, "max_cpu": 50.0, "sandbox_env": ("X", "Y")},
                         "b": {"sessions_per_worker": 1}}
    base = config_from({"workers": 1, "max_memory": "1GiB"})
    a, b = with_overrides([AgentSpec("a", "/x/a.py"), AgentSpec("b", "/x/b.py")], overrides)
    assert a.config(base).workers == 3 and a.config(base).max_memory == 256 << 20
    assert b.config(base).workers == 1 and b.config(base).max_memory == 1 << 30  # the CLI stays the default
    assert a.config(base).agent_file == "/x/a.py"


@pytest.mark.parametrize("text, message", [
    ("[agents.a]\nwokers = 2\n", "[agents.a] unknown key 'wokers'; per-agent keys: workers, "),
    ("[agents.a]\nport = 2\n", "unknown key 'port' (a server-wide option: set it on the command line)"),
    ('[agents.a]\nworkers = "two"\n', "[agents.a] workers: 'two' is not an integer"),
    ("[agents.a]\nworkers = true\n", "workers: True is not an integer"),
    ('[agents.a]\nmax-memory = "lots"\n', "--max-memory lots: not a size"),
    ("[agents.a]\nworkers = -1\n", "--workers -1: out of range (allowed: 0 to 1024)"),
    ('[agents.a]\ncpu-window = "x"\n', "[agents.a] cpu-window: 'x' is not a number of seconds"),
    ("[agents.a]\nmax-memory = 512\n", "did you mean 512MiB?"),
    ("[agents.zzz]\nworkers = 1\n", "[agents.zzz] names no served agent (served: a)"),
    ("[agents.a]\nworkers = 1\nworkers = 2\n", "not valid TOML"),
    ("workers = 1\n", "unknown top-level key 'workers'"),
    ("[agents]\na = 1\n", "[agents.a] must be a table of options"),
])
def test_bad_config_gets_one_clear_error(tmp_path, text, message):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_overrides(path, ["a"])
    assert message in str(info.value) and str(info.value).startswith(f"--config {path}")


def test_config_for_a_directory_may_name_agents_not_there_yet(tmp_path):
    path = write_config(tmp_path, "[agents.later]\nworkers = 2\n")
    assert load_overrides(path, ["a"], strict=False) == {"later": {"workers": 2}}


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="--config .*nope.toml: No such file"):
        load_overrides(str(tmp_path / "nope.toml"), ["a"])


# The reload plan -----------------------------------------------------------------------

def test_only_the_changed_agent_reloads():
    files = {"a": "/d/a.py", "b": "/d/b.py", "c": "/e/c.py"}
    assert plan({"/d/a.py"}, files, {}) == ({"a"}, [], set())


def test_a_helper_module_reloads_the_agents_beside_it():
    files = {"a": "/d/a.py", "b": "/d/b.py", "c": "/e/c.py"}
    assert plan({"/d/_tools.py"}, files, {}) == ({"a", "b"}, [], set())


def test_a_directory_adds_and_retires_agents_without_touching_the_others():
    files = {"a": "/d/a.py", "b": "/d/b.py"}
    reload, added, retired = plan({"/d/b.py", "/d/new.py"}, files, {"/d": ["/d/a.py", "/d/new.py"]})
    assert (reload, added, retired) == (set(), ["/d/new.py"], {"b"})


# Routing and the ops endpoints -------------------------------------------------------------

def make_server(tmp_path: Path, names=("a", "b", "c"), **options) -> Server:
    specs = [AgentSpec(n, str(touch(tmp_path / f"{n}.py"))) for n in names]
    config = config_from({"store": "memory:", "workers": 1, **options}, agent_file=specs[0].path)
    server = Server(config, announce=lambda line: None, agents=specs,
                    overrides={"b": {"workers": 3, "max_restarts": 1}})
    for i, unit in enumerate(server.agents):
        unit.pool.agent = {"name": f"agent-{unit.name}", "description": "", "tools": []}
        unit.pool.sandboxes[1] = Sandbox(id=1, pid=1000 + i, state=READY)
    return server


def upgrade(server: Server, path: str):
    headers = Headers({"Host": "127.0.0.1:8080", "Upgrade": "websocket", "Connection": "Upgrade"})
    connection = SimpleNamespace(remote_address=("127.0.0.1", 5555))
    return connection, server.http.process_request(connection, Request(path, headers))


def get(server: Server, path: str):
    connection = SimpleNamespace(remote_address=("127.0.0.1", 5555))
    return server.http.process_request(connection, Request(path, Headers({"Host": "127.0.0.1:8080"})))


def test_each_agent_has_its_own_pool_options_and_budget(tmp_path):
    server = make_server(tmp_path)
    a, b, _ = server.agents
    assert (a.pool.size, b.pool.size) == (1, 3)
    assert a.pool.policy is not b.pool.policy and b.pool.policy.max_restarts == 1
    assert a.registry is not b.registry and a.metrics is not b.metrics


def test_upgrades_are_routed_by_path_and_unknown_paths_get_404(tmp_path):
    server = make_server(tmp_path)
    connection, response = upgrade(server, "/b?token=x")
    assert response is None and connection.agent_unit is server.agents.units["b"]
    for path in ("/", "/nope", "/a/b"):
        _, response = upgrade(server, path)
        assert response.status_code == 404
        assert orjson.loads(response.body)["agents"] == ["/a", "/b", "/c"]
    assert server.refused_unrouted["404"] == 3


def test_one_agent_answers_slash_and_its_name(tmp_path):
    server = make_server(tmp_path, names=("solo",))
    for path in ("/", "/solo"):
        connection, response = upgrade(server, path)
        assert response is None and connection.agent_unit.name == "solo"
    assert upgrade(server, "/other")[1].status_code == 404


def test_a_refused_token_is_counted_for_the_agent_it_asked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("MYAGENT_WS_AUTH_TOKENS", "")
    server = make_server(tmp_path, auth_token="secret-token-1")
    _, response = upgrade(server, "/c")
    assert response.status_code == 401
    _, response = upgrade(server, "/nope")
    assert response.status_code == 401  # the token first: a stranger learns no agent names
    assert server.agents.units["c"].metrics.connections_refused["401"] == 1
    assert server.refused_unrouted["401"] == 1


def test_ready_names_the_agents_that_cannot_take_sessions(tmp_path):
    server = make_server(tmp_path)
    assert server.readiness() == (True, "ok")
    server.agents.units["b"].pool.unavailable_reason = "restart budget exhausted: 2 restarts in 60s"
    server.agents.units["c"].pool.sandboxes.clear()
    response = get(server, "/ready")
    assert response.status_code == 503
    assert orjson.loads(response.body)["reason"] == ("agent b: restart budget exhausted: 2 restarts in 60s; "
                                                     "agent c: no sandbox is ready")


def test_status_and_agents_list_every_agent_with_its_sandboxes(tmp_path):
    server = make_server(tmp_path)
    status = orjson.loads(get(server, "/status").body)
    assert [(s["name"], s["path"], s["agent"]["name"], [x["pid"] for x in s["sandboxes"]])
            for s in status["agents"]] == [("a", "/a", "agent-a", [1000]), ("b", "/b", "agent-b", [1001]),
                                           ("c", "/c", "agent-c", [1002])]
    assert status["agents"][1]["limits"]["workers"] == 1 and status["agent"]["name"] == "agent-a"
    listed = orjson.loads(get(server, "/agents").body)
    assert [a["name"] for a in listed["agents"]] == ["a", "b", "c"] and listed["default"] is None


def test_metrics_label_every_agent_series(tmp_path):
    server = make_server(tmp_path)
    server.agents.units["b"].metrics.sessions_created = 7
    server.agents.units["b"].pool.restarts_by_reason["SANDBOX_CRASHED"] = 2
    families = {f.name: f for f in text_string_to_metric_families(get(server, "/metrics").body.decode())}
    created = {s.labels["agent"]: s.value for s in families["myagent_ws_sessions_created"].samples
               if s.name.endswith("_total")}
    assert created == {"a": 0, "b": 7, "c": 0}
    restarts = [(s.labels["agent"], s.labels["reason"], s.value) for s in families["myagent_ws_sandbox_restarts"].samples
                if s.name.endswith("_total")]
    assert restarts == [("b", "SANDBOX_CRASHED", 2)]
    unlabelled = [(f.name, s.name) for f in families.values() if f.name.startswith("myagent_ws_")
                  and not f.name.startswith("myagent_ws_store_") for s in f.samples if "agent" not in s.labels]
    assert not unlabelled


def test_the_snapshot_of_a_served_directory_sees_its_files(tmp_path):
    from myagent.supervisor.reloader import changed_files, snapshot_dirs

    served = tmp_path / "agents"
    served.mkdir()
    one = touch(served / "one.py")
    before = snapshot_dirs({str(served)})
    assert set(before) == {str(one)}
    one.write_text("agent = 1\n")
    added = touch(served / "two.py")
    assert changed_files(before, snapshot_dirs({str(served)})) == {str(one), str(added)}


def test_log_records_name_the_agent_of_the_task(tmp_path):
    import asyncio
    import logging

    from myagent.logs import AgentFilter

    server = make_server(tmp_path, names=("a", "b"))
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep()
    handler.addFilter(AgentFilter())
    log = logging.getLogger("test.agents.context")
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    async def work():
        log.info("inside")

    async def main():
        await server.agents.units["b"].run_task(work())
        log.info("outside")

    try:
        asyncio.run(main())
    finally:
        log.removeHandler(handler)
    assert [(r.getMessage(), r.agent, r.agent_tag) for r in records] == [("inside", "b", "[b] "),
                                                                         ("outside", None, "")]


def test_one_agent_file_logs_as_before(tmp_path):
    server = make_server(tmp_path, names=("solo",))
    assert server.agents.first.log_name == "" and server.agents.first.single


@pytest.mark.parametrize("names, key", [(("solo",), "declared-solo"), (("a", "b"), "a")])
def test_stored_sessions_are_keyed_by_the_declared_name_alone_else_by_the_route(tmp_path, names, key):
    import asyncio

    server = make_server(tmp_path, names=names)
    unit = server.agents.first

    async def loaded():  # the zygote's answer, without a zygote
        return {"name": f"declared-{unit.name}", "tools": []}

    unit.pool.start = loaded
    asyncio.run(unit.start())
    session, _ = unit.registry.create("anonymous")
    assert unit.registry.agent == key and session.record().agent == key


def test_a_removed_file_retires_its_agent_alone(tmp_path):
    import asyncio

    served = tmp_path / "agents"
    served.mkdir()
    specs = [AgentSpec(n, str(touch(served / f"{n}.py"))) for n in ("a", "b")]
    config = config_from({"store": "memory:", "workers": 1, "graceful_timeout": 1}, agent_file=specs[0].path)
    server = Server(config, announce=lambda line: None, agents=specs, directories=[str(served)])
    a = server.agents.units["a"]
    a.pool.sandboxes[1] = Sandbox(id=1, pid=4242, state=READY)

    async def main():
        server.live.seen = server.live.snapshot()
        (served / "b.py").unlink()
        await server.live.reload("changed")

    asyncio.run(main())
    assert list(server.agents.units) == ["a"] and a.reloads == 0 and 1 in a.pool.sandboxes
    assert server.agents.route("/b") is None and server.agents.route("/") is a  # alone now
    assert server.readiness() == (True, "ok")
