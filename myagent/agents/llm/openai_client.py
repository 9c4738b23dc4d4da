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
closed loops are purged whenever a client is made. Each client's pool holds at most
``max_connections`` connections (``MYAGENT_LLM_MAX_CONNECTIONS``, default 1000, the SDK's
bound), all of which may stay alive, each for ``KEEPALIVE_EXPIRY`` seconds once idle.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
from typing import Any, NamedTuple

import openai

from .openai_errors import safe_url

__all__ = ["ClientKey", "shared_client", "close_clients", "client_count", "forget_closed_loops",
           "http_transport", "DEFAULT_MAX_CONNECTIONS", "KEEPALIVE_EXPIRY"]

logger = logging.getLogger("myagent.agents.llm.openai")

DEFAULT_MAX_CONNECTIONS = 1000  # per client (process, endpoint): the SDK's own bound
KEEPALIVE_EXPIRY = 5.0          # seconds an idle connection stays open (the SDK's default)


class ClientKey(NamedTuple):
    """What makes two agents' clients interchangeable."""

    base_url: str | None
    api_key: str
    timeout: float
    connect_timeout: float
    max_retries: int
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    http: str = "httpx"  # the SDK's HTTP client: "httpx" or "aiohttp" (see http_transport)


def http_transport() -> str:
    """``aiohttp`` or ``httpx``: ``MYAGENT_LLM_HTTP`` if set, else aiohttp when it is installed
    (``pip install 'openai[aiohttp]'``), else httpx (the SDK's default)."""
    chosen = os.environ.get("MYAGENT_LLM_HTTP", "").strip().lower()
    if chosen in ("aiohttp", "httpx"):
        return chosen
    return "aiohttp" if importlib.util.find_spec("aiohttp") is not None else "httpx"


def _http_client(key: ClientKey, timeout: openai.Timeout) -> Any:
    """One of the SDK's own HTTP client classes (its defaults: redirects, timeouts), every
    connection allowed to stay alive.

    * ``httpx`` (``DefaultAsyncHttpxClient``): the SDK keeps 100 of its 1000 connections
      alive; a sandbox with more than 100 requests in flight closed and reopened connections
      all the time. Its pool also scans every connection (a select() each) per request: with
      250 requests in flight that was over half of the sandbox's CPU.
    * ``aiohttp`` (``DefaultAioHttpClient``, the SDK's documented option "for improved
      concurrency"): a C HTTP parser and a pool that does not scan; errors are mapped to the
      same SDK exceptions.
    """
    limits = type(openai.DEFAULT_CONNECTION_LIMITS)(
        max_connections=key.max_connections, max_keepalive_connections=key.max_connections,
        keepalive_expiry=KEEPALIVE_EXPIRY)
    if key.http == "aiohttp":
        return openai.DefaultAioHttpClient(limits=limits, timeout=timeout)
    return openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout)


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
    timeout = openai.Timeout(key.timeout, connect=key.connect_timeout)
    client = openai.AsyncOpenAI(
        api_key=key.api_key,
        base_url=key.base_url,
        timeout=timeout,
        max_retries=key.max_retries,
        http_client=_http_client(key, timeout),
    )
    _clients[slot] = (loop, client)
    logger.debug("created the shared OpenAI client for %s (%s) in process %d", safe_url(key.base_url), key.http,
                 os.getpid())
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
