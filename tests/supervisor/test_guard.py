import pytest

from myagent.supervisor.guard import Guard, load_tokens, redact


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
    guard = Guard([], allow, 0)
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
