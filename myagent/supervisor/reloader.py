"""Change detection for --reload: the agent files and the .py files beside them.

Polling mtimes once a second needs no extra dependency and no inotify watch
limits; a directory of agent code is small.
"""

from __future__ import annotations

import os


def snapshot(agent_file: str) -> dict[str, float]:
    """mtime (ns) of the agent file and every .py file in its directory."""
    directory = os.path.dirname(os.path.abspath(agent_file))
    result: dict[str, float] = {}
    try:
        names = os.listdir(directory)
    except OSError:
        names = []
    for name in names:
        path = os.path.join(directory, name)
        if name.endswith(".py") or path == os.path.abspath(agent_file):
            try:
                result[path] = os.stat(path).st_mtime_ns
            except OSError:
                continue
    return result


def changed_files(before: dict[str, float], after: dict[str, float]) -> set[str]:
    """Paths added, removed or modified between two snapshots."""
    return {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}


def snapshot_dirs(directories: set[str]) -> dict[str, float]:
    """mtime (ns) of every .py file in each of ``directories``."""
    result: dict[str, float] = {}
    for directory in sorted(directories):
        result.update(snapshot(os.path.join(directory, "__init__.py")))  # any name: its directory is listed
    return result


def plan(changed: set[str], agent_files: dict[str, str], listed: dict[str, list[str]]
         ) -> tuple[set[str], list[str], set[str]]:
    """What a change means with several agents: (names to reload, files to add, names to retire).

    ``agent_files`` maps each served agent's name to its file; ``listed`` each served directory
    to the agent files it holds now. An agent reloads when its own file changed or another .py
    beside it that is no agent's file (a helper module); an agent file that appeared in a served
    directory is added, one that went away is retired; neither touches the other agents.
    """
    served = set(agent_files.values())
    present = {path for paths in listed.values() for path in paths}
    added = [path for paths in listed.values() for path in paths if path not in served]
    retired = {name for name, path in agent_files.items()
               if os.path.dirname(path) in listed and path not in present}
    agents = served | present
    helpers = {os.path.dirname(path) for path in changed if path not in agents}
    reload = {name for name, path in agent_files.items()
              if name not in retired and (path in changed or os.path.dirname(path) in helpers)}
    return reload, added, retired
