import pathlib

import pytest

from myagent.settings import SETTINGS, config_from, markdown_table, parse_size

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
