"""The value parsers behind the settings table."""

from __future__ import annotations

import os

import pytest

from myagent import setting_types as t


@pytest.mark.parametrize("value, text", [(0, "0"), (1, "1 byte"), (512, "512 bytes"), (1 << 20, "1MiB"),
                                         (3 << 30, "3GiB"), (1536, "1536 bytes"), (64 << 10, "64KiB")])
def test_format_size(value, text):
    assert t.format_size(value) == text


@pytest.mark.parametrize("number, minimum, hint", [("512", 32 << 20, "512MiB"), ("100", 4 << 10, "100KiB"),
                                                   ("1", 32 << 20, "1GiB"), ("16", 64 << 10, "16MiB"),
                                                   ("64", 64 << 10, "64KiB")])
def test_unit_hint_picks_the_smallest_unit_that_is_enough(number, minimum, hint):
    assert t.unit_hint(number, minimum) == hint


def test_bare_numbers():
    assert t.is_bare_number("512") and t.is_bare_number(" 512 ")
    assert not t.is_bare_number("512MiB") and not t.is_bare_number(512) and not t.is_bare_number("1.5")


@pytest.mark.parametrize("parse, good, expected", [(t.parse_int, " 42 ", 42), (t.parse_number, "0.25", 0.25),
                                                   (t.parse_bool, "yes", True), (t.parse_bool, "off", False)])
def test_parsers(parse, good, expected):
    assert parse(good) == expected


@pytest.mark.parametrize("parse, bad, message", [
    (t.parse_int, "1.5", "not an integer"), (t.parse_int, True, "not an integer"),
    (t.parse_number, "inf", "finite"), (t.parse_number, "nan", "finite"), (t.parse_number, "x", "not a number"),
    (t.parse_bool, "maybe", "not a boolean"), (t.parse_size, "-5MB", "not a size"),
])
def test_parsers_refuse(parse, bad, message):
    with pytest.raises(ValueError, match=message):
        parse(bad)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", "::1", "[::1]", "localhost", "agent.example.com",
                                  "my_service", "host.", ""])
def test_hosts_accepted(host):
    t.check_host(host)


@pytest.mark.parametrize("host, message", [("999.1.1.1", "IPv4"), ("1.2.3", "IPv4"), ("::zz", "IPv6"),
                                           ("bad host", "host name"), ("-x.com", "host name"), ("a" * 254, "name")])
def test_hosts_refused(host, message):
    with pytest.raises(ValueError, match=message):
        t.check_host(host)


@pytest.mark.parametrize("url", ["memory:", "memory", "sqlite://", "sqlite:///tmp/x.db", "redis://h:6379/0",
                                 "rediss://h", "unix:///run/redis.sock"])
def test_store_urls(url):
    t.check_store(url)


@pytest.mark.parametrize("url", ["foo://x", "sqlite:", "postgres://db", "/tmp/x.db"])
def test_store_urls_refused(url):
    with pytest.raises(ValueError, match="memory:, sqlite:///"):
        t.check_store(url)


def test_files_and_directories(tmp_path):
    present = tmp_path / "f"
    present.write_text("x")
    t.check_file(str(present))
    t.check_dir(str(tmp_path))
    for check, path, message in [(t.check_file, tmp_path / "nope", "no such file"),
                                 (t.check_file, tmp_path, "is a directory"),
                                 (t.check_dir, tmp_path / "nope", "no such directory"),
                                 (t.check_dir, present, "not a directory")]:
        with pytest.raises(ValueError, match=message):
            check(str(path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0)
    with pytest.raises(ValueError, match="not readable"):
        t.check_file(str(secret))


def test_addresses_users_and_variable_names():
    t.check_address("10.0.0.1")
    t.check_address("::1")
    t.check_user("root")
    t.check_env_name("OPENAI_API_KEY")
    for check, bad in [(t.check_address, "proxy.local"), (t.check_user, "no-such-user-15"),
                       (t.check_env_name, "A=B"), (t.check_env_name, "1X")]:
        with pytest.raises(ValueError):
            check(bad)
