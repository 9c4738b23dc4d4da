"""The console and the dashboard of a server with several agents, in a real headless Chromium:
the console opens the first agent, its picker lists them and opens another (its own socket
path, its own conversation); the dashboard groups the sandboxes by agent.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.serverproc import AGENTS, SCRIPTS, ServerProcess

from .test_browser import ARTIFACTS, TIMEOUT_MS, Console, browser, pytestmark  # noqa: F401 (fixture, marks)

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - skipped by pytestmark
    expect = None


@pytest.fixture(scope="module")
def two() -> Iterator[ServerProcess]:
    srv = ServerProcess(f"weather={AGENTS / 'test_agent.py'}", f"probe={AGENTS / 'probe_agent.py'}",
                        "--workers", "1", llm=f"scripted:{SCRIPTS / 'test_script.json'}").start(timeout=40)
    try:
        yield srv
    finally:
        srv.stop()


def test_console_opens_the_first_agent_and_the_picker_opens_another(browser, two):  # noqa: F811
    tab = Console(browser, two.http + "/")
    try:
        tab.wait_ready()
        assert tab.page.url.endswith("/?agent=weather")
        assert tab.sockets[-1].endswith("/weather")
        picker = tab.page.locator("#agent-picker")
        expect(picker).to_have_value("weather")
        assert picker.locator("option").all_inner_texts() == ["weather (test-agent)", "probe"]
        tab.say("hello there")
        tab.wait_idle()
        assert "You said: hello there" in tab.answers()[-1]
        weather_session = tab.state()["sessionId"]

        picker.select_option("probe")
        tab.page.wait_for_url("**/?agent=probe")
        tab.wait_ready()
        assert tab.sockets[-1].endswith("/probe")
        connected = [e for e in tab.received if e.get("event") == "system.connected"][-1]
        assert connected["metadata"]["agent"] == "probe"
        expect(tab.page.locator("#agent-name")).to_have_text("probe")
        assert tab.state()["sessionId"] != weather_session and tab.answers() == []  # its own conversation
        tab.say("and you?")
        tab.wait_idle()
        assert "You said: and you?" in tab.answers()[-1]
        tab.shot("console-agents.png")

        picker.select_option("weather")  # back: the weather conversation is still there
        tab.page.wait_for_url("**/?agent=weather")
        tab.wait_ready()
        assert tab.state()["sessionId"] == weather_session
        assert any("hello there" in a for a in tab.answers())
    finally:
        tab.close()


def test_dashboard_groups_sandboxes_by_agent(browser, two):  # noqa: F811
    context = browser.new_context(bypass_csp=True, viewport={"width": 1300, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(two.http + "/dashboard")
    groups = page.locator("#sandboxes tr.agent-group")
    expect(groups).to_have_count(2)
    expect(groups.nth(0)).to_contain_text("weather /weather · test-agent")
    expect(groups.nth(1)).to_contain_text("probe /probe · probe")
    expect(page.locator("#agent-name")).to_have_text("2 agents")
    # The cards count every agent: two sessions were created, one per agent, in the console test.
    total = sum(s["totals"]["sessions_created"] for s in two.status()["agents"])
    expect(page.locator("#c-running-sub")).to_contain_text("started")
    assert total >= 2
    expect(page.locator("#c-sessions")).to_have_text(str(sum(s["sessions"]["total"] for s in two.status()["agents"])))
    pids = {s["name"]: [x["pid"] for x in s["sandboxes"]] for s in two.status()["agents"]}
    for name in ("weather", "probe"):
        cells = page.locator(f"#sandboxes tr.sandbox[data-agent={name}] td:nth-child(2)").all_inner_texts()
        assert [int(t) for t in cells] == pids[name]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-agents.png"), full_page=True)
    assert not errors, errors
    context.close()
