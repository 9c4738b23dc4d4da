"""HTTP endpoints of the front process, without processes or sockets.

A real ``Server`` is built but never started: its pool gets hand-made
``Sandbox`` records, its router fake connections, its metrics direct calls.
Then every route is asked through ``HttpEndpoints`` exactly as websockets
would ask it.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from websockets.datastructures import Headers
from websockets.http11 import Request

from myagent import __version__
from myagent.settings import config_from
from myagent.supervisor import metrics as metrics_mod
from myagent.supervisor.metrics import FIRST_EVENT_BUCKETS, TURN_BUCKETS, Histogram, Metrics
from myagent.supervisor.sandboxes import DRAINING, READY, Sandbox
from myagent.supervisor.server import Server

ROOT = Path(__file__).resolve().parents[2]
STATUS_DOC = (ROOT / "docs" / "status.md").read_text()


def make_server(**options) -> Server:
    config = config_from({"store": "memory:", "workers": 2, **options}, agent_file="/srv/agent.py")
    server = Server(config, announce=lambda line: None)
    server.pool.agent = {"name": "fake-agent", "description": "d", "tools": [{"name": "get_weather"}]}
    server.pool.sandboxes[1] = Sandbox(id=1, pid=4242, state=READY, rss=50 << 20, cpu=12.5)
    server.pool.sandboxes[2] = Sandbox(id=2, pid=4243, state=DRAINING, rss=70 << 20, cpu=99.0)
    server.pool.sandboxes[1].hosted.update({"s_a": None, "s_b": None})
    return server


class FakeConn:
    def __init__(self, cid: str, queued: int, sent: int) -> None:
        self.id = cid
        self.queued_bytes = queued
        self.sent = sent


def get(server: Server, path: str, *, upgrade: bool = False, status_port: bool = False,
        host: str = "127.0.0.1:8080"):
    headers = Headers({"Host": host})
    if upgrade:
        headers["Upgrade"] = "websocket"
        headers["Connection"] = "Upgrade"
    request = Request(path, headers)
    connection = SimpleNamespace(remote_address=("127.0.0.1", 5555))
    handler = server.http.process_status_request if status_port else server.http.process_request
    return handler(connection, request)


def as_json(response) -> dict:
    return orjson.loads(response.body)


def metric_families(server: Server) -> dict:
    response = get(server, "/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(response.body.decode())}


def sample(families: dict, family: str, name: str | None = None, **labels) -> float:
    for s in families[family].samples:
        if s.name == (name or family) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {name or family} {labels} in {families[family].samples}")


# /health /ready -------------------------------------------------------------------------


def test_health():
    response = get(make_server(), "/health")
    assert response.status_code == 200
    assert as_json(response) == {"status": "ok"}
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"


def test_ready_when_a_sandbox_is_ready():
    response = get(make_server(), "/ready")
    assert response.status_code == 200
    assert as_json(response) == {"ready": True, "reason": "ok"}


def test_not_ready_while_draining():
    server = make_server()
    server.router.draining = True
    response = get(server, "/ready")
    assert response.status_code == 503
    assert as_json(response) == {"ready": False, "reason": "draining"}


def test_not_ready_when_the_restart_budget_is_spent():
    server = make_server()
    server.pool.unavailable_reason = "restart budget exhausted: 1 restarts in 60s (last: SANDBOX_CRASHED)"
    response = get(server, "/ready")
    assert response.status_code == 503
    assert "restart budget" in as_json(response)["reason"]


def test_not_ready_without_a_ready_sandbox():
    server = make_server()
    server.pool.sandboxes.clear()
    assert get(server, "/ready").status_code == 503


def test_query_strings_are_ignored():
    assert get(make_server(), "/health?probe=1").status_code == 200


# /status --------------------------------------------------------------------------------


def flatten(doc: dict, prefix: str = "") -> set[str]:
    """Documented field paths of the /status document (lists as ``name[].field``)."""
    out = set()
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and key not in DYNAMIC_OBJECTS:
            out |= flatten(value, path + ".")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            out |= {path} | flatten(value[0], path + "[].")
        else:
            out.add(path)
    return out


# Objects keyed by reason / code / event: their keys are data, not fields.
DYNAMIC_OBJECTS = {"by_reason", "connections_refused", "turns_ended", "interrupted_by_reason", "errors_by_code",
                   "sandbox_frames_rejected"}


def test_status_shape_and_every_field_is_documented():
    server = make_server()
    server.router.connections = {"c1": FakeConn("c1", 100, 7), "c2": FakeConn("c2", 23, 3)}
    server.metrics.connections_refused["401"] += 1
    server.metrics.turn_done("agent.interrupted", "CANCELLED", 0.5)
    server.pool.losses.append(Sandbox(id=7, pid=99, state="dead", kill_reason=None, exit_code=6, exited=True,
                                      lost_at=0.0))
    # The current zygote's environment: /status shows its names, never a value.
    server.pool.zygotes.current = SimpleNamespace(pid=4000, env={"PATH": "/bin", "SERPER_API_KEY": "serper-value"},
                                                  declared=("SERPER_API_KEY",))
    response = get(server, "/status")
    assert response.status_code == 200
    status = as_json(response)
    assert status["version"] == __version__
    assert status["ready"] is True and status["ready_reason"] == "ok" and status["draining"] is False
    assert status["agent"] == {"name": "fake-agent", "description": "d", "tools": ["get_weather"],
                               "file": "/srv/agent.py", "env": ["SERPER_API_KEY"]}
    assert status["sandbox_env"] == ["PATH", "SERPER_API_KEY"] and b"serper-value" not in response.body
    assert status["connections"] == 2
    assert status["outbound_queued_bytes"] == 123
    assert status["totals"]["events_sent"] == 10
    assert status["totals"]["connections_refused"] == {"401": 1}
    assert status["totals"]["interrupted_by_reason"] == {"CANCELLED": 1}
    by_id = {s["id"]: s for s in status["sandboxes"]}
    assert by_id[1]["pid"] == 4242 and by_id[1]["sessions"] == 2 and by_id[1]["state"] == "ready"
    assert by_id[1]["rss_bytes"] == 50 << 20 and by_id[1]["cpu_percent"] == 12.5
    assert by_id[2]["state"] == "draining"
    [loss] = status["recent_losses"]
    assert loss["reason"] == "SANDBOX_CRASHED" and loss["exit"] == "exit 6 (agent code raised SystemExit)"
    assert status["limits"]["max_memory"] == 1 << 30 and status["limits"]["max_cpu"] == 0.0

    documented = set(re.findall(r"^\| `([a-z_\[\].0-9]+)` \|", STATUS_DOC, re.MULTILINE))
    fields = flatten(status)
    # An agent's section repeats the top-level per-agent fields: documented once, at the top.
    missing = sorted(f for f in fields - documented if f.removeprefix("agents[].") not in documented)
    assert not missing, f"/status fields missing from docs/status.md: {missing}"
    stale = sorted(f for f in documented if "." in f and f.split(".")[0] in status and f not in fields
                   and not f.startswith("sandboxes[]"))
    assert not stale, f"docs/status.md documents fields /status does not have: {stale}"


def test_status_counts_sessions_in_one_pass():
    server = make_server()
    registry = server.router.registry
    conn = FakeConn("c1", 0, 0)
    for i in range(5):
        session, _ = registry.create("anonymous")
        session.connection = conn if i < 3 else None
        if i == 0:
            session.turn = SimpleNamespace(id="t1")
    sessions = as_json(get(server, "/status"))["sessions"]
    assert sessions == {"total": 5, "active": 3, "detached": 2, "turns_running": 1, "messages_queued": 0}


# /metrics -------------------------------------------------------------------------------

EXPECTED_FAMILIES = {
    "myagent_ws_build_info", "myagent_ws_ready", "myagent_ws_draining", "myagent_ws_agent_unavailable",
    "myagent_ws_connections_opened", "myagent_ws_connections_closed", "myagent_ws_connections_refused",
    "myagent_ws_connections", "myagent_ws_outbound_queue_bytes", "myagent_ws_events_sent",
    "myagent_ws_frames_received", "myagent_ws_sessions_created", "myagent_ws_sessions_closed",
    "myagent_ws_sessions_restored", "myagent_ws_sessions", "myagent_ws_turns_started", "myagent_ws_turns_ended",
    "myagent_ws_turns_interrupted", "myagent_ws_turns_running", "myagent_ws_turn_duration_seconds",
    "myagent_ws_time_to_first_event_seconds", "myagent_ws_errors", "myagent_ws_sandbox_restarts",
    "myagent_ws_sandbox_restarts_recent", "myagent_ws_sandboxes", "myagent_ws_sandbox_rss_bytes",
    "myagent_ws_sandbox_cpu_percent", "myagent_ws_sandbox_sessions", "myagent_ws_sandbox_turns",
    "myagent_ws_sandbox_max_memory_bytes", "myagent_ws_sandbox_max_cpu_percent", "myagent_ws_reloads",
    "process_resident_memory_bytes",
}


def test_metrics_families_are_present():
    families = metric_families(make_server())
    missing = EXPECTED_FAMILIES - set(families)
    assert not missing, missing
    assert families["myagent_ws_turn_duration_seconds"].type == "histogram"
    assert families["myagent_ws_turns_started"].type == "counter"
    assert families["myagent_ws_connections"].type == "gauge"


def test_every_metric_is_documented():
    documented = set(re.findall(r"^\| `(myagent_ws_[a-z_]+)` \|", STATUS_DOC, re.MULTILINE))
    families = metric_families(make_server())
    for name in EXPECTED_FAMILIES - {"process_resident_memory_bytes"}:
        family = families[name]
        exposed = name + ("_total" if family.type == "counter" else "")
        assert exposed in documented, f"{exposed} is not in docs/status.md"


def test_metrics_values_follow_the_counters():
    server = make_server()
    m = server.metrics
    before = metric_families(server)
    assert sample(before, "myagent_ws_turns_started", "myagent_ws_turns_started_total") == 0
    assert sample(before, "myagent_ws_ready") == 1

    server.router.connections = {"c1": FakeConn("c1", 300, 40)}
    m.connections_opened += 3
    m.connections_closed += 2
    m.events_sent_closed += 60
    m.connections_refused["max_connections"] += 2
    m.sessions_created += 4
    m.turns_started += 2
    m.first_event(0.003)
    m.turn_done("agent.final_answer", None, 0.2)
    m.turn_done("agent.error", "LLM_ERROR", 7.0)
    m.error("SESSION_NOT_FOUND")
    server.pool.restarts_by_reason["MEMORY_LIMIT"] = 1
    after = metric_families(server)

    def total(family, **labels):
        return sample(after, family, family + "_total", **labels)

    assert total("myagent_ws_connections_opened") == 3
    assert total("myagent_ws_connections_closed") == 2
    assert total("myagent_ws_connections_refused", reason="max_connections") == 2
    assert sample(after, "myagent_ws_connections") == 1
    assert sample(after, "myagent_ws_outbound_queue_bytes") == 300
    assert total("myagent_ws_events_sent") == 100
    assert total("myagent_ws_sessions_created") == 4
    assert total("myagent_ws_turns_started") == 2
    assert total("myagent_ws_turns_ended", event="agent.final_answer") == 1
    assert total("myagent_ws_turns_ended", event="agent.error") == 1
    assert total("myagent_ws_errors", code="LLM_ERROR") == 1
    assert total("myagent_ws_errors", code="SESSION_NOT_FOUND") == 1
    assert total("myagent_ws_sandbox_restarts", reason="MEMORY_LIMIT") == 1
    assert sample(after, "myagent_ws_sandbox_rss_bytes", sandbox="1") == 50 << 20
    assert sample(after, "myagent_ws_sandbox_cpu_percent", sandbox="2") == 99.0
    assert sample(after, "myagent_ws_sandbox_sessions", sandbox="1") == 2
    assert sample(after, "myagent_ws_sandboxes", state="draining") == 1

    hist = "myagent_ws_turn_duration_seconds"
    assert sample(after, hist, hist + "_count") == 2
    assert sample(after, hist, hist + "_sum") == pytest.approx(7.2)
    assert sample(after, hist, hist + "_bucket", le="0.25") == 1
    assert sample(after, hist, hist + "_bucket", le="5.0") == 1
    assert sample(after, hist, hist + "_bucket", le="10.0") == 2
    assert sample(after, hist, hist + "_bucket", le="+Inf") == 2
    first = "myagent_ws_time_to_first_event_seconds"
    assert sample(after, first, first + "_bucket", le="0.0025") == 0
    assert sample(after, first, first + "_bucket", le="0.005") == 1


def test_every_server_has_its_own_registry():
    one, two = make_server(), make_server()
    assert one.http.registry is not two.http.registry
    one.metrics.turns_started += 5
    assert sample(metric_families(one), "myagent_ws_turns_started", "myagent_ws_turns_started_total") == 5
    assert sample(metric_families(two), "myagent_ws_turns_started", "myagent_ws_turns_started_total") == 0
    # Nothing was registered in prometheus-client's process-wide default registry.
    assert REGISTRY.get_sample_value("myagent_ws_turns_started_total") is None


def test_draining_and_unavailable_show_in_metrics():
    server = make_server()
    server.router.draining = True
    server.pool.unavailable_reason = "restart budget exhausted"
    families = metric_families(server)
    assert sample(families, "myagent_ws_ready") == 0
    assert sample(families, "myagent_ws_draining") == 1
    assert sample(families, "myagent_ws_agent_unavailable") == 1


# Metrics: the hot path stays plain ------------------------------------------------------


def test_metrics_module_does_not_use_prometheus():
    source = Path(metrics_mod.__file__).read_text()
    assert "prometheus" not in source.split('"""', 2)[2]


def test_histogram_buckets_are_cumulative_with_le_semantics():
    hist = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 3.0):
        hist.observe(value)
    assert hist.cumulative() == [(0.1, 2), (1.0, 4), (float("inf"), 5)]
    assert hist.count == 5 and hist.sum == pytest.approx(4.65)


def test_bucket_bounds_are_sorted():
    assert list(TURN_BUCKETS) == sorted(TURN_BUCKETS)
    assert list(FIRST_EVENT_BUCKETS) == sorted(FIRST_EVENT_BUCKETS)


def test_latency_summary_is_cached_until_a_new_sample():
    m = Metrics()
    assert m.latency_summary()["samples"] == 0
    m.turn_done("agent.final_answer", None, 0.1)
    m.first_event(0.01)
    first = m.latency_summary()
    assert first["turn_p50_ms"] == 100.0 and first["first_event_p50_ms"] == 10.0
    first["samples"] = 99  # callers get a copy
    assert m.latency_summary()["samples"] == 1
    m.turn_done("agent.final_answer", None, 0.3)
    assert m.latency_summary()["turn_p99_ms"] == 300.0


# Pages and static files -----------------------------------------------------------------


def test_console_is_served_at_root_without_upgrade():
    response = get(make_server(), "/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    body = response.body.decode()
    assert "static/console.js" in body and "static/console.css" in body
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_dashboard_and_static_files():
    server = make_server()
    dashboard = get(server, "/dashboard")
    assert dashboard.status_code == 200 and b"static/dashboard.js" in dashboard.body
    for name, kind in (("console.js", "text/javascript"), ("dashboard.js", "text/javascript"),
                       ("console.css", "text/css")):
        response = get(server, "/static/" + name)
        assert response.status_code == 200, name
        assert response.headers["Content-Type"].startswith(kind)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert len(response.body) > 500


def test_vendored_library_and_page_scripts_are_served():
    server = make_server()
    for name in ("vendor/markdown-it.min.js", "markdown.js", "token.js"):
        response = get(server, "/static/" + name)
        assert response.status_code == 200, name
        assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    # The licence and the notes sit beside the library in the package; they are not served.
    for name in ("vendor/markdown-it.LICENSE", "vendor/README.md", "vendor/../console.js"):
        assert get(server, "/static/" + name).status_code == 404, name


def test_package_data_ships_every_static_file():
    # What pip installs: every file of myagent/static matches a package-data pattern.
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["myagent"]
    static = root / "myagent" / "static"
    files = [f.relative_to(root / "myagent").as_posix() for f in static.rglob("*") if f.is_file()]
    assert "static/vendor/markdown-it.min.js" in files and "static/vendor/markdown-it.LICENSE" in files
    unshipped = [f for f in files if not any(fnmatch.fnmatch(f, p) and f.count("/") == p.count("/") for p in patterns)]
    assert unshipped == []


@pytest.mark.parametrize("path", ["/static/", "/static/nope.js", "/static/../http.py", "/static/%2e%2e/http.py",
                                  "/static//etc/passwd", "/no/such/path", "/console.html"])
def test_unknown_paths_are_404(path):
    response = get(make_server(), path)
    assert response.status_code == 404
    assert as_json(response)["error"] == "not found"


def test_status_port_serves_ops_routes_but_no_console_and_no_websocket():
    server = make_server()
    for path in ("/health", "/ready", "/status", "/metrics", "/dashboard", "/static/dashboard.js"):
        assert get(server, path, status_port=True).status_code == 200, path
    assert get(server, "/", status_port=True).status_code == 404
    assert get(server, "/", upgrade=True, status_port=True).status_code == 404


def test_upgrade_is_still_handed_to_websockets():
    assert get(make_server(), "/", upgrade=True) is None


# DNS rebinding: a foreign Host is refused before anything else ---------------------------------

FOREIGN = "rebind.evil.example:8080"


@pytest.mark.parametrize("path", ["/", "/dashboard", "/static/console.js", "/health", "/ready", "/status",
                                  "/metrics", "/no/such/path"])
def test_foreign_host_gets_421_on_every_http_route(path):
    server = make_server()
    for status_port in (False, True):
        response = get(server, path, host=FOREIGN, status_port=status_port)
        assert response.status_code == 421, (path, status_port)
        assert response.reason_phrase == "Misdirected Request"
        assert b"evil" not in response.body  # the Host is not echoed
        assert "--allow-host" in as_json(response)["error"]
    assert server.metrics.connections_refused == {}  # plain HTTP: not an upgrade refused


def test_foreign_host_gets_403_on_upgrade_even_with_auth_on():
    server = make_server(auth_token=("s3cret",))
    response = get(server, "/?token=s3cret", upgrade=True, host=FOREIGN)
    assert response.status_code == 403  # before the token is looked at: not 401, not admitted
    assert server.metrics.connections_refused == {"host": 1}
    assert get(server, "/", upgrade=True, host=FOREIGN, status_port=True).status_code == 403
    assert get(server, "/?token=s3cret", upgrade=True, host="localhost:8080") is None


def test_allow_host_serves_more_names():
    server = make_server(allow_host=("agent.example.com", ".corp.example"))
    for host in ("agent.example.com", "agent.example.com:443", "x.corp.example:8080", "localhost:8080", "[::1]:1"):
        assert get(server, "/health", host=host).status_code == 200, host
    assert get(server, "/health", host="other.example.com").status_code == 421
    assert get(make_server(allow_host=("*",)), "/health", host=FOREIGN).status_code == 200


@pytest.mark.parametrize("path, upgrade", [("/status", False), ("/metrics", False), ("/", True)])
def test_a_401_carries_the_token_hint_and_a_bearer_challenge(path, upgrade):
    server = make_server(auth_token=("s3cret",))
    response = get(server, path, upgrade=upgrade)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer <token>" in orjson.loads(response.body)["error"]
