"""Session stores chosen by ``--store URL``: ``memory:``, ``sqlite:///path``, ``redis://host:port/db``."""

from __future__ import annotations

import os

from myagent.supervisor.store.base import MemoryStore, SessionRecord, SessionStore, StoredSession, StoreError

__all__ = ["MemoryStore", "SessionRecord", "SessionStore", "StoredSession", "StoreError", "open_store",
           "default_state_dir"]


def default_state_dir() -> str:
    """``$MYAGENT_WS_STATE_DIR``, else ``$XDG_STATE_HOME/myagent-ws``, else ``~/.local/state/myagent-ws``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.environ.get("MYAGENT_WS_STATE_DIR") or os.path.join(base, "myagent-ws")


def open_store(url: str, **limits: int) -> SessionStore:
    """Build the store for ``url`` (not started yet). Raises ValueError for an unknown scheme."""
    if url in ("memory:", "memory", "memory://"):
        return MemoryStore(**limits)
    if url.startswith("sqlite://"):
        from myagent.supervisor.store.sqlite import SQLiteStore

        # sqlite:///abs/path.db is absolute, sqlite://rel.db relative; sqlite:// alone is the default file.
        path = url[len("sqlite://"):]
        if path in ("", "/"):
            path = os.path.join(default_state_dir(), "sessions.db")
        return SQLiteStore(path, **limits)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from myagent.supervisor.store.redis import RedisStore

        return RedisStore(url, **limits)
    raise ValueError(f"unknown --store URL {url!r}: use memory:, sqlite:///path or redis://host:port/db")
