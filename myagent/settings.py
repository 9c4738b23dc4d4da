"""The one settings table of `myagent-ws server`.

Every option lives here once: name, type, default, help. The table drives the
click options, the ``MYAGENT_WS_<NAME>`` environment variables, the README's
option reference (``myagent-ws settings --markdown``) and the ``ServerConfig``
the server reads. Timeouts are seconds as ``float``; ``0`` disables the ones
documented as optional.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, make_dataclass
from typing import Any

ENV_PREFIX = "MYAGENT_WS_"

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4,
               "tb": 1000**4, "tib": 1024**4}


def parse_size(text: str | int) -> int:
    """Parse ``512MB``, ``64KiB``, ``1048576`` into bytes (decimal and binary units)."""
    if isinstance(text, int):
        return text
    match = _SIZE_RE.match(str(text))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 512MB, 64KiB, 1048576)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


@dataclass(frozen=True)
class Setting:
    """One server option. ``kind`` is int, float, str, bool, size or choice."""

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
    bounds: tuple[float, float] | None = None  # inclusive range of a number or size

    @property
    def env(self) -> str:
        return self.env_name or ENV_PREFIX + self.name.upper().replace("-", "_")

    @property
    def secret(self) -> bool:
        return bool(self.secret_file)

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    def convert(self, raw: Any) -> Any:
        """Convert a raw CLI/env value to this setting's type, with a clear error."""
        if raw is None:
            return None
        if self.multiple:
            # Repeated options, or one comma-separated value (how the environment spells a list).
            items = raw if isinstance(raw, (list, tuple)) else [raw]
            return tuple(self.convert_one(part.strip()) for item in items for part in str(item).split(",")
                         if part.strip())
        return self.convert_one(raw)

    def convert_one(self, raw: Any) -> Any:
        value = self._convert_one(raw)
        if self.bounds is not None and not self.bounds[0] <= value <= self.bounds[1]:
            low, high = (int(b) if float(b).is_integer() else b for b in self.bounds)
            raise ValueError(f"--{self.name}: {raw!r} is out of range ({low} to {high})")
        return value

    def _convert_one(self, raw: Any) -> Any:
        try:
            if self.kind == "int":
                return int(raw)
            if self.kind == "float":
                return float(raw)
            if self.kind == "size":
                return parse_size(raw)
            if self.kind == "bool":
                if isinstance(raw, bool):
                    return raw
                value = str(raw).strip().lower()
                if value in ("1", "true", "yes", "on"):
                    return True
                if value in ("0", "false", "no", "off"):
                    return False
                raise ValueError(f"not a boolean: {raw!r}")
            if self.kind == "choice" and str(raw) not in self.choices:
                raise ValueError(f"{raw!r} is not one of {', '.join(self.choices)}")
            return str(raw).strip() if self.kind != "choice" else str(raw)
        except ValueError as exc:
            raise ValueError(f"--{self.name}: {exc}") from None


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


S = Setting
SETTINGS: tuple[Setting, ...] = (
    # Listening
    S("host", "str", "127.0.0.1", "Address to bind. Binding beyond loopback without auth prints a warning."),
    S("port", "int", 8080, "TCP port for WebSockets and the HTTP endpoints."),
    S("status-port", "int", 0, "Also serve /health, /ready, /status, /metrics and /dashboard (plain HTTP, no "
      "WebSocket) on this port, e.g. for a private network. 0 = off."),
    # Sandbox pool
    S("workers", "int", 0, "Sandbox processes. 0 = one per CPU."),
    S("sessions-per-worker", "int", 1000, "Sessions one sandbox hosts at most; 1 gives every session its own process."),
    S("max-sandboxes", "int", 0, "Sandboxes the pool may grow to when every one is full (extra ones stop once "
      "empty). 0 = --workers: no growth."),
    S("worker-heartbeat", "float", 0.5, "Seconds between a sandbox's heartbeats to the front process."),
    S("worker-timeout", "float", 10.0, "A sandbox silent this long (event loop blocked) is replaced: WORKER_TIMEOUT."),
    S("worker-start-timeout", "float", 30.0, "Seconds a sandbox (or the zygote loading the agent file) may take to get ready."),
    S("sandbox-open-timeout", "float", 10.0, "Seconds a sandbox has to confirm it hosts a session (new, restored or "
      "moved).", bounds=(0.001, 3600)),
    S("sandbox-max-event-size", "size", "1MiB", "Largest event or history message a sandbox may send; a bigger "
      "one is dropped as an offence (agent output is bounded by --max-tool-result-chars and the model).",
      bounds=(64 << 10, 12 << 20)),
    S("sandbox-max-offences", "int", 10, "Frames a sandbox may send for sessions or turns it does not own before it is "
      "replaced (SANDBOX_MISBEHAVED); each is dropped and counted."),
    # Supervision (watchdog, restarts, recycling)
    S("max-memory", "size", "1GiB", "RSS cap of one sandbox; over it for --limit-strikes samples: MEMORY_LIMIT. 0 = off."),
    S("max-cpu", "float", 0.0, "CPU cap of one sandbox in percent of one core, sustained over --cpu-window: CPU_LIMIT. 0 = off."),
    S("cpu-window", "float", 10.0, "Seconds the CPU cap must be exceeded before the sandbox is replaced."),
    S("watch-interval", "float", 0.25, "Seconds between watchdog samples (psutil) of every sandbox."),
    S("limit-strikes", "int", 2, "Consecutive samples over --max-memory before acting (one noisy sample kills nothing)."),
    S("kill-grace", "float", 1.0, "Seconds between the rungs of the termination ladder (stop op, SIGTERM, SIGKILL).",
      bounds=(0, 600)),
    S("restore-timeout", "float", 30.0, "Seconds a session whose sandbox was lost waits for a healthy one; then "
      "AGENT_UNAVAILABLE.", bounds=(0.001, 3600)),
    S("max-restarts", "int", 20, "Sandbox restarts allowed within --restart-window; past it the agent is unavailable."),
    S("restart-window", "float", 60.0, "Window in seconds of the restart budget (spent by crashes no running turn "
      "explains)."),
    S("quarantine-after", "int", 3, "Sandbox crashes during a session's turns, within --quarantine-window, after which "
      "the session runs no more turns (SESSION_QUARANTINED). 0 = never."),
    S("quarantine-window", "float", 300.0, "Window in seconds of --quarantine-after."),
    S("max-turns-per-worker", "int", 0, "Recycle a sandbox gracefully after this many turns (cures slow leaks). 0 = never."),
    S("max-turns-jitter", "int", 0, "Random extra turns added to --max-turns-per-worker so sandboxes do not recycle at once."),
    S("reload", "bool", False, "Watch the agent file (and .py files beside it) and reload on change, keeping sessions."),
    S("sandbox-env", "str", "", "Extra environment variable names passed to sandboxes (the rest is scrubbed).", multiple=True),
    S("sandbox-user", "str", "", "When running as root, run sandboxes as this unprivileged user."),
    S("sandbox-dir", "str", "", "Parent of each sandbox's own working directory (default: a fresh temporary directory)."),
    S("sandbox-max-files", "int", 1024, "RLIMIT_NOFILE of a sandbox: files and sockets it may hold open."),
    S("sandbox-max-file-size", "size", "1GiB", "RLIMIT_FSIZE of a sandbox: largest file it may write."),
    S("sandbox-max-procs", "int", 64, "Processes and threads of one sandbox and all it started (RLIMIT_NPROC in its "
      "user namespace); held for --limit-strikes samples: PROCESS_LIMIT. 0 = off."),
    # Sessions and turns
    S("session-ttl", "float", 600.0, "Seconds a detached session (its connection dropped) is kept for user.reconnect."),
    S("replay-buffer", "int", 1000, "Events kept per session for replay on reconnect (oldest dropped first; user.ack trims)."),
    S("replay-buffer-bytes", "size", "1MiB", "Bytes of events kept per session for replay (oldest dropped first)."),
    S("multitask", "choice", "enqueue", "What a user.message does while a turn runs, unless its metadata.multitask "
      "says: reject (SESSION_BUSY), enqueue, interrupt (cancel, keep its work) or rollback (cancel, drop its work).",
      choices=("reject", "enqueue", "interrupt", "rollback")),
    S("max-queued-messages", "int", 10, "Messages a session holds while a turn runs or it is being restored; past it: "
      "SESSION_BUSY.", bounds=(1, 1000)),
    S("cancel-grace", "float", 10.0, "Seconds a sandbox has to end a cancelled turn; then the front ends it and "
      "re-opens the session (agent code that swallows cancellation).", bounds=(0.001, 3600)),
    S("turn-timeout", "float", 300.0, "Wall-clock limit of one turn; the turn is cancelled with TURN_TIMEOUT. 0 = none."),
    S("confirm-timeout", "float", 120.0, "Seconds a tool waits for user.response to agent.user_confirm; then it is denied."),
    S("max-history-messages", "int", 2000, "Messages of history the front process holds per session (oldest dropped)."),
    S("max-history-bytes", "size", "4MiB", "Bytes of history the front process holds per session (oldest dropped; a "
      "bigger single message is not kept). At most 12MiB: a session's history must fit one pipe frame.",
      bounds=(1024, 12 << 20)),
    # Token budgets (docs/operations.md)
    S("budget-tokens-per-day", "int", 0, "LLM tokens each auth token (without auth: each session) may spend per UTC "
      "day, kept in the store; once spent, turns end with BUDGET_EXCEEDED until 00:00 UTC. 0 = no budget.",
      bounds=(0, 2**53)),
    S("max-tokens-per-turn", "int", 0, "LLM tokens one turn may spend: no LLM request starts past it "
      "(BUDGET_EXCEEDED). 0 = no limit.", bounds=(0, 2**53)),
    # Durability and scale-out
    S("store", "str", "sqlite://", "Session store: memory:, sqlite:///path.db (default file in the state dir) or "
      "redis://host:port/db."),
    S("state-dir", "str", "", "State directory (default $XDG_STATE_HOME/myagent-ws or ~/.local/state/myagent-ws)."),
    S("state-secret", "str", "", "HMAC key of state exports, from the environment or --state-secret-file (refused "
      "on the command line). Default: generated once and kept in the state dir.", secret_file="state-secret-file"),
    S("state-secret-file", "str", "", "File holding the HMAC key of state exports (or set MYAGENT_WS_STATE_SECRET); "
      "the same on every node."),
    S("state-ttl", "float", 86400.0, "Seconds a state export (user.request_state) stays valid."),
    S("max-state-size", "size", "4MiB", "Largest state export accepted or produced."),
    S("lease-ttl", "float", 10.0, "Seconds a node's lease on a session lasts without renewal (redis store)."),
    S("node-id", "str", "", "Name of this node in leases and logs (default: hostname-pid)."),
    # Limits
    S("max-connections", "int", 10000, "Open WebSocket connections in total; past it the upgrade gets HTTP 503."),
    S("max-sessions", "int", 20000, "Sessions in total (attached and detached); past it: SERVER_BUSY."),
    S("max-sessions-per-connection", "int", 100, "Sessions one connection may own; past it: TOO_MANY_SESSIONS."),
    S("max-sessions-per-address", "int", 200, "Sessions (attached and detached) created from one client address; at "
      "the cap its oldest detached session is ended, else TOO_MANY_SESSIONS. 0 = no cap."),
    S("max-sessions-per-principal", "int", 1000, "The same per authenticated token (not applied without auth). 0 = "
      "no cap."),
    S("max-message-size", "size", "1MiB", "Largest inbound WebSocket message (after decompression); larger closes with 1009."),
    S("max-user-message-chars", "int", 100_000, "Longest user.message content in characters: MESSAGE_TOO_LARGE."),
    S("max-outbound-buffer", "size", "4MiB", "Bytes queued to one client that is not reading before it is disconnected (1008)."),
    S("compression", "choice", "off", "permessage-deflate: off saves ~30 KiB per connection (see docs/operations.md).",
      choices=("off", "deflate")),
    S("max-connections-per-address", "int", 256, "Open connections from one client address; past it HTTP 503."),
    S("trusted-proxy", "str", "", "Address of a reverse proxy (repeatable): its X-Forwarded-For names the client "
      "for per-address limits and logs.", multiple=True),
    S("rate-limit", "float", 20.0, "Inbound messages per second per connection (token bucket); over it: RATE_LIMITED."),
    S("rate-burst", "int", 40, "Token bucket size: messages a connection may send at once."),
    S("rate-strikes", "int", 20, "RATE_LIMITED refusals in a row after which the connection is closed (1008, after the queued refusals)."),
    S("max-tool-result-chars", "int", 20_000, "Longest tool result forwarded to the client; longer is truncated with a marker."),
    S("idle-timeout", "float", 3600.0, "Close a connection that sent nothing and owns no running turn for this long. 0 = never."),
    # Authentication and transport security
    S("auth-token", "str", "", "Accepted bearer tokens, comma separated, from the environment or --auth-tokens-file "
      "(refused on the command line). Unset = no auth.", multiple=True, env_name=ENV_PREFIX + "AUTH_TOKENS",
      secret_file="auth-tokens-file"),
    S("auth-tokens-file", "str", "", "File with one accepted token per line (# comments allowed); or set "
      "MYAGENT_WS_AUTH_TOKENS."),
    S("allow-origin", "str", "", "Allowed browser Origin (repeatable, exact; '*' = any). Unset = same origin only.",
      multiple=True),
    S("allow-host", "str", "", "Host name clients use to reach this server (repeatable; '.example.com' = the domain "
      "and its subdomains; '*' = any). IP addresses, localhost and this machine's name are always served; other "
      "names get 403/421 (DNS-rebinding defence).", multiple=True),
    S("tls-cert", "str", "", "PEM certificate chain: serve wss:// and https:// directly."),
    S("tls-key", "str", "", "PEM private key for --tls-cert."),
    # Timeouts of the WebSocket layer
    S("open-timeout", "float", 10.0, "Seconds to complete the opening handshake; half-open handshakes are dropped."),
    S("ping-interval", "float", 20.0, "Seconds between keepalive pings; 0 disables keepalive."),
    S("ping-timeout", "float", 20.0, "Seconds to wait for a pong before the connection is considered dead."),
    S("close-timeout", "float", 5.0, "Seconds to wait for the client's closing handshake before dropping the TCP connection."),
    S("heartbeat-interval", "float", 30.0, "Seconds between system.heartbeat events to each client; 0 disables."),
    # Lifecycle and logging
    S("graceful-timeout", "float", 30.0, "On SIGTERM, seconds running turns get to finish before clients are closed (1001)."),
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
