"""Fixtures for the LLM provider tests: a scripted fake endpoint on 127.0.0.1."""

from __future__ import annotations

import socket
from typing import Iterator

import pytest

from myagent.agents.llm.fake_server import FakeLLMServer

from ._samples import WEATHER_SCRIPT


@pytest.fixture
def fake_llm_server() -> Iterator[FakeLLMServer]:
    """A running FakeLLMServer with WEATHER_SCRIPT; fast retries for failure tests."""
    with FakeLLMServer(WEATHER_SCRIPT, retry_after_ms=5) as server:
        yield server


@pytest.fixture
def closed_port_url() -> str:
    """Base URL of a 127.0.0.1 port nobody listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture(params=["httpx", "aiohttp"])
def http_transport(request, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with each HTTP client the OpenAI provider can put under the SDK."""
    if request.param == "aiohttp":
        pytest.importorskip("aiohttp", reason="pip install 'openai[aiohttp]'")
    monkeypatch.setenv("MYAGENT_LLM_HTTP", request.param)
    return request.param
