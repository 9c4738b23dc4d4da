"""The `myagent-ws` command line."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from typing import Any, Callable

import click
from click.core import ParameterSource

from myagent import __version__
from myagent.cli_options import OneLineError, setting_option
from myagent.settings import SETTINGS, SettingError, check_config, check_system, config_from, markdown_table


def _run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        return asyncio.run(coro)


def settings_options(func: Callable) -> Callable:
    """Add one click option per row of the settings table (env: MYAGENT_WS_<NAME>)."""
    for s in reversed(SETTINGS):
        func = setting_option(s)(func)
    return func


def refuse_secrets_on_command_line(ctx: click.Context) -> None:
    """Exit 2 with one line when a secret setting came from the command line: every local user
    (the sandbox user included) reads /proc/PID/cmdline, and ``ps`` shows it."""
    for s in SETTINGS:
        if s.secret and ctx.get_parameter_source(s.attr) is ParameterSource.COMMANDLINE:
            click.echo(f"❌ --{s.name} is refused on the command line, where every local user can read it "
                       f"(ps, /proc/PID/cmdline); use {s.env} or --{s.secret_file} FILE", err=True)
            sys.exit(2)


@click.group()
@click.version_option(__version__, prog_name="myagent-ws")
def main() -> None:
    """Serve a Python agent file as a hardened WebSocket service."""


@main.command()
@click.argument("agents", nargs=-1, required=True, metavar="AGENT...")
@settings_options
@click.pass_context
def server(ctx: click.Context, agents: tuple[str, ...], **values: Any) -> None:
    """Serve agent files over WebSockets, each with its own pool of sandbox processes.

    AGENT is an agent file (served at /STEM, and at / when it is the only
    one), NAME=FILE.py (served at /NAME), or a directory (every *.py in it
    not starting with '_'). --config FILE.toml sets pool options per agent.

    Secrets come from the environment or files, never the command line:
    MYAGENT_WS_AUTH_TOKENS or --auth-tokens-file, MYAGENT_WS_STATE_SECRET or
    --state-secret-file.
    """
    from myagent.logs import setup_logging
    from myagent.supervisor.agent_specs import load_overrides, parse_targets
    from myagent.supervisor.exceptions import SupervisorError

    refuse_secrets_on_command_line(ctx)

    try:
        config = config_from(values)
        check_system(config)
        check_config(config)
    except SettingError as exc:
        from_env = ctx.get_parameter_source(exc.setting.attr) is ParameterSource.ENVIRONMENT
        raise OneLineError(exc.describe(from_env)) from None
    except ValueError as exc:
        raise OneLineError(str(exc)) from None
    setup_logging(config.log_level, config.log_format, config.debug)
    try:
        specs, directories = parse_targets(agents)
        overrides = load_overrides(config.config, [s.name for s in specs], not directories) if config.config else {}
    except SupervisorError as exc:
        click.echo(f"❌ {exc}", err=True)
        sys.exit(2)
    config = dataclasses.replace(config, agent_file=specs[0].path)
    from myagent.supervisor.server import Server

    try:
        code = _run(Server(config, announce=click.echo, agents=specs, directories=directories,
                           overrides=overrides).run())
    except SupervisorError as exc:
        click.echo(f"❌ {exc}", err=True)
        sys.exit(2)
    sys.exit(code)


@main.command()
@click.argument("agent_file", type=click.Path(dir_okay=False))
def check(agent_file: str) -> None:
    """Load AGENT_FILE and report its agent, tools, declared environment and any error."""
    from myagent.agents.exceptions import AgentLoadError
    from myagent.agents.loader import load_agent_file
    from myagent.declared_env import DeclarationError, read_declared, report, unreadable

    try:
        factory = load_agent_file(agent_file)
        problem = unreadable(factory.env, read_declared(agent_file))  # what the server would refuse
    except (AgentLoadError, DeclarationError) as exc:
        click.echo(f"❌ {exc}" if isinstance(exc, AgentLoadError) else f"❌ {agent_file}: {exc}", err=True)
        sys.exit(1)
    info = factory.describe()
    click.echo(f"✅ {agent_file}: agent {info['name']!r}")
    if info.get("description"):
        click.echo(f"   {info['description']}")
    for tool in info.get("tools", []):
        flag = " (asks for confirmation)" if tool.get("requires_confirmation") else ""
        click.echo(f"   • {tool['name']}{flag}: {tool.get('description', '')}")
    lines, missing = report(factory.env, os.environ)
    for line in lines:  # names and set/missing, never values
        click.echo(f"   🔑 {line}")
    if problem:
        click.echo(f"❌ {agent_file} {problem}", err=True)
    if missing:
        click.echo(f"❌ not set here: {', '.join(missing)}; `myagent-ws server` refuses to start without "
                   f"{'it' if len(missing) == 1 else 'them'}", err=True)
    if problem or missing:
        sys.exit(1)


@main.command()
@click.argument("agent_file", type=click.Path(dir_okay=False))
@click.argument("question")
@click.option("--yes", is_flag=True, help="Approve every tool that asks for confirmation.")
def run(agent_file: str, question: str, yes: bool) -> None:
    """Run AGENT_FILE once on QUESTION, streaming its events to the terminal.

    Ctrl-C cancels the turn and exits 130, within a second whatever the agent's code does.
    """
    from myagent.agents.exceptions import AgentLoadError
    from myagent.agents.loader import load_agent_file
    from myagent.client.interrupt import EXIT_CTRL_C, CtrlC
    from myagent.client.prompt import LineReader
    from myagent.client.render import EventPrinter

    try:
        agent = load_agent_file(agent_file).new()
    except AgentLoadError as exc:
        click.echo(f"❌ {exc}", err=True)
        sys.exit(1)
    printer = EventPrinter()

    async def confirm(request: Any) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            click.echo(f"   (denied {request.tool_name}: no terminal to ask; pass --yes to approve)", err=True)
            return False
        # Read on the loop, not in a thread: Ctrl-C then quits at once instead of after Enter.
        printer.prompt(f"Run {request.tool_name}({request.tool_args})? [y/N] ")
        try:
            answer = await LineReader().readline()
        finally:
            printer.prompt_done()
        return (answer or "").strip().lower() in ("y", "yes")

    async def go() -> int:
        code = 0
        ctrl_c.attach()
        try:
            async for event in agent.astream(question, confirm=confirm):
                printer.show("agent." + event.kind, event.content, event.metadata)
                if event.kind == "error":
                    code = 1
        except asyncio.CancelledError:
            if not ctrl_c.pressed:
                raise
            printer.prompt_done()
            printer.end()
            return EXIT_CTRL_C
        printer.end()
        return code

    ctrl_c = CtrlC()
    ctrl_c.install()
    sys.exit(_run(go()))


@main.command(epilog="Exit codes: 0 done; 1 a turn ended in an error or was interrupted (with -m), or the "
                    "session was lost; 2 cannot connect; 130 Ctrl-C.")
@click.argument("url", default="ws://127.0.0.1:8080")
@click.option("--token", envvar="MYAGENT_WS_TOKEN", show_envvar=True,
              help="Bearer token, if the server requires one (prefer the variable: `ps` shows options).")
@click.option("-m", "--message", "messages", multiple=True,
              help="Send these messages one after the other, close the session, exit.")
def chat(url: str, token: str | None, messages: tuple[str, ...]) -> None:
    """Talk to a running server from the terminal.

    URL: ws://, wss://, http://, https:// or HOST:PORT. When the connection
    drops, the chat reconnects (0.3 s doubling to 5 s, for up to 60 s) and
    resumes the session, replaying what it missed. Ctrl-C cancels the running
    turn (twice: quits) and quits at the prompt.
    """
    from myagent.client.chat import chat as run_chat

    sys.exit(_run(run_chat(url, token, list(messages))))


@main.command()
@click.argument("url", default="http://127.0.0.1:8080")
@click.option("--watch", is_flag=True, help="Refresh every second until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="Print the /status JSON as the server sent it.")
@click.option("--token", envvar="MYAGENT_WS_TOKEN", show_envvar=True, help="Bearer token, if the server requires one.")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for each request.")
def status(url: str, watch: bool, as_json: bool, token: str | None, timeout: float) -> None:
    """Show a running server's sandboxes, sessions and totals (exit 1: not ready, 2: unreachable)."""
    from myagent.client.status import run as run_status

    sys.exit(run_status(url, watch=watch, as_json=as_json, token=token, timeout=timeout))


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def new(path: str, force: bool) -> None:
    """Create a commented agent file at PATH that runs as is."""
    from importlib.resources import files

    if not path.endswith(".py"):
        raise click.BadParameter("the agent file name must end in .py", param_hint="PATH")
    if os.path.exists(path) and not force:
        click.echo(f"❌ {path} exists; use --force to overwrite it", err=True)
        sys.exit(1)
    name = os.path.splitext(os.path.basename(path))[0].replace("_", "-") or "agent"
    text = files("myagent").joinpath("templates/agent.py.tmpl").read_text(encoding="utf-8")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text.replace("__NAME__", name).replace("__FILE__", path))
    click.echo(f"✅ created {path}\n   try: myagent-ws run {path} \"/add a=2 b=3\"\n"
               f"   serve: myagent-ws server {path}")


@main.command()
def schema() -> None:
    """Print the protocol's JSON Schema (client and server events)."""
    import orjson

    from myagent.protocol.schema import schema_document

    click.echo(orjson.dumps(schema_document(), option=orjson.OPT_INDENT_2).decode())


@main.command("fake-llm")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--script", "script_path", default=None, type=click.Path(dir_okay=False),
              help="JSON reply script (see docs); default echoes the user.")
@click.option("--ttft-ms", default=0, type=int, show_default=True, help="Delay before the first token.")
@click.option("--token-delay-ms", default=0, type=int, show_default=True, help="Delay between tokens.")
@click.option("--usage/--no-usage", "report_usage", default=True, show_default=True,
              help="Report token usage in replies (--no-usage: a provider that reports none).")
def fake_llm(host: str, port: int, script_path: str | None, ttft_ms: int, token_delay_ms: int,
             report_usage: bool) -> None:
    """Run a local OpenAI-compatible LLM server with scripted replies (for tests and demos).
    GET /v1/fake/stats counts its chat requests and the token usage it reported."""
    from myagent.agents.llm.fake_server import serve_forever_cli

    serve_forever_cli(host, port, script_path, ttft_ms, token_delay_ms, report_usage)


@main.command("settings")
@click.option("--markdown", is_flag=True, help="Print the option reference table used in the README.")
def settings_cmd(markdown: bool) -> None:
    """List every server option with its environment variable and default."""
    if markdown:
        click.echo(markdown_table())
        return
    for s in SETTINGS:
        option = "(environment only)" if s.secret else f"--{s.name} {s.metavar}"
        allowed = f" ({s.range_text()})" if s.range_text() else ""
        click.echo(f"{option:<40} {s.env:<40} default {s.default!s:<10} {s.help}{allowed}")


if __name__ == "__main__":
    main()
