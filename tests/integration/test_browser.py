"""The browser console (/) and dashboard (/dashboard) in a real headless Chromium.

How Chromium is driven, and when these tests are skipped: see browserkit.py.
test_browser_console.py has Markdown, reasoning, tokens, the turn rate and narrow screens.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from .browserkit import ARTIFACTS, BROWSER_MARKS, TIMEOUT_MS, Browser, Console, chromium, expect

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium()


@pytest.fixture
def console(browser, server) -> Iterator[Console]:
    tab = Console(browser, server.http + "/")
    tab.wait_ready()
    yield tab
    tab.close()


def test_console_streams_an_answer_with_a_tool_call(console):
    console.say("What's the weather in Beijing?")
    console.wait_idle()
    assert console.answers() == ["The weather is Beijing: sunny, 25°C."]
    partials = [e for e in console.received if e["event"] == "agent.partial_answer"]
    assert len(partials) > 3  # it arrived token by token
    # The tool call is a collapsed step with its arguments and result inside.
    step = console.page.locator("details.step")
    expect(step).to_have_count(1)
    expect(step.locator("summary")).to_contain_text("get_weather")
    expect(step.locator("summary .badge")).to_have_text("done")
    assert step.evaluate("el => el.open") is False
    step.locator("summary").click()
    expect(step.locator(".step-body")).to_contain_text("Beijing: sunny, 25°C")
    expect(step.locator(".step-body")).to_contain_text('"city": "Beijing"')
    # The user's message is shown, and the console acknowledges what it received.
    expect(console.page.locator(".msg.user .bubble")).to_have_text(["What's the weather in Beijing?"])
    console.page.wait_for_timeout(1300)
    acks = [f for f in console.sent if f["event"] == "user.ack"]
    assert acks and acks[-1]["content"]["last_seq"] == console.state()["lastSeq"]
    console.shot("console-weather.png")


def test_confirm_prompt_is_approved_with_the_button(console):
    console.say("do the danger thing")
    prompt = console.page.locator(".confirm")
    expect(prompt.locator("button.approve")).to_be_visible()
    expect(prompt).to_contain_text("dangerous")
    console.shot("console-confirm-prompt.png")
    prompt.locator("button.approve").click()
    console.wait_idle()
    assert console.answers() == ["Outcome: dangerous thing done"]
    expect(prompt).to_contain_text("Approved")
    expect(prompt.locator("button")).to_have_count(0)
    responses = [f for f in console.sent if f["event"] == "user.response"]
    assert len(responses) == 1 and responses[0]["content"] == {"confirmed": True}
    confirm = next(e for e in console.received if e["event"] == "agent.user_confirm")
    assert responses[0]["step_id"] == confirm["step_id"]
    console.shot("console-confirm.png")


def test_confirm_prompt_can_be_denied(console):
    console.say("danger again")
    console.page.locator(".confirm button.deny").click()
    console.wait_idle()
    assert console.answers() == ["Outcome: Error: User denied the tool call"]
    expect(console.page.locator(".confirm")).to_contain_text("Denied")
    expect(console.page.locator("details.step .badge")).to_have_text("failed")


def test_cancel_button_interrupts_the_turn(console):
    console.say("something slow")
    expect(console.page.locator("details.step .badge")).to_have_text("running…")
    expect(console.page.locator("#cancel")).to_be_enabled()
    console.page.click("#cancel")
    console.wait_idle()
    expect(console.page.locator(".notice.warn")).to_contain_text("CANCELLED")
    assert any(f["event"] == "user.cancel" for f in console.sent)
    expect(console.page.locator("#send")).to_be_enabled()


def test_reconnect_keeps_the_conversation(console):
    console.say("What's the weather?")
    console.wait_idle()
    session_id = console.state()["sessionId"]

    # Drop the socket in the middle of a turn: the 3 s "slow" tool is running.
    console.say("now something slow")
    expect(console.page.locator("details.step >> nth=1")).to_contain_text("slow")
    console.page.evaluate("window.__ws.close()")
    expect(console.page.locator(".notice", has_text="Reconnected")).to_have_count(1)
    console.wait_idle()
    assert console.answers() == ["The weather is Beijing: sunny, 25°C.", "Finished: slept 3s"]
    assert len(console.sockets) == 2
    reconnect = [f for f in console.sent if f["event"] == "user.reconnect"]
    assert len(reconnect) == 1 and reconnect[0]["session_id"] == session_id
    assert reconnect[0]["content"]["last_seq"] > 1
    # Each event shown once: no seq is applied twice, even if replayed.
    assert console.state()["lastSeq"] == max(e.get("seq", 0) for e in console.received
                                             if e.get("session_id") == session_id)
    expect(console.page.locator("details.step")).to_have_count(2)
    console.shot("console-reconnect.png")

    # A reload keeps it too: the conversation comes from sessionStorage, the session is resumed.
    console.page.reload()
    console.wait_ready()
    assert console.state()["sessionId"] == session_id
    assert console.answers() == ["The weather is Beijing: sunny, 25°C.", "Finished: slept 3s"]
    expect(console.page.locator(".msg.user .bubble")).to_have_text(["What's the weather?", "now something slow"])
    console.say("and after the reload?")
    console.wait_idle()
    # The scripted model echoes the previous user message: the server-side history is intact.
    assert console.answers()[-1].startswith("You said: and after the reload?. Before that: now something slow.")
    console.shot("console-reload.png")


def test_new_session_starts_fresh(console):
    console.say("hello")
    console.wait_idle()
    first = console.state()["sessionId"]
    console.page.click("#new-session")
    console.wait_ready()
    console.page.wait_for_function(f"window.__console.state.sessionId && window.__console.state.sessionId != '{first}'")
    expect(console.page.locator(".msg")).to_have_count(0)
    assert any(f["event"] == "user.close_session" and f["session_id"] == first for f in console.sent)


def test_token_in_the_page_url_reaches_the_websocket(browser, start_server):
    srv = start_server("--workers", "1", env={"MYAGENT_WS_AUTH_TOKENS": "s3cret-token"})
    with_token = Console(browser, srv.http + "/?token=s3cret-token")
    with_token.wait_ready()
    assert with_token.sockets[0].endswith("/?token=s3cret-token")
    with_token.say("hello")
    with_token.wait_idle()
    assert with_token.answers()[0].startswith("You said: hello")
    with_token.close()

    without = Console(browser, srv.http + "/")
    expect(without.page.locator("#conn-text")).to_contain_text("disconnected")
    assert without.page.evaluate("window.__console.sessionReady") is False
    expect(without.page.locator("#send")).to_be_disabled()
    without.close()


def test_dashboard_shows_the_sandboxes(browser, server, console):
    board = browser.new_context(bypass_csp=True, viewport={"width": 1300, "height": 900})
    board.set_default_timeout(TIMEOUT_MS)
    page = board.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.http + "/dashboard")
    rows = page.locator("#sandboxes tr.sandbox")
    expect(rows).to_have_count(2)
    pids = sorted(server.sandbox_pids())
    assert sorted(int(t) for t in page.locator("#sandboxes tr.sandbox td:nth-child(2)").all_inner_texts()) == pids
    expect(rows.locator(".state.ready")).to_have_count(2)
    expect(rows.first).to_contain_text("MiB")
    expect(rows.first).to_contain_text("/ 1.0 GiB")  # RSS drawn against --max-memory
    expect(page.locator("#ready-text")).to_have_text("ready")
    expect(page.locator("#agent-name")).to_have_text("test-agent")

    # Turns in the console tab show up as a turn rate, derived from the totals between polls.
    for i in range(3):
        console.say(f"weather {i}")
        console.wait_idle()
    expect(page.locator("#c-rate")).not_to_have_text("0.0 /s")
    expect(page.locator("#t-ended")).to_contain_text("agent.final_answer")
    expect(page.locator("#c-sessions")).not_to_have_text("0")
    page.wait_for_timeout(1500)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert not errors, errors
    board.close()


def test_a_message_sent_during_a_turn_shows_as_queued_then_runs(console):
    console.say("something slow")
    expect(console.page.locator("details.step .badge")).to_have_text("running…")
    console.say("and then this")  # Send stays enabled: the message waits on the server
    queued = console.page.locator(".msg.user.queued")
    expect(queued).to_have_count(1)
    expect(queued.locator(".queued-tag")).to_have_text("queued")
    expect(queued.locator(".bubble")).to_have_text("and then this")
    console.shot("console-queued.png")
    console.wait_idle()
    expect(console.page.locator(".msg.user.queued")).to_have_count(0)
    answers = console.answers()
    assert answers[0] == "Finished: slept 3s" and answers[1].startswith("You said: and then this."), answers
    queued_events = [e for e in console.received if e["event"] == "agent.message_queued"]
    assert len(queued_events) == 1 and queued_events[0]["metadata"]["position"] == 1
