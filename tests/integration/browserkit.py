"""Headless Chromium for the browser tests: the ``browser`` fixture and a ``Console`` tab.

Driven with Playwright for Python against the system's Chromium (Debian's
``chromium`` package; Playwright's own browser download is never used).
Screenshots go to artifacts/. Test modules set ``pytestmark = BROWSER_MARKS``,
which skips them, with the reason, when Playwright or Chromium is missing,
and define a module-scoped ``browser`` fixture with ``yield from chromium()``:

    apt-get install -y chromium
    pip install playwright
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = expect = Browser = Page = None

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = os.environ.get("MYAGENT_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--headless=new", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
TIMEOUT_MS = 15_000

BROWSER_MARKS = [
    pytest.mark.integration,
    pytest.mark.skipif(sync_playwright is None, reason="Playwright for Python is not installed (pip install playwright)"),
    pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed (apt-get install -y chromium)"),
]


def chromium() -> Iterator["Browser"]:
    """The body of a module's ``browser`` fixture: ``yield from chromium()``."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Console:
    """One console tab, with every WebSocket frame it sent and received."""

    def __init__(self, browser: "Browser", url: str) -> None:
        # bypass_csp: the pages' CSP forbids eval, which Playwright's wait_for_function uses.
        self.context = browser.new_context(bypass_csp=True, viewport={"width": 1100, "height": 860})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page: Page = self.context.new_page()
        self.sent: list[dict] = []
        self.received: list[dict] = []
        self.sockets: list[str] = []
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("websocket", self._on_socket)
        self.page.goto(url)

    def _on_socket(self, ws) -> None:
        self.sockets.append(ws.url)
        ws.on("framesent", lambda payload: self.sent.append(json.loads(payload)))
        ws.on("framereceived", lambda payload: self.received.append(json.loads(payload)))

    def wait_ready(self) -> None:
        self.page.wait_for_function("window.__console && window.__console.sessionReady")

    def say(self, text: str) -> None:
        expect(self.page.locator("#send")).to_be_enabled()
        self.page.fill("#input", text)
        self.page.press("#input", "Enter")

    def wait_idle(self) -> None:
        """Until the running turn ended (Send enabled again, no streaming bubble)."""
        self.page.wait_for_function("window.__console.sessionReady && !window.__console.state.running")
        expect(self.page.locator(".msg.assistant.streaming")).to_have_count(0)

    def answers(self) -> list[str]:
        return self.page.locator(".msg.assistant .bubble").all_inner_texts()

    def state(self) -> dict:
        return self.page.evaluate("window.__console.state")

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / name))

    def close(self) -> None:
        assert not self.errors, self.errors
        self.context.close()
