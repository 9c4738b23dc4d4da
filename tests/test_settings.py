import pathlib

import pytest

from myagent.settings import (SETTINGS, SETTINGS_BY_NAME, SettingError, check_config, check_system, config_from,
                              markdown_table, parse_size)

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_readme_option_reference_is_generated_from_the_table():
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "run: python scripts/sync_readme.py"


@pytest.mark.parametrize("text, expected", [("512MB", 512_000_000), ("64KiB", 65536), ("1048576", 1048576),
                                            ("1.5 GiB", 1610612736), ("10b", 10)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "MB", "12 parsecs", "-5MB"])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_defaults_and_overrides():
    config = config_from({"port": "9000", "max-message-size": "2MiB", "debug": "true"})
    assert config.port == 9000 and config.max_message_size == 2 * 1024 * 1024 and config.debug is True
    assert config_from({}).host == "127.0.0.1"


def test_bad_value_names_the_option():
    with pytest.raises(ValueError, match="--port"):
        config_from({"port": "eighty"})


def test_every_setting_has_env_help_and_a_valid_default():
    for s in SETTINGS:
        assert s.env.startswith("MYAGENT_WS_") and s.help
        s.convert(s.default)


def test_list_settings_accept_repeats_and_commas():
    config = config_from({"auth-token": ("a,b", "c"), "allow-origin": "http://x, http://y"})
    assert config.auth_token == ("a", "b", "c")
    assert config.allow_origin == ("http://x", "http://y")


def test_every_default_is_within_its_range_and_every_kind_has_a_metavar():
    from myagent.settings import KINDS

    for s in SETTINGS:
        assert s.kind in KINDS and s.metavar and s.metavar != "TEXT" or s.kind == "str", s.name
        value = s.convert(s.default)
        if s.range is not None:
            assert s.range[0] <= value <= s.range[1], s.name


def test_every_duration_is_in_seconds_and_every_path_is_checked():
    kinds = {s.name: s.kind for s in SETTINGS}
    assert all(kinds[n] == "seconds" for n in kinds if n.endswith(("-timeout", "-ttl", "-window", "-grace",
                                                                      "-interval", "-heartbeat")))
    assert all(kinds[n] == "file" for n in kinds if n.endswith("-file") or n.startswith("tls-"))


@pytest.mark.parametrize("values, message", [
    ({"port": "99999"}, "--port 99999: out of range (allowed: 0 to 65535)"),
    ({"port": "-1"}, "--port -1: out of range"),
    ({"workers": "-1"}, "--workers -1: out of range (allowed: 0 to 1024)"),
    ({"graceful-timeout": "-1"}, "--graceful-timeout -1: out of range (allowed: >= 0)"),
    ({"watch-interval": "0"}, "--watch-interval 0: out of range (allowed: 0.01 to 60)"),
    ({"limit-strikes": "0"}, "--limit-strikes 0: out of range (allowed: 1 to 1000)"),
    ({"max-memory": "512"}, "--max-memory 512: 512 bytes is too small (a size without a unit is in bytes); did you "
                            "mean 512MiB?"),
    ({"max-message-size": "100"}, "did you mean 100KiB?"),
    ({"max-history-bytes": "64"}, "did you mean 64KiB?"),
    ({"max-history-bytes": "64MiB"}, "out of range (allowed: 1KiB to 12MiB)"),
    ({"max-message-size": "2GiB"}, "out of range (allowed: 1KiB to 1GiB)"),
    ({"store": "foo://x"}, "--store foo://x: unknown session store"),
    ({"host": "999.1.1.1"}, "--host 999.1.1.1: not a valid IPv4 address"),
    ({"trusted-proxy": ("10.0.0.1", "proxy.local")}, "--trusted-proxy proxy.local: not an IP address"),
    ({"multitask": "later"}, "--multitask later: not one of reject, enqueue, interrupt, rollback"),
    ({"turn-timeout": "1e300"}, "--turn-timeout 1e300: out of range"),
    ({"sandbox-env": "A=B"}, "--sandbox-env A=B: not an environment variable name"),
])
def test_bad_values_are_one_line_naming_the_option(values, message):
    with pytest.raises(SettingError) as info:
        config_from(values)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_size_with_a_unit_is_taken_at_its_word_and_zero_still_means_off():
    assert config_from({"max-memory": "1MB"}).max_memory == 1_000_000  # explicit: the watchdog tests use it
    assert config_from({"max-memory": "0"}).max_memory == 0
    assert config_from({"max-memory": "536870912"}).max_memory == 512 << 20  # bytes, large enough to be meant


def test_the_error_names_the_variable_or_the_option_and_never_a_secret():
    error = SettingError(SETTINGS_BY_NAME["port"], "99 999", "not an integer")
    assert error.describe() == "--port '99 999': not an integer"
    assert error.describe(from_env=True) == "MYAGENT_WS_PORT='99 999': not an integer"
    secret = SettingError(SETTINGS_BY_NAME["auth-token"], "tok-SECRET", "bad")
    assert "tok-SECRET" not in secret.describe() + secret.describe(from_env=True)


def test_combinations_that_cannot_work():
    for values, message in [({"tls-key": "/k.pem"}, "--tls-key needs --tls-cert"),
                            ({"port": "8080", "status-port": "8080"}, "--status-port 8080 is the same as --port"),
                            ({"worker-timeout": "0.5"}, "--worker-timeout 0.5 must be longer than --worker-heartbeat")]:
        with pytest.raises(ValueError, match=message):
            check_config(config_from(values))
    check_config(config_from({"port": "0", "status-port": "0"}))


def test_files_directories_and_users_are_checked_on_this_machine_only_at_start(tmp_path):
    config = config_from({"tls-cert": str(tmp_path / "nope.pem"), "sandbox-dir": str(tmp_path)})  # parses
    with pytest.raises(SettingError, match=r"--tls-cert .*nope.pem: no such file"):
        check_system(config)
    check_system(config_from({"sandbox-dir": str(tmp_path), "sandbox-user": "root"}))
    with pytest.raises(SettingError, match="--sandbox-user no-such-user-15: no such user"):
        check_system(config_from({"sandbox-user": "no-such-user-15"}))
