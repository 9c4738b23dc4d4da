import pytest

from myagent.supervisor.state_export import StateError, export_state, import_state, load_secret

KEY = b"k" * 32
PAYLOAD = {"agent": "a", "history": [{"role": "user", "content": "héllo 北京"}]}


def test_round_trip():
    token = export_state(KEY, PAYLOAD, now=100, ttl=60, max_size=10_000)
    doc = import_state(KEY, token, now=150, max_size=10_000)
    assert doc["history"] == PAYLOAD["history"] and doc["agent"] == "a"


def test_expired():
    token = export_state(KEY, PAYLOAD, now=100, ttl=60, max_size=10_000)
    with pytest.raises(StateError) as err:
        import_state(KEY, token, now=161, max_size=10_000)
    assert err.value.code == "STATE_EXPIRED"


@pytest.mark.parametrize("mutate", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),   # signature altered
    lambda t: "x" + t[1:],                                         # payload altered
    lambda t: t.split(".")[0],                                     # no signature
    lambda t: "",
    lambda t: "...",
    lambda t: t + "!!",
])
def test_tampered(mutate):
    token = export_state(KEY, PAYLOAD, now=100, ttl=60, max_size=10_000)
    with pytest.raises(StateError) as err:
        import_state(KEY, mutate(token), now=100, max_size=10_000)
    assert err.value.code == "STATE_INVALID"


def test_foreign_key_refused():
    token = export_state(b"other" * 8, PAYLOAD, now=100, ttl=60, max_size=10_000)
    with pytest.raises(StateError):
        import_state(KEY, token, now=100, max_size=10_000)


def test_size_limits():
    big = {"history": [{"role": "user", "content": __import__("os").urandom(4000).hex()}]}
    with pytest.raises(StateError):
        export_state(KEY, big, now=0, ttl=1, max_size=1000)
    token = export_state(KEY, big, now=0, ttl=10, max_size=100_000)
    with pytest.raises(StateError):
        import_state(KEY, token, now=0, max_size=100)


def test_secret_is_generated_once_and_kept(tmp_path):
    first = load_secret("", str(tmp_path))
    assert load_secret("", str(tmp_path)) == first and len(first) >= 32
    assert (tmp_path / "state-secret").stat().st_mode & 0o777 == 0o600
    assert load_secret("configured", str(tmp_path)) == b"configured"
