"""Click options from the settings table: real types in --help, one line per bad value."""

from __future__ import annotations

import click
from click.testing import CliRunner

from myagent.cli_options import setting_option
from myagent.settings import SETTINGS_BY_NAME


@click.command()
@setting_option(SETTINGS_BY_NAME["max-memory"])
@setting_option(SETTINGS_BY_NAME["port"])
@setting_option(SETTINGS_BY_NAME["reload"])
@setting_option(SETTINGS_BY_NAME["log-format"])
def probe(**values):
    click.echo(repr(sorted(values.items())))


def run(*args, **env):
    return CliRunner().invoke(probe, list(args), env=env)


def test_help_shows_the_kind_the_default_and_the_range():
    text = CliRunner().invoke(probe, ["--help"], terminal_width=200).output
    assert "--max-memory SIZE" in text and "--port INTEGER" in text and "--log-format [text|json]" in text
    assert "[default: 8080; 0 to 65535]" in text and "[default: 1GiB; >= 0]" in text


def test_good_values_pass_through_as_given():
    result = run("--port", "9000", "--max-memory", "2GiB")
    assert result.exit_code == 0 and "('max_memory', '2GiB')" in result.output and "('port', '9000')" in result.output


def test_a_bad_option_is_one_line_and_exit_2():
    result = run("--port", "99999")
    assert result.exit_code == 2
    assert result.output == "❌ --port 99999: out of range (allowed: 0 to 65535)\n"


def test_a_bad_variable_is_named_as_such():
    result = run(MYAGENT_WS_MAX_MEMORY="512")
    assert result.exit_code == 2
    assert result.output.startswith("❌ MYAGENT_WS_MAX_MEMORY=512: 512 bytes is too small") and \
        result.output.count("\n") == 1
    result = run(MYAGENT_WS_RELOAD="maybe")  # click's own boolean type, same one line
    assert result.exit_code == 2 and result.output.startswith("❌ MYAGENT_WS_RELOAD=maybe: ")
    result = run("--port", "1", MYAGENT_WS_PORT="x")  # the command line wins: the variable is not read
    assert result.exit_code == 0
