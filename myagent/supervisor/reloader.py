"""Change detection for --reload: the agent file and the .py files beside it.

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
