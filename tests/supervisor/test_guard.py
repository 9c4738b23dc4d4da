import pytest

from websockets.datastructures import Headers

from myagent.supervisor.exceptions import ConfigError
from myagent.supervisor.guard import Guard, HostCheck, host_name, load_tokens, redact


def headers(**kw):
    return {k.replace("_", "-").title() if k != "origin" else "Origin": v for k, v in kw.items()}


def test_no_tokens_means_anonymous():
    guard = Guard([], [], 0)
    assert guard.admit("/", {}, "1.2.3.4") == ("anonymous", None)


def test_bearer_and_query_tokens():
    guard = Guard(["s3cret"], [], 0)
    principal, refusal = guard.admit("/", {"Authorization": "Bearer s3cret"}, "a")
    assert refusal is None and principal.startswith("token:") and "s3cret" not in principal
    assert guard.admit("/?token=s3cret", {}, "a")[0] == principal
    assert guard.admit("/", {}, "a")[1].status == 401
    assert guard.admit("/?token=nope", {}, "a")[1].status == 401
    assert guard.admit("/", {"Authorization": "Basic s3cret"}, "a")[1].status == 401


def test_distinct_tokens_are_distinct_principals():
    guard = Guard(["one", "two"], [], 0)
    assert guard.principal("one") != guard.principal("two")


@pytest.mark.parametrize("allow, origin, host, ok", [
    ((), None, "h:1", True),                                  # not a browser
    ((), "http://h:1", "h:1", True),                           # same origin by default
    ((), "http://evil:1", "h:1", False),
    (("*",), "http://evil:1", "h:1", True),
    (("https://app.example",), "https://app.example/", "h:1", True),
    (("https://app.example",), "https://app.example.evil", "h:1", False),
    (("https://app.example",), "http://h:1", "h:1", True),      # our own console stays allowed
])
def test_origin(allow, origin, host, ok):
    guard = Guard([], allow, 0, HostCheck(["h"]))
    hdrs = {"Host": host}
    if origin:
        hdrs["Origin"] = origin
    assert (guard.admit("/", hdrs, "a")[1] is None) is ok
    if not ok:
        assert guard.admit("/", hdrs, "a")[1].status == 403


def test_per_address_cap():
    guard = Guard([], [], 2)
    guard.opened("a")
    guard.opened("a")
    assert guard.admit("/", {}, "a")[1].status == 503
    assert guard.admit("/", {}, "b")[1] is None
    guard.closed("a")
    assert guard.admit("/", {}, "a")[1] is None


def test_tokens_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("# comment\nalpha\n\n beta \n")
    assert load_tokens(["x"], str(path)) == ["x", "alpha", "beta"]


def test_a_tokens_file_that_is_missing_or_empty_is_a_clear_error(tmp_path):
    # An empty tokens file must not silently turn authentication off.
    empty = tmp_path / "tokens"
    empty.write_text("# nothing yet\n\n")
    with pytest.raises(ConfigError, match="--auth-tokens-file .*holds no value"):
        load_tokens([], str(empty))
    with pytest.raises(ConfigError, match="--auth-tokens-file .*No such file"):
        load_tokens([], str(tmp_path / "missing"))


# DNS rebinding: the Host header must name this server -------------------------------------

@pytest.mark.parametrize("value, name", [
    ("localhost:8080", "localhost"), ("LocalHost", "localhost"), ("127.0.0.1:1", "127.0.0.1"),
    ("[::1]:8080", "::1"), ("[::1]", "::1"), ("example.com.", "example.com"), ("a-b_c.example:443", "a-b_c.example"),
    ("", None), (":80", None), ("::1", None), ("[::1", None), ("[nothost]:80", None), ("h:port", None),
    ("h:80:81", None), ("evil.example/x", None), ("évil.example", None), ("a b", None),
])
def test_host_name(value, name):
    assert host_name(value) == name


@pytest.mark.parametrize("host, ok", [
    (None, True),                                   # no Host: not a browser
    ("127.0.0.1:8080", True), ("127.9.9.9", True), ("[::1]:8080", True), ("10.1.2.3:80", True),  # addresses
    ("localhost:8080", True), ("LOCALHOST.", True), ("app.localhost:8080", True),
    ("myhost:8080", True),                          # this machine's name
    ("rebind.evil.example:8080", False), ("localhost.evil.example", False), ("evillocalhost", False),
    ("127.0.0.1.evil.example", False), ("2130706433", False), ("", False), ("[::1]x", False),
])
def test_default_hosts(host, ok):
    assert HostCheck((), "127.0.0.1", hostname="myhost").allowed(host) is ok


def test_allow_host_entries():
    check = HostCheck(["agent.example.com", ".corp.example", "*.apps.example"], "0.0.0.0", hostname="node1")
    for host in ("agent.example.com", "AGENT.example.com:443", "corp.example", "x.corp.example",
                 "a.b.corp.example:8443", "apps.example", "x.apps.example", "localhost", "node1", "192.0.2.1:8080"):
        assert check.allowed(host), host
    for host in ("example.com", "evil-agent.example.com", "xcorp.example", "corp.example.evil", "0.0.0.0x"):
        assert not check.allowed(host), host
    assert "agent.example.com" in check.describe() and "*.corp.example" in check.describe()


def test_bound_name_is_served_and_star_serves_any():
    assert HostCheck((), "agent.internal", hostname="h").allowed("agent.internal:8080")
    assert not HostCheck((), "0.0.0.0", hostname="h").allowed("agent.internal")
    anything = HostCheck(["*"], "127.0.0.1", hostname="h")
    assert anything.allowed("rebind.evil.example") and "off" in anything.describe()


def test_foreign_host_is_refused_before_the_token_is_even_looked_at():
    guard = Guard(["s3cret"], [], 0, HostCheck((), "127.0.0.1", hostname="h"))
    evil = "rebind.evil.example:8080"
    for hdrs in ({"Host": evil, "Origin": f"http://{evil}"}, {"Host": evil, "Authorization": "Bearer s3cret"}):
        assert guard.admit("/", hdrs, "a")[1].status == 403
        assert guard.admit("/", hdrs, "a")[1].reason == "host not allowed"
    assert guard.admit("/", {"Host": "127.0.0.1:8080"}, "a")[1].status == 401  # then the token
    console = {"Host": "localhost:8080", "Origin": "http://localhost:8080"}
    principal, refusal = guard.admit("/?token=s3cret", console, "a")
    assert refusal is None and principal.startswith("token:")


def test_repeated_host_origin_or_authorization_headers_are_refused_not_crashing():
    guard = Guard([], [], 0, HostCheck((), "127.0.0.1", hostname="h"))
    two_hosts = Headers([("Host", "127.0.0.1:1"), ("Host", "rebind.evil.example:1")])
    assert guard.admit("/", two_hosts, "a")[1].status == 403
    two_origins = Headers([("Host", "127.0.0.1:1"), ("Origin", "http://127.0.0.1:1"), ("Origin", "http://evil")])
    assert guard.admit("/", two_origins, "a")[1].status == 403
    authed = Guard(["s3cret"], [], 0, HostCheck((), "127.0.0.1", hostname="h"))
    two_tokens = Headers([("Host", "127.0.0.1:1"), ("Authorization", "Bearer s3cret"), ("Authorization", "Bearer x")])
    assert authed.admit("/", two_tokens, "a")[1].status == 401


def test_redact_hides_query():
    assert redact("/?token=abc") == "/?…"
    assert redact("/status") == "/status"


def test_client_address_trusts_only_listed_proxies():
    from myagent.supervisor.guard import client_address

    trusted = frozenset({"10.0.0.2"})
    hdrs = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7"}
    assert client_address(("10.0.0.2", 1234), hdrs, trusted) == "203.0.113.7"  # the proxy's own entry
    assert client_address(("198.51.100.1", 1), hdrs, trusted) == "198.51.100.1"  # not a proxy: header ignored
    assert client_address(("10.0.0.2", 1), {}, trusted) == "10.0.0.2"
    assert client_address(None, hdrs, trusted) == ""


def test_remembered_host_decisions_are_bounded():
    check = HostCheck((), "127.0.0.1", hostname="h")
    assert not any(check.allowed(f"n{i}.evil.example") for i in range(3000))
    assert len(check._decided) <= 1024
    assert check.allowed("localhost:1") and not check.allowed("n2999.evil.example")


def test_a_401_says_how_to_pass_a_token_and_never_echoes_it():
    guard = Guard(["s3cret"], [], 0)
    missing = guard.admit("/", {}, "a")[1].reason
    wrong = guard.admit("/?token=nope-123", {}, "a")[1].reason
    assert missing.startswith("a token is required") and wrong.startswith("invalid token")
    for reason in (missing, wrong):  # the two ways presented_token() reads a token
        assert "Authorization: Bearer <token>" in reason and "?token=<token>" in reason
        assert "MYAGENT_WS_TOKEN" in reason and "nope-123" not in reason
