"""The one settings table of `myagent-ws server`.

Every option lives here once: name, type, default, help. The table drives the
click options, the ``MYAGENT_WS_<NAME>`` environment variables, the README's
option reference (``myagent-ws settings --markdown``) and the ``ServerConfig``
the server reads. Timeouts are seconds as ``float``; ``0`` disables the ones
documented as optional.
"""

from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Callable

from myagent import setting_types as types
from myagent.setting_types import format_size, parse_size

__all__ = ["SETTINGS", "SETTINGS_BY_NAME", "ServerConfig", "Setting", "SettingError", "check_config",
           "check_system", "config_from", "markdown_table", "parse_size", "resolve_workers"]

ENV_PREFIX = "MYAGENT_WS_"
INT_MAX = 2**31 - 1
SECONDS_MAX = 1e9  # ~31 years: far beyond any timeout, small enough for every timer
SIZE_MAX = 1 << 50
# Kind -> (metavar shown by --help, default inclusive range). Every number is >= 0 unless its row says.
KINDS: dict[str, tuple[str, tuple[float, float] | None]] = {
    "int": ("INTEGER", (0, INT_MAX)), "float": ("NUMBER", (0, math.inf)), "seconds": ("SECONDS", (0, SECONDS_MAX)),
    "size": ("SIZE", (0, SIZE_MAX)), "bool": ("BOOLEAN", None), "choice": ("CHOICE", None), "str": ("TEXT", None),
    "file": ("FILE", None), "dir": ("DIRECTORY", None), "path": ("PATH", None), "host": ("HOST", None),
    "url": ("URL", None), "user": ("USER", None),
}
_CHECKS: dict[str, Callable[[str], None]] = {"host": types.check_host}
# What this machine must provide: checked when the server starts (check_system), not when a
# command line is parsed (the docs' examples name files of other machines).
_SYSTEM_CHECKS: dict[str, Callable[[str], None]] = {"file": types.check_file, "dir": types.check_dir,
                                                     "user": types.check_user}


class SettingError(ValueError):
    """A bad value of one setting. ``describe()`` names the option, or the environment variable
    the value came from; a secret's value is never repeated."""

    def __init__(self, setting: "Setting", raw: Any, problem: str) -> None:
        self.setting, self.raw, self.problem = setting, raw, problem
        super().__init__(self.describe())

    def describe(self, from_env: bool = False) -> str:
        s, raw = self.setting, "" if self.raw is None else str(self.raw)
        if s.secret:  # set from the environment or its file only
            where = s.env
        elif from_env:
            where = f"{s.env}={shlex.quote(raw)}"
        else:
            where = f"--{s.name} {shlex.quote(raw)}"
        return f"{where}: {self.problem}"


@dataclass(frozen=True)
class Setting:
    """One server option.

    ``kind``: int, float, seconds, size, bool, choice, str, file (an existing readable file),
    dir (an existing directory), user (an existing user), path, host or url. Numbers must lie in ``bounds`` (inclusive;
    by default the kind's: >= 0). ``plausible``: a size written without a unit below it is
    refused with a hint (``--max-memory 512`` is 512 bytes, surely 512MiB was meant).
    ``check`` refuses a value of the right type that cannot work.
    """

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    multiple: bool = False
    env_name: str = ""
    # A secret: set by its environment variable or read from the file option named here, never
    # on the command line, where every local user reads it (/proc/PID/cmdline): the CLI refuses it.
    secret_file: str = ""
    bounds: tuple[float, float] | None = None
    plausible: int = 0
    check: Callable[[str], None] | None = None

    @property
    def env(self) -> str:
        return self.env_name or ENV_PREFIX + self.name.upper().replace("-", "_")

    @property
    def secret(self) -> bool:
        return bool(self.secret_file)

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    @property
    def metavar(self) -> str:
        if self.kind == "choice":
            return "[" + "|".join(self.choices) + "]"
        return KINDS[self.kind][0]

    @property
    def range(self) -> tuple[float, float] | None:
        return self.bounds if self.bounds is not None else KINDS[self.kind][1]

    def range_text(self) -> str:
        """``0 to 65535``, ``>= 1``, ``>= 0.01 s``: what --help and errors say is allowed."""
        if self.range is None:
            return ""
        low, high = (int(v) if self.kind in ("int", "size") else v for v in self.range)
        show = (format_size if self.kind == "size" else str if self.kind == "int" else (lambda v: f"{v:g}"))
        if high >= KINDS[self.kind][1][1]:  # type: ignore[index]
            return f">= {show(low)}"
        return f"{show(low)} to {show(high)}"

    def convert(self, raw: Any) -> Any:
        """Convert a raw CLI/env value to this setting's type; SettingError names the option."""
        if raw is None:
            return None
        if self.multiple:
            # Repeated options, or one comma-separated value (how the environment spells a list).
            items = raw if isinstance(raw, (list, tuple)) else [raw]
            return tuple(self.convert_one(part.strip()) for item in items for part in str(item).split(",")
                         if part.strip())
        return self.convert_one(raw)

    def convert_one(self, raw: Any) -> Any:
        try:
            return self._convert_one(raw)
        except ValueError as exc:
            raise SettingError(self, raw, str(exc)) from None

    def _convert_one(self, raw: Any) -> Any:
        if self.kind == "int":
            return self._in_range(raw, types.parse_int(raw))
        if self.kind in ("float", "seconds"):
            return self._in_range(raw, types.parse_number(raw, "a number of seconds" if self.kind == "seconds"
                                                          else "a number"))
        if self.kind == "size":
            return self._in_range(raw, parse_size(raw))
        if self.kind == "bool":
            return types.parse_bool(raw)
        if self.kind == "choice":
            if str(raw) not in self.choices:
                raise ValueError(f"not one of {', '.join(self.choices)}")
            return str(raw)
        value = str(raw).strip()
        if value:  # "" is the unset default of every text setting
            for check in (_CHECKS.get(self.kind), self.check):
                if check is not None:
                    check(value)
        return value

    def _in_range(self, raw: Any, value: float) -> Any:
        low, high = self.range  # type: ignore[misc]
        floor = max(low, self.plausible)
        if self.kind == "size" and types.is_bare_number(raw) and value < floor and (value or low):
            raise ValueError(f"{format_size(value)} is too small (a size without a unit is in bytes); "
                             f"did you mean {types.unit_hint(str(raw), floor)}?")
        if not low <= value <= high:
            raise ValueError(f"out of range (allowed: {self.range_text()})")
        return value


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


S = Setting
SETTINGS: tuple[Setting, ...] = (
    # Listening
    S("host", "host", "127.0.0.1", "Address to bind. Binding beyond loopback without auth prints a warning."),
    S("port", "int", 8080, "TCP port for WebSockets and the HTTP endpoints.", bounds=(0, 65535)),
    S("status-port", "int", 0, "Also serve /health, /ready, /status, /metrics and /dashboard (plain HTTP, no "
      "WebSocket) on this port, e.g. for a private network. 0 = off.", bounds=(0, 65535)),
    # Sandbox pool
    S("workers", "int", 0, "Sandbox processes. 0 = one per CPU.", bounds=(0, 1024)),
    S("sessions-per-worker", "int", 1000, "Sessions one sandbox hosts at most; 1 gives every session its own process.",
      bounds=(1, INT_MAX)),
    S("max-sandboxes", "int", 0, "Sandboxes the pool may grow to when every one is full (extra ones stop once "
      "empty). 0 = --workers: no growth.", bounds=(0, 1024)),
    S("worker-heartbeat", "seconds", 0.5, "Seconds between a sandbox's heartbeats to the front process.",
      bounds=(0.01, 60)),
    S("worker-timeout", "seconds", 10.0, "A sandbox silent this long (event loop blocked) is replaced: WORKER_TIMEOUT.",
      bounds=(0.05, SECONDS_MAX)),
    S("worker-start-timeout", "seconds", 30.0, "Seconds a sandbox (or the zygote loading the agent file) may take to get ready.",
      bounds=(0.1, SECONDS_MAX)),
    S("sandbox-open-timeout", "seconds", 10.0, "Seconds a sandbox has to confirm it hosts a session (new, restored or "
      "moved).", bounds=(0.001, 3600)),
    S("sandbox-max-event-size", "size", "1MiB", "Largest event or history message a sandbox may send; a bigger "
      "one is dropped as an offence (agent output is bounded by --max-tool-result-chars and the model).",
      bounds=(64 << 10, 12 << 20), plausible=64 << 10),
    S("sandbox-max-offences", "int", 10, "Frames a sandbox may send for sessions or turns it does not own before it is "
      "replaced (SANDBOX_MISBEHAVED); each is dropped and counted.", bounds=(1, INT_MAX)),
    # Supervision (watchdog, restarts, recycling)
    S("max-memory", "size", "1GiB", "RSS cap of one sandbox; over it for --limit-strikes samples: MEMORY_LIMIT. 0 = off.",
      plausible=32 << 20),
    S("max-cpu", "float", 0.0, "CPU cap of one sandbox in percent of one core, sustained over --cpu-window: CPU_LIMIT. 0 = off.",
      bounds=(0, 100_000)),
    S("cpu-window", "seconds", 10.0, "Seconds the CPU cap must be exceeded before the sandbox is replaced."),
    S("watch-interval", "seconds", 0.25, "Seconds between watchdog samples (psutil) of every sandbox.",
      bounds=(0.01, 60)),
    S("limit-strikes", "int", 2, "Consecutive samples over --max-memory before acting (one noisy sample kills nothing).",
      bounds=(1, 1000)),
    S("kill-grace", "seconds", 1.0, "Seconds between the rungs of the termination ladder (stop op, SIGTERM, SIGKILL).",
      bounds=(0, 600)),
    S("restore-timeout", "seconds", 30.0, "Seconds a session whose sandbox was lost waits for a healthy one; then "
      "AGENT_UNAVAILABLE.", bounds=(0.001, 3600)),
    S("max-restarts", "int", 20, "Sandbox restarts allowed within --restart-window; past it the agent is unavailable."),
    S("restart-window", "seconds", 60.0, "Window in seconds of the restart budget (spent by crashes no running turn "
      "explains).", bounds=(0.1, SECONDS_MAX)),
    S("quarantine-after", "int", 3, "Sandbox crashes during a session's turns, within --quarantine-window, after which "
      "the session runs no more turns (SESSION_QUARANTINED). 0 = never."),
    S("quarantine-window", "seconds", 300.0, "Window in seconds of --quarantine-after.", bounds=(0.1, SECONDS_MAX)),
    S("max-turns-per-worker", "int", 0, "Recycle a sandbox gracefully after this many turns (cures slow leaks). 0 = never."),
    S("max-turns-jitter", "int", 0, "Random extra turns added to --max-turns-per-worker so sandboxes do not recycle at once."),
    S("config", "file", "", "TOML file of per-agent pool options: [agents.NAME] tables of workers, "
      "sessions-per-worker, max-memory, max-cpu, max-restarts, ... (see docs/operations.md); the other options "
      "stay the defaults."),
    S("reload", "bool", False, "Watch the agent files (and .py files beside them) and reload the changed agents, "
      "keeping sessions."),
    S("sandbox-env", "str", "", "Extra environment variable names passed to sandboxes (the rest is scrubbed).", multiple=True,
      check=types.check_env_name),
    S("sandbox-user", "user", "", "When running as root, run sandboxes as this unprivileged user."),
    S("sandbox-dir", "dir", "", "Parent of each sandbox's own working directory (default: a fresh temporary directory)."),
    S("sandbox-max-files", "int", 1024, "RLIMIT_NOFILE of a sandbox: files and sockets it may hold open.",
      bounds=(0, 1 << 20)),
    S("sandbox-max-file-size", "size", "1GiB", "RLIMIT_FSIZE of a sandbox: largest file it may write.",
      plausible=64 << 10),
    S("sandbox-max-procs", "int", 64, "Processes and threads of one sandbox and all it started (RLIMIT_NPROC in its "
      "user namespace); held for --limit-strikes samples: PROCESS_LIMIT. 0 = off.", bounds=(0, 1 << 22)),
    # Sessions and turns
    S("session-ttl", "seconds", 600.0, "Seconds a detached session (its connection dropped) is kept for user.reconnect."),
    S("replay-buffer", "int", 1000, "Events kept per session for replay on reconnect (oldest dropped first; user.ack trims).",
      bounds=(1, INT_MAX)),
    S("replay-buffer-bytes", "size", "1MiB", "Bytes of events kept per session for replay (oldest dropped first).",
      plausible=16 << 10),
    S("multitask", "choice", "enqueue", "What a user.message does while a turn runs, unless its metadata.multitask "
      "says: reject (SESSION_BUSY), enqueue, interrupt (cancel, keep its work) or rollback (cancel, drop its work).",
      choices=("reject", "enqueue", "interrupt", "rollback")),
    S("max-queued-messages", "int", 10, "Messages a session holds while a turn runs or it is being restored; past it: "
      "SESSION_BUSY.", bounds=(1, 1000)),
    S("cancel-grace", "seconds", 10.0, "Seconds a sandbox has to end a cancelled turn; then the front ends it and "
      "re-opens the session (agent code that swallows cancellation).", bounds=(0.001, 3600)),
    S("turn-timeout", "seconds", 300.0, "Wall-clock limit of one turn; the turn is cancelled with TURN_TIMEOUT. 0 = none."),
    S("confirm-timeout", "seconds", 120.0, "Seconds a tool waits for user.response to agent.user_confirm; then it is denied."),
    S("max-history-messages", "int", 2000, "Messages of history the front process holds per session (oldest dropped).",
      bounds=(1, INT_MAX)),
    S("max-history-bytes", "size", "4MiB", "Bytes of history the front process holds per session (oldest dropped; a "
      "bigger single message is not kept). At most 12MiB: a session's history must fit one pipe frame.",
      bounds=(1024, 12 << 20), plausible=16 << 10),
    # Token budgets (docs/operations.md)
    S("budget-tokens-per-day", "int", 0, "LLM tokens each auth token (without auth: each session) may spend per UTC "
      "day, kept in the store; once spent, turns end with BUDGET_EXCEEDED until 00:00 UTC. 0 = no budget.",
      bounds=(0, 2**53)),
    S("max-tokens-per-turn", "int", 0, "LLM tokens one turn may spend: no LLM request starts past it "
      "(BUDGET_EXCEEDED). 0 = no limit.", bounds=(0, 2**53)),
    # Durability and scale-out
    S("store", "url", "sqlite://", "Session store: memory:, sqlite:///path.db (default file in the state dir) or "
      "redis://host:port/db.", check=types.check_store),
    S("state-dir", "path", "", "State directory (default $XDG_STATE_HOME/myagent-ws or ~/.local/state/myagent-ws)."),
    S("state-secret", "str", "", "HMAC key of state exports, from the environment or --state-secret-file (refused "
      "on the command line). Default: generated once and kept in the state dir.", secret_file="state-secret-file"),
    S("state-secret-file", "file", "", "File holding the HMAC key of state exports (or set MYAGENT_WS_STATE_SECRET); "
      "the same on every node."),
    S("state-ttl", "seconds", 86400.0, "Seconds a state export (user.request_state) stays valid.",
      bounds=(1, SECONDS_MAX)),
    S("max-state-size", "size", "4MiB", "Largest state export accepted or produced.",
      bounds=(1024, SIZE_MAX), plausible=16 << 10),
    S("lease-ttl", "seconds", 10.0, "Seconds a node's lease on a session lasts without renewal (redis store).",
      bounds=(0.1, SECONDS_MAX)),
    S("node-id", "str", "", "Name of this node in leases and logs (default: hostname-pid)."),
    # Limits
    S("max-connections", "int", 10000, "Open WebSocket connections in total; past it the upgrade gets HTTP 503.",
      bounds=(1, INT_MAX)),
    S("max-sessions", "int", 20000, "Sessions in total (attached and detached); past it: SERVER_BUSY.",
      bounds=(1, INT_MAX)),
    S("max-sessions-per-connection", "int", 100, "Sessions one connection may own; past it: TOO_MANY_SESSIONS.",
      bounds=(1, INT_MAX)),
    S("max-sessions-per-address", "int", 200, "Sessions (attached and detached) created from one client address; at "
      "the cap its oldest detached session is ended, else TOO_MANY_SESSIONS. 0 = no cap."),
    S("max-sessions-per-principal", "int", 1000, "The same per authenticated token (not applied without auth). 0 = "
      "no cap."),
    S("max-message-size", "size", "1MiB", "Largest inbound WebSocket message (after decompression); larger closes with 1009.",
      bounds=(1024, 1 << 30), plausible=4 << 10),
    S("max-user-message-chars", "int", 100_000, "Longest user.message content in characters: MESSAGE_TOO_LARGE.",
      bounds=(1, INT_MAX)),
    S("max-outbound-buffer", "size", "4MiB", "Bytes queued to one client that is not reading before it is disconnected (1008).",
      bounds=(4 << 10, SIZE_MAX), plausible=64 << 10),
    S("compression", "choice", "off", "permessage-deflate: off saves ~30 KiB per connection (see docs/operations.md).",
      choices=("off", "deflate")),
    S("max-connections-per-address", "int", 256, "Open connections from one client address; past it HTTP 503."),
    S("trusted-proxy", "str", "", "Address of a reverse proxy (repeatable): its X-Forwarded-For names the client "
      "for per-address limits and logs.", multiple=True, check=types.check_address),
    S("rate-limit", "float", 20.0, "Inbound messages per second per connection (token bucket); over it: RATE_LIMITED."),
    S("rate-burst", "int", 40, "Token bucket size: messages a connection may send at once.", bounds=(1, INT_MAX)),
    S("rate-strikes", "int", 20, "RATE_LIMITED refusals in a row after which the connection is closed (1008, after the queued refusals).",
      bounds=(1, INT_MAX)),
    S("max-tool-result-chars", "int", 20_000, "Longest tool result forwarded to the client; longer is truncated with a marker.",
      bounds=(1, INT_MAX)),
    S("idle-timeout", "seconds", 3600.0, "Close a connection that sent nothing and owns no running turn for this long. 0 = never."),
    # Authentication and transport security
    S("auth-token", "str", "", "Accepted bearer tokens, comma separated, from the environment or --auth-tokens-file "
      "(refused on the command line). Unset = no auth.", multiple=True, env_name=ENV_PREFIX + "AUTH_TOKENS",
      secret_file="auth-tokens-file"),
    S("auth-tokens-file", "file", "", "File with one accepted token per line (# comments allowed); or set "
      "MYAGENT_WS_AUTH_TOKENS."),
    S("allow-origin", "str", "", "Allowed browser Origin (repeatable, exact; '*' = any). Unset = same origin only.",
      multiple=True),
    S("allow-host", "str", "", "Host name clients use to reach this server (repeatable; '.example.com' = the domain "
      "and its subdomains; '*' = any). IP addresses, localhost and this machine's name are always served; other "
      "names get 403/421 (DNS-rebinding defence).", multiple=True),
    S("tls-cert", "file", "", "PEM certificate chain: serve wss:// and https:// directly."),
    S("tls-key", "file", "", "PEM private key for --tls-cert."),
    # Timeouts of the WebSocket layer
    S("open-timeout", "seconds", 10.0, "Seconds to complete the opening handshake; half-open handshakes are dropped."),
    S("ping-interval", "seconds", 20.0, "Seconds between keepalive pings; 0 disables keepalive."),
    S("ping-timeout", "seconds", 20.0, "Seconds to wait for a pong before the connection is considered dead."),
    S("close-timeout", "seconds", 5.0, "Seconds to wait for the client's closing handshake before dropping the TCP connection."),
    S("heartbeat-interval", "seconds", 30.0, "Seconds between system.heartbeat events to each client; 0 disables."),
    # Lifecycle and logging
    S("graceful-timeout", "seconds", 30.0, "On SIGTERM, seconds running turns get to finish before clients are closed (1001)."),
    S("log-level", "choice", "info", "Log level.", choices=("debug", "info", "warning", "error")),
    S("log-format", "choice", "text", "text for people, json for one object per line.", choices=("text", "json")),
    S("debug", "bool", False, "Shortcut for --log-level debug."),
)

SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}

ServerConfig = make_dataclass(
    "ServerConfig",
    [(s.attr, Any, field(default=s.convert(s.default))) for s in SETTINGS]
    + [("agent_file", str, field(default=""))],
    frozen=True,
)
ServerConfig.__doc__ = "Resolved server options; attribute names are the settings' names with '_'."


def resolve_workers(config: Any) -> int:
    """`--workers 0` means one sandbox per CPU this process may run on."""
    return config.workers if config.workers > 0 else _cpus()


def config_from(values: dict[str, Any], agent_file: str = "") -> Any:
    """Build a ServerConfig from raw values keyed by setting name or attribute."""
    resolved = {}
    for setting in SETTINGS:
        raw = values.get(setting.name, values.get(setting.attr))
        if raw is not None:
            resolved[setting.attr] = setting.convert(raw)
    return ServerConfig(agent_file=agent_file, **resolved)


def check_config(config: Any) -> None:
    """Refuse combinations of valid values that cannot work (ValueError, one line)."""
    c = config
    if c.tls_key and not c.tls_cert:
        raise ValueError("--tls-key needs --tls-cert (the certificate chain the key belongs to)")
    if c.status_port and c.status_port == c.port:
        raise ValueError(f"--status-port {c.status_port} is the same as --port: choose another port (or 0 = off)")
    if c.worker_timeout <= c.worker_heartbeat:
        raise ValueError(f"--worker-timeout {c.worker_timeout:g} must be longer than --worker-heartbeat "
                         f"{c.worker_heartbeat:g}, or every sandbox is replaced as silent")


def check_system(config: Any) -> None:
    """SettingError for the first file, directory or user setting this machine does not provide."""
    for s in SETTINGS:
        check, value = _SYSTEM_CHECKS.get(s.kind), getattr(config, s.attr)
        if check is not None and value:
            try:
                check(value)
            except ValueError as exc:
                raise SettingError(s, value, str(exc)) from None


def markdown_table() -> str:
    """The option reference embedded in README.md (kept in sync by a test)."""
    rows = ["| option | env | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = s.default if s.default not in ("", None) else "—"
        if s.name == "workers":
            default = "0 (CPUs)"
        option = "— (environment only)" if s.secret else f"`--{s.name}`"
        rows.append(f"| {option} | `{s.env}` | `{default}` | {s.help} |")
    return "\n".join(rows)
