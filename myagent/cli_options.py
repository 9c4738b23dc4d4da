"""Click options derived from the settings table, and the one-line startup error.

Each row of myagent/settings.py becomes an option whose type shows the real
kind in ``--help`` (``--port INTEGER``, ``--max-memory SIZE``, ``--tls-cert
FILE``) and checks the value while click parses it. A bad value, from the
command line or from its ``MYAGENT_WS_*`` variable, ends the command with one
line naming the option or the variable, and exit code 2 (click's own usage
errors print three lines: usage, hint and error).
"""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

from myagent.settings import Setting, SettingError


class OneLineError(click.ClickException):
    """Exit 2 with ``❌ message`` on stderr, nothing else."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"❌ {self.format_message()}", err=True)


class SettingType(click.ParamType):
    """A settings-table kind as a click type: its metavar for ``--help``, its checks for values.

    The value is returned as given: ``config_from`` converts it (once more) into the
    ServerConfig, so the command line, the environment and tests build configs one way.
    """

    def __init__(self, setting: Setting) -> None:
        self.setting = setting
        self.name = setting.metavar.lower()

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return self.setting.metavar

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        self.setting.convert(value)  # raises SettingError
        return value


class SettingOption(click.Option):
    """An option of one setting: a bad value ends the command with one line naming where it came
    from (``--port 99999: ...`` or ``MYAGENT_WS_PORT=99999: ...``)."""

    def __init__(self, *args: Any, setting: Setting, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setting = setting

    def consume_value(self, ctx: click.Context, opts: Any) -> Any:
        value, source = super().consume_value(ctx, opts)
        ctx.meta[f"myagent.source.{self.name}"] = source  # click records it only after conversion
        return value, source

    def process_value(self, ctx: click.Context, value: Any) -> Any:
        try:
            return super().process_value(ctx, value)
        except SettingError as exc:
            raise OneLineError(exc.describe(from_env=self._from_env(ctx))) from None
        except click.BadParameter as exc:  # click's own type (a boolean flag's environment value)
            try:  # our words for the problem when the table refuses the value too
                self.setting.convert(value)
                error = SettingError(self.setting, value, exc.message)
            except SettingError as refused:
                error = refused
            raise OneLineError(error.describe(from_env=self._from_env(ctx))) from None

    def _from_env(self, ctx: click.Context) -> bool:
        return ctx.meta.get(f"myagent.source.{self.name}") is ParameterSource.ENVIRONMENT


def setting_option(s: Setting) -> Any:
    """The click option of one setting (env: MYAGENT_WS_<NAME>)."""
    notes = [f"default: {s.default}" if s.default not in ("", None) else "", s.range_text()]
    help_text = f"{s.help} [{'; '.join(n for n in notes if n)}]" if any(notes) else s.help
    if s.kind == "bool":
        return click.option(f"--{s.name}/--no-{s.name}", s.attr, cls=SettingOption, setting=s, default=None,
                            envvar=s.env, show_envvar=True, help=help_text)
    # A secret's option is parsed (so that it can be refused with an explanation) but not
    # shown: it is set through its environment variable only.
    return click.option(f"--{s.name}", s.attr, cls=SettingOption, setting=s, type=SettingType(s), default=None,
                        envvar=s.env, show_envvar=True, multiple=s.multiple, help=help_text, hidden=s.secret)
