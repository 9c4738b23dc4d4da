"""Which agents a server serves: names, files and per-agent pool options. Pure, no sockets.

``myagent-ws server a.py b.py``, ``myagent-ws server agents/`` (every ``*.py``
in it that does not start with ``_`` or ``.``: helpers go in ``_name.py`` or a
package) and ``name=path.py`` (an explicit name). A name is the file's stem;
it becomes the URL path ``/<name>``, so it must be URL-safe, unique and not
one of the server's own paths.

``--config agents.toml`` overrides pool options per agent; the CLI options
stay the defaults::

    [agents.weather]
    workers = 2
    max-memory = "512MiB"

Every key is one of OVERRIDABLE and is converted by the settings table's own
parser, so a value means the same in TOML, on the command line and in the
environment.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from myagent.settings import SETTINGS_BY_NAME
from myagent.supervisor.exceptions import ConfigError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# Paths the server answers itself (HTTP endpoints, pages, files): never an agent's name.
RESERVED = frozenset({"health", "ready", "status", "metrics", "dashboard", "static", "agents"})
# Options of one agent's pool and sandboxes. Server-wide ones (port, auth, store, ...) are not here.
OVERRIDABLE = ("workers", "sessions-per-worker", "max-sandboxes", "max-memory", "max-cpu", "cpu-window",
               "limit-strikes", "max-restarts", "restart-window", "quarantine-after", "quarantine-window",
               "max-turns-per-worker", "max-turns-jitter", "worker-timeout", "worker-start-timeout",
               "sandbox-max-files", "sandbox-max-file-size", "sandbox-max-procs", "sandbox-env",
               "turn-timeout", "confirm-timeout", "max-tool-result-chars", "max-sessions")
# What a TOML value may be for each kind of setting (a size is 512 or "512MiB").
TOML_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "seconds": (int, float),
                                           "size": (int, str),
                                           "str": (str, list), "bool": (bool,), "choice": (str,)}
KIND_WORDS = {"int": "an integer", "float": "a number", "seconds": "a number of seconds", "size": "a size (512MiB or bytes)", "str": "a string",
              "bool": "true or false", "choice": "a string"}


@dataclass(frozen=True)
class AgentSpec:
    name: str
    path: str  # absolute
    overrides: dict[str, Any] = field(default_factory=dict, compare=False)  # attribute name -> value

    def config(self, base: Any) -> Any:
        """The server's config with this agent's file and overrides."""
        return dataclasses.replace(base, agent_file=self.path, **self.overrides)


def check_name(name: str, origin: str) -> str:
    if not NAME_RE.match(name):
        raise ConfigError(f"agent name {name!r} ({origin}): use letters, digits, '-' and '_' (at most 64, "
                          "starting with a letter or digit); or give one as NAME=PATH.py")
    if name.lower() in RESERVED:
        raise ConfigError(f"agent name {name!r} ({origin}) is one of the server's own paths "
                          f"({', '.join(sorted(RESERVED))}); give another as NAME=PATH.py")
    return name


def directory_agents(directory: str) -> list[str]:
    """The agent files of a served directory, sorted: ``*.py`` not starting with ``_`` or ``.``."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise ConfigError(f"{directory}: {exc.strerror or exc}") from None
    return [os.path.join(directory, n) for n in names
            if n.endswith(".py") and not n.startswith(("_", ".")) and os.path.isfile(os.path.join(directory, n))]


def stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def parse_targets(targets: tuple[str, ...] | list[str]) -> tuple[list[AgentSpec], list[str]]:
    """(agents, served directories) from the command line's arguments."""
    specs: list[AgentSpec] = []
    directories: list[str] = []
    for target in targets:
        name, sep, path = target.partition("=")
        if not sep:
            name, path = "", target
        path = os.path.abspath(path)
        if os.path.isdir(path):
            if name:
                raise ConfigError(f"{target}: NAME=PATH names one agent file, not a directory")
            directories.append(path)
            found = directory_agents(path)
            if not found:
                raise ConfigError(f"{target}: the directory holds no agent file (*.py not starting with '_')")
            specs += [AgentSpec(check_name(stem(p), p), p) for p in found]
        elif not os.path.isfile(path):
            raise ConfigError(f"Agent file not found: {path if sep else target}")
        else:
            specs.append(AgentSpec(check_name(name or stem(path), target), path))
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(f"two agents are named {spec.name!r} ({seen[spec.name]} and {spec.path}); "
                              "name one with NAME=PATH.py")
        seen[spec.name] = spec.path
    if not specs:
        raise ConfigError("no agent file given")
    return specs, directories


def convert_overrides(name: str, table: Any, where: str) -> dict[str, Any]:
    """One agent's TOML table -> {attribute: value}, each value through the settings table's parser."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [agents.{name}] must be a table of options")
    result: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in OVERRIDABLE:
            hint = " (a server-wide option: set it on the command line)" if key in SETTINGS_BY_NAME else ""
            raise ConfigError(f"{where}: [agents.{name}] unknown key {key!r}{hint}; per-agent keys: "
                              f"{', '.join(OVERRIDABLE)}")
        setting = SETTINGS_BY_NAME[key]
        if not isinstance(raw, TOML_TYPES[setting.kind]) or isinstance(raw, bool) != (setting.kind == "bool") \
                or isinstance(raw, list) and not setting.multiple:
            raise ConfigError(f"{where}: [agents.{name}] {key}: {raw!r} is not {KIND_WORDS[setting.kind]}")
        try:
            # A TOML integer size is a bare number of bytes, as on the command line (and gets its hint).
            value = setting.convert(str(raw) if setting.kind == "size" else raw)
        except ValueError as exc:
            raise ConfigError(f"{where}: [agents.{name}] {exc}") from None
        result[setting.attr] = value
    return result


def load_overrides(path: str, names: list[str], strict: bool = True) -> dict[str, dict[str, Any]]:
    """{agent name: {attribute: value}} from a TOML file. ``strict``: every section names a served
    agent (off when a directory is served: its agents may come later)."""
    try:
        with open(path, "rb") as handle:
            doc = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML: {exc}") from None
    extra = set(doc) - {"agents"}
    if extra:
        raise ConfigError(f"--config {path}: unknown top-level key {sorted(extra)[0]!r}; "
                          "write [agents.NAME] tables")
    agents = doc.get("agents", {})
    if not isinstance(agents, dict):
        raise ConfigError(f"--config {path}: 'agents' must be a table of [agents.NAME] tables")
    result = {}
    for name, table in agents.items():
        check_name(name, f"--config {path}")
        if strict and name not in names:
            raise ConfigError(f"--config {path}: [agents.{name}] names no served agent (served: {', '.join(names)})")
        result[name] = convert_overrides(name, table, f"--config {path}")
    return result


def with_overrides(specs: list[AgentSpec], overrides: dict[str, dict[str, Any]]) -> list[AgentSpec]:
    return [dataclasses.replace(s, overrides=overrides.get(s.name, {})) for s in specs]
