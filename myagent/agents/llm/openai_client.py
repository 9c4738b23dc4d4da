"""One ``AsyncOpenAI`` client per process, event loop and endpoint, shared by every agent.

A sandbox hosts hundreds of sessions, each with its own agent; were each agent to own a
client, each would own a connection pool (and the TCP connects and ~0.9 MB of memory that
come with it) for the life of its session. Here every agent of a process that talks to the
same endpoint with the same settings shares one client, hence one keep-alive pool.

Clients are made lazily, on the first request, because the process may fork after the
agent file is imported (the zygote): a client made before the fork would be shared by every
sandbox, and its pool with it. A pool is also bound to the event loop it first ran on, so
the key includes the running loop; ``Agent.run()`` uses a loop per call and closes its
client before that loop ends (:func:`close_clients`). A registry inherited across a fork
is dropped, never used or closed: its sockets belong to the parent.

Bound: one client per (loop, endpoint, key, timeout, retries) alive at a time; entries of
closed loops are purged whenever a client is made. Each client's pool is the SDK's default
(at most 1000 connections, 100 kept alive).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import NamedTuple

import openai

from .openai_errors import safe_url

__all__ = ["ClientKey", "shared_client", "close_clients", "client_count", "forget_closed_loops"]

logger = logging.getLogger("myagent.agents.llm.openai")


class ClientKey(NamedTuple):
    """What makes two agents' clients interchangeable."""

    base_url: str | None
    api_key: str
    timeout: float
    connect_timeout: float
    max_retries: int


_clients: dict[tuple[int, ClientKey], tuple[asyncio.AbstractEventLoop, openai.AsyncOpenAI]] = {}
_pid = os.getpid()


def _own_registry() -> None:
    global _pid
    if _pid != os.getpid():  # forked: the parent's clients (and their sockets) are not ours
        _clients.clear()
        _pid = os.getpid()


def shared_client(key: ClientKey) -> openai.AsyncOpenAI:
    """The client for ``key`` on the running loop, made on first use."""
    _own_registry()
    loop = asyncio.get_running_loop()
    slot = (id(loop), key)
    entry = _clients.get(slot)
    if entry is not None and entry[0] is loop:
        return entry[1]
    forget_closed_loops()
    client = openai.AsyncOpenAI(
        api_key=key.api_key,
        base_url=key.base_url,
        timeout=openai.Timeout(key.timeout, connect=key.connect_timeout),
        max_retries=key.max_retries,
    )
    _clients[slot] = (loop, client)
    logger.debug("created the shared OpenAI client for %s in process %d", safe_url(key.base_url), os.getpid())
    return client


async def close_clients(key: ClientKey | None = None) -> None:
    """Close the clients of the running loop (only ``key``'s if given); call before the loop ends."""
    _own_registry()
    loop = asyncio.get_running_loop()
    for slot, (owner, client) in list(_clients.items()):
        if owner is loop and (key is None or slot[1] == key):
            del _clients[slot]
            await client.close()


def forget_closed_loops() -> int:
    """Drop the clients of loops that have ended (a finished ``asyncio.run()`` whose caller
    did not close them: their pools cannot be closed any more); return how many."""
    _own_registry()
    dead = [slot for slot, (loop, _) in _clients.items() if loop.is_closed()]
    for slot in dead:
        del _clients[slot]
    return len(dead)


def client_count() -> int:
    """Clients of live loops in this process (for tests and memory checks)."""
    forget_closed_loops()
    return len(_clients)
