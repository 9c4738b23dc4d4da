"""Fixtures of the store tests: a temporary SQLite file, a real redis-server per module."""

from __future__ import annotations

from typing import Iterator

import orjson

import pytest

from tests.supervisor.store.redisproc import MISSING, RedisServer, available


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server per test module, on a free loopback port; skipped if not installed."""
    if not available():
        pytest.skip(MISSING)
    with RedisServer() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone (for tests that stop or fill it)."""
    if not available():
        pytest.skip(MISSING)
    with RedisServer() as server:
        yield server


def as_json(message: dict) -> str:
    """History messages reach the store as JSON text (how the front process holds them)."""
    return orjson.dumps(message).decode()
