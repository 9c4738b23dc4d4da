"""The scale-out recipes in deploy/ agree with each other and with the server's settings.

Parses the YAML (PyYAML; skipped without it) and checks: probes on /ready and /health at
the container's port, a preStop drain and a grace period that covers it plus
--graceful-timeout, the Service reaching the pods, the directory of agents and its
--config mounted where the args say (the config validated as the server does), and the
compose nodes, nginx upstreams and store URL lining up.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from myagent.settings import SETTINGS_BY_NAME
from myagent.supervisor.agent_specs import directory_agents, load_overrides

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install pyyaml)")

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
# After SIGTERM and the drain of running turns: closing clients (up to 5 s), stopping
# sandboxes (--kill-grace), flushing the store (up to 5 s).
SHUTDOWN_MARGIN = 10


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_objects() -> dict[tuple[str, str], dict]:
    objects = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in load_all(path):
            if "kind" in doc and "metadata" in doc:
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def option(args: list[str], name: str) -> str | None:
    """The value of --name in a list of CLI args (``--name=value`` or ``--name value``)."""
    for i, arg in enumerate(args):
        if arg == f"--{name}":
            return args[i + 1]
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


def setting(args: list[str], name: str) -> float:
    value = option(args, name)
    return float(value) if value is not None else float(SETTINGS_BY_NAME[name].default)


def server_container() -> tuple[dict, dict]:
    deployment = k8s_objects()[("Deployment", "myagent-ws")]
    pod = deployment["spec"]["template"]["spec"]
    return deployment, pod


def test_probes_use_ready_and_health_on_the_serving_port():
    _, pod = server_container()
    container = pod["containers"][0]
    args = container["args"]
    port = int(setting(args, "port"))
    assert option(args, "host") == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port in ports.values()

    def probe_port(probe: dict) -> int:
        ref = probe["httpGet"]["port"]
        return ports[ref] if isinstance(ref, str) else ref

    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        if kind in container:
            assert probe_port(container[kind]) == port, kind
    # A store outage (readiness) must not make the liveness probe restart pods: different endpoints.
    assert container["livenessProbe"]["httpGet"]["path"] != "/ready"
    startup = container.get("startupProbe")
    if startup is not None:  # covers loading the agent and starting sandboxes
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        assert budget >= setting(args, "worker-start-timeout")


def test_grace_period_covers_prestop_and_graceful_timeout():
    _, pod = server_container()
    container = pod["containers"][0]
    graceful = setting(container["args"], "graceful-timeout")
    assert graceful == SETTINGS_BY_NAME["graceful-timeout"].convert(SETTINGS_BY_NAME["graceful-timeout"].default), \
        "the manifest's --graceful-timeout drifted from the settings default: update both comments and this test"
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert 1 <= pre_stop <= 15
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + graceful + SHUTDOWN_MARGIN, (grace, pre_stop, graceful)
    assert grace <= pre_stop + graceful + 60, "a grace period far above the drain only delays rollouts"


def test_nodes_share_redis_and_name_themselves():
    objects = k8s_objects()
    _, pod = server_container()
    container = pod["containers"][0]
    store = option(container["args"], "store")
    match = re.match(r"redis://([^:/]+):(\d+)/\d+$", store)
    assert match, store
    redis_service = objects[("Service", match.group(1))]
    assert redis_service["spec"]["ports"][0]["port"] == int(match.group(2))
    redis = objects[("Deployment", match.group(1))]["spec"]["template"]["spec"]["containers"][0]
    assert "noeviction" in redis["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MYAGENT_WS_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    secret = objects[("Secret", "myagent-ws")]
    assert {"MYAGENT_WS_AUTH_TOKENS", "MYAGENT_WS_STATE_SECRET"} <= set(secret["stringData"])
    assert {"secretRef": {"name": "myagent-ws"}} in container["envFrom"]
    # The lease outlives a few renewals (every ttl/3) but fails over quickly.
    assert 3 <= setting(container["args"], "lease-ttl") <= 60


def test_service_reaches_the_pods():
    objects = k8s_objects()
    deployment, pod = server_container()
    service = objects[("Service", "myagent-ws")]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    names = {p["name"] for p in pod["containers"][0]["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in names
    assert service["spec"]["sessionAffinity"] == "ClientIP"


def test_a_directory_of_agents_comes_from_the_configmap():
    objects = k8s_objects()
    _, pod = server_container()
    container = pod["containers"][0]

    def mounted(path: Path) -> dict:
        mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == path)
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        return objects[("ConfigMap", volume["configMap"]["name"])]["data"]

    agents_dir = Path(container["args"][0])
    files = mounted(agents_dir)
    agents = sorted(Path(name).stem for name in files if name.endswith(".py") and not name.startswith("_"))
    assert len(agents) >= 2, "the recipe shows a directory of several agents"
    for name, source in files.items():
        compile(source, name, "exec")  # valid Python
    config = Path(option(container["args"], "config"))
    config_text = mounted(config.parent)[config.name]
    assert load_config_text(config_text, agents).keys() <= set(agents)  # every key validated as the server does
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (DEPLOY / "k8s" / resource).exists(), resource


def load_config_text(text: str, agents: list[str]) -> dict:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as handle:
        handle.write(text)
    try:
        return load_overrides(handle.name, agents)
    finally:
        Path(handle.name).unlink()


def test_compose_serves_a_directory_of_agents():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    node = compose["services"]["node1"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in node["volumes"])
    by_target = {target: DEPLOY / source for source, target in mounts.items()}
    directory = by_target[node["command"][0]]
    agents = [Path(p).stem for p in directory_agents(str(directory))]
    assert len(agents) >= 2, agents
    config = by_target[option(node["command"], "config")]
    assert set(load_overrides(str(config), agents)) <= set(agents)


def test_compose_nodes_match_nginx_upstreams():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    nodes = sorted(name for name in services if re.fullmatch(r"node\d+", name))
    assert len(nodes) >= 2
    nginx_conf = (DEPLOY / "nginx.conf").read_text()
    upstreams = re.findall(r"^\s*server (node\d+):(\d+)", nginx_conf, flags=re.M)
    assert sorted(name for name, _ in upstreams) == nodes
    for name in nodes:
        node = services[name]
        args = node["command"]
        assert option(args, "host") == "0.0.0.0"
        assert option(args, "store") == "redis://redis:6379/0"
        assert {port for _, port in upstreams} == {option(args, "port")}
        assert node["environment"]["MYAGENT_WS_NODE_ID"] == name
        assert "MYAGENT_WS_STATE_SECRET" in node["environment"]
        grace = int(str(node["stop_grace_period"]).rstrip("s"))
        assert grace >= setting(args, "graceful-timeout") + SHUTDOWN_MARGIN
        assert "redis" in node["depends_on"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]
    assert "noeviction" in services["redis"]["command"]
    # One secret for all nodes: the same variable everywhere.
    secrets = {services[name]["environment"]["MYAGENT_WS_STATE_SECRET"] for name in nodes}
    assert len(secrets) == 1


def test_nginx_proxies_websockets():
    conf = (DEPLOY / "nginx.conf").read_text()
    assert re.search(r"proxy_set_header Upgrade \$http_upgrade;", conf)
    assert re.search(r"proxy_set_header Connection \$connection_upgrade;", conf)
    assert "proxy_http_version 1.1;" in conf
    timeout = int(re.search(r"proxy_read_timeout (\d+)s;", conf).group(1))
    heartbeat = float(SETTINGS_BY_NAME["heartbeat-interval"].default)
    ping = float(SETTINGS_BY_NAME["ping-interval"].default)
    assert timeout > 2 * max(heartbeat, ping)


def test_nodes_serve_the_names_clients_use_and_take_secrets_from_the_environment():
    """DNS-rebinding defence: a node bound to 0.0.0.0 serves addresses and localhost; the
    recipes name the rest. Secrets come from a Secret / the environment, never the args."""
    _, pod = server_container()
    args = pod["containers"][0]["args"]
    allowed = [a.split("=", 1)[1] for a in args if a.startswith("--allow-host=")]
    service = k8s_objects()[("Service", "myagent-ws")]["metadata"]["name"]
    assert service in allowed and ".svc.cluster.local" in allowed
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for name, node in compose["services"].items():
        if not re.fullmatch(r"node\d+", name):
            continue
        assert "MYAGENT_WS_ALLOW_HOST" in node["environment"]
        assert {"MYAGENT_WS_AUTH_TOKENS", "MYAGENT_WS_STATE_SECRET"} <= set(node["environment"])
        secret_args = [a for a in node["command"] if a.startswith(("--auth-token", "--state-secret"))]
        assert secret_args == []
    assert not [a for a in args if a.startswith(("--auth-token", "--state-secret"))]


def test_every_name_the_served_agents_declare_is_provided():
    """The recipes serve deploy/agents (compose mounts it, the ConfigMap holds copies); assistant.py
    declares a second API key: each recipe must provide it, or the nodes refuse to start."""
    from myagent.agents.loader import load_agent_file
    from myagent.declared_env import read_declared

    files = sorted((DEPLOY / "agents").glob("*.py"))
    declared = sorted({name for path in files for name in read_declared(path)})
    assert "SERPER_API_KEY" in declared
    for path in files:
        assert load_agent_file(path).env == read_declared(path)
    objects = k8s_objects()
    assert objects[("ConfigMap", "myagent-agents")]["data"] == {p.name: p.read_text() for p in files}
    assert objects[("ConfigMap", "myagent-config")]["data"]["agents.toml"] == (DEPLOY / "agents.toml").read_text()
    secret = objects[("Secret", "myagent-ws")]["stringData"]
    assert all(secret.get(name) for name in declared), "an empty value counts as unset"
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for name, node in compose["services"].items():
        if re.fullmatch(r"node\d+", name):
            assert "./agents:/app/agents:ro" in node["volumes"]
            assert node["command"][0] == "/app/agents"
            for variable in declared:  # required by compose itself: ${NAME:?...}
                assert str(node["environment"][variable]).startswith(f"${{{variable}:?"), variable
