"""The console and the dashboard in headless Chromium: Markdown answers rendered inert, the
model's reasoning kept in the transcript, the token handed from the console to the dashboard,
the dashboard's two-minute turn rate, and both pages at phone width (390 x 844).

One server with auth on (the token is given as ``#token=``, the way the docs say), the test
agent, and the answers of tests/fixtures/scripts/console.json. How Chromium is driven: see
browserkit.py.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Iterator

import pytest

from tests.serverproc import AGENTS, SCRIPTS, ServerProcess

from .browserkit import ARTIFACTS, BROWSER_MARKS, TIMEOUT_MS, Browser, Console, chromium, expect

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium()


TOKEN = "console-test-token"
VENDORED = "static/vendor/markdown-it.min.js"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess(AGENTS / "test_agent.py", "--workers", "1", llm=f"scripted:{SCRIPTS / 'console.json'}",
                        env={"MYAGENT_WS_AUTH_TOKENS": TOKEN}).start(timeout=30)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def console(browser, server) -> Iterator[Console]:
    tab = Console(browser, server.http + "/#token=" + TOKEN)
    tab.wait_ready()
    yield tab
    tab.close()


def get(url: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Authorization": "Bearer " + token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def new_page(browser, url: str | None = None, width: int = 1100, height: int = 860, **options):
    context = browser.new_context(viewport={"width": width, "height": height}, **options)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    if url:
        page.goto(url)
    return context, page, errors


# Markdown -----------------------------------------------------------------------------------

# Anything that could run or load something: a live element, an event handler, a script URL.
LIVE = """(root) => [root, ...root.querySelectorAll('*')].filter((el) =>
    ['SCRIPT', 'IMG', 'IFRAME', 'SVG', 'OBJECT', 'EMBED', 'STYLE', 'LINK'].includes(el.tagName.toUpperCase())
    || [...el.attributes].some((a) => /^on/i.test(a.name) || a.name === 'style')
    || /^\\s*(javascript|data|vbscript):/i.test(el.getAttribute('href') || el.getAttribute('src') || '')
  ).map((el) => el.outerHTML.slice(0, 120))"""

WATCH_LOG = """() => {
  // Everything added to the transcript while the answer streams, not only the end state.
  const live = """ + LIVE + """;
  window.__added = [];
  window.__mutations = 0;
  new MutationObserver((records) => {
    for (const r of records) {
      window.__mutations++;
      r.addedNodes.forEach((n) => { if (n.nodeType === 1) window.__added.push(...live(n)); });
    }
  }).observe(document.getElementById('log'), { childList: true, subtree: true });
}"""

EVERY_PREFIX = """(text) => {
  // What the console shows while the answer streams: every prefix of it, rendered.
  const live = """ + LIVE + """;
  const found = [];
  for (let i = 1; i <= text.length; i++) {
    const box = document.createElement('div');
    box.append(window.myagentMarkdown.render(text.slice(0, i)));
    found.push(...live(box));
  }
  return found;
}"""


def test_a_hostile_answer_renders_inert(console):
    # bypass_csp is on in this tab: nothing here relies on the CSP, only on the rendering.
    console.page.evaluate(WATCH_LOG)
    console.say("show me something hostile")
    console.wait_idle()
    page = console.page
    bubble = page.locator(".msg.assistant .bubble")
    expect(bubble).to_have_count(1)
    # The payloads are on the page as text ...
    text = bubble.inner_text()
    for shown in ("<img src=x onerror=", "<script>window.__pwned='script'</script>", "<b>html</b>", "[relative](/status)",
                  "[click me](javascript:", "<iframe", "<svg onload="):
        assert shown in text, (shown, text)
    # ... and nothing of them is live: no element that runs or loads anything, in the end, in
    # what was rendered while it streamed, or in any prefix of it.
    page.wait_for_timeout(300)  # an <img src=x> would have failed to load by now
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("window.__added") == []
    assert page.evaluate("window.__mutations") >= 2  # the observer saw the answer come
    final = next(e for e in console.received if e["event"] == "agent.final_answer")["content"]
    assert page.evaluate(EVERY_PREFIX, final) == []
    assert page.evaluate("window.__pwned") is None
    log = page.locator("#log")
    for selector in ("script", "img", "iframe", "svg", "[onerror]", "[onload]", "[onmouseover]", "[style]",
                     "a[href^='javascript' i]", "a[href^='data' i]", "a[href^='vbscript' i]"):
        expect(log.locator(selector)).to_have_count(0)
    # Only http:, https: and mailto: make links (not a relative or an ftp: one): the one left is
    # the harmless image's http URL, shown as a link.
    links = bubble.locator("a")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert hrefs == ["http://127.0.0.1:9/pixel.png"], hrefs
    assert links.first.get_attribute("rel") == "noopener noreferrer"
    # The user's own message is plain text too, never Markdown.
    expect(page.locator(".msg.user .bubble")).to_have_text("show me something hostile")
    console.shot("console-hostile.png")


def test_a_markdown_answer_renders_list_code_link_and_table(console):
    console.say("answer in markdown **please**")
    console.wait_idle()
    bubble = console.page.locator(".msg.assistant .bubble")
    expect(bubble.locator("h2")).to_have_text("Plan")
    expect(bubble.locator("ul > li")).to_have_text(["one", "two"])
    expect(bubble.locator("li strong")).to_have_text("two")
    expect(bubble.locator("pre > code.language-python")).to_have_text("print('hi')")
    link = bubble.locator("a", has_text="the docs")
    expect(link).to_have_attribute("href", "https://example.com/docs")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(link).to_have_attribute("target", "_blank")
    expect(bubble.locator("a[href='mailto:ops@example.com']")).to_have_count(1)
    expect(bubble.locator("td.align-right")).to_have_text("1")  # alignment as a class: the CSP refuses style=
    expect(console.page.locator(".msg.user .bubble")).to_have_text("answer in markdown **please**")
    # The final answer replaced the streamed preview: rendered once, the same as the deltas add up to.
    final = next(e for e in console.received if e["event"] == "agent.final_answer")["content"]
    streamed = "".join(e["content"] for e in console.received if e["event"] == "agent.partial_answer")
    assert streamed == final and console.state()["items"][-1]["text"] == final
    console.shot("console-markdown.png")


def test_markdown_loads_under_the_pages_csp(browser, server):
    # What the server sends: a CSP that allows scripts from this origin only, the library with
    # a JavaScript content type, and pages with no inline script.
    code, headers, html = get(server.http + "/")
    csp = headers["Content-Security-Policy"]
    assert code == 200 and "default-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert not re.search(rb"<script(?![^>]*\bsrc=)", html), "inline script in console.html"
    assert b'src="' + VENDORED.encode() + b'"' in html
    code, headers, body = get(server.http + "/" + VENDORED)
    assert code == 200 and headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert body.startswith(b"(function(e,t){") and b"markdownit" in body[:400]
    assert get(server.http + "/static/vendor/markdown-it.LICENSE")[0] == 404  # beside it, not served

    # A tab that honours the CSP (no bypass): the answer still renders, no violation is reported.
    context, page, errors = new_page(browser)
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.goto(server.http + "/#token=" + TOKEN)
    expect(page.locator("#send")).to_be_enabled()
    page.fill("#input", "markdown again")
    page.press("#input", "Enter")
    expect(page.locator(".msg.assistant .bubble pre code")).to_have_text("print('hi')")
    expect(page.locator(".msg.assistant .bubble td.align-left")).to_have_text("a")
    assert not violations and not errors, (violations, errors)
    context.close()


# Reasoning ----------------------------------------------------------------------------------

TRANSCRIPT = """() => [...document.querySelectorAll('#log > *')].map(e =>
    e.matches('details.reasoning') ? 'reasoning' : e.matches('details.step') ? 'step' :
    e.matches('.msg.user') ? 'user' : e.matches('.msg.assistant') ? 'answer' : e.className)"""


def test_reasoning_is_kept_collapsed_above_the_answer(console):
    console.say("reason about the weather")
    console.wait_idle()
    page = console.page
    reasoning = page.locator("details.reasoning")
    expect(reasoning).to_have_count(2)
    expect(reasoning.locator("summary")).to_have_text(["Reasoning", "Reasoning"])
    assert reasoning.evaluate_all("els => els.map(e => e.open)") == [False, False]
    # One per model step, in transcript order: user, reasoning, tool step, reasoning, answer.
    order = page.evaluate(TRANSCRIPT)
    assert order == ["user", "reasoning", "step", "reasoning", "answer"], order
    expect(page.locator(".msg.assistant .bubble em")).to_have_text("Paris: sunny, 25°C")
    reasoning.nth(1).locator("summary").click()
    expect(reasoning.nth(1).locator(".reasoning-body")).to_have_text("The tool answered; now say it.")
    expect(reasoning.nth(0).locator(".reasoning-body")).not_to_be_visible()
    console.shot("console-reasoning.png")
    # Kept with the conversation: a reload shows it again, in place.
    page.reload()
    console.wait_ready()
    expect(page.locator("details.reasoning .reasoning-body")).to_have_text(
        ["The user wants the weather: call the tool first.", "The tool answered; now say it."])
    assert page.evaluate(TRANSCRIPT)[:5] == order  # then the "Reconnected" notice


# Token: console -> dashboard ----------------------------------------------------------------

def test_the_dashboard_link_carries_the_token(browser, server):
    tab = Console(browser, server.http + "/#token=" + TOKEN)
    tab.wait_ready()
    page = tab.page
    assert tab.sockets[0].endswith("/?token=" + TOKEN)  # a WebSocket cannot carry a header
    assert TOKEN not in page.url  # taken off the address bar, kept in the tab's sessionStorage
    link = page.locator("#dashboard-link")
    assert link.get_attribute("href") == "dashboard#token=" + TOKEN
    with tab.context.expect_page() as opened:
        link.click()
    board = opened.value
    requests: list[tuple[str, str | None]] = []
    board.on("request", lambda r: requests.append((r.url, r.headers.get("authorization"))))
    expect(board.locator("#ready-text")).to_have_text("ready")
    expect(board.locator("#agent-name")).to_have_text("test-agent")
    expect(board.locator("#banner")).to_be_hidden()
    assert TOKEN not in board.url
    board.wait_for_timeout(1200)  # at least one more poll, from the token kept in sessionStorage
    status = [(url, auth) for url, auth in requests if url.endswith("/status")]
    assert status and all(auth == "Bearer " + TOKEN for _, auth in status), status  # a header, never the URL
    board.reload()
    expect(board.locator("#ready-text")).to_have_text("ready")
    tab.close()


def test_the_dashboard_says_how_to_give_a_token(browser, server):
    context, page, errors = new_page(browser, server.http + "/dashboard", bypass_csp=True)
    banner = page.locator("#banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("This server needs a token (HTTP 401): open the console with")
    expect(banner.locator("code")).to_have_text([server.http + "/#token=TOKEN", server.http + "/dashboard#token=TOKEN"])
    expect(page.locator("#ready-text")).to_have_text("unreachable (HTTP 401)")
    page.goto(server.http + "/dashboard#token=wrong")
    page.reload()  # the fragment alone does not reload the page
    expect(banner).to_contain_text("The token was refused (HTTP 401)")
    page.goto(server.http + "/dashboard?token=" + TOKEN)  # the older form still works
    expect(page.locator("#ready-text")).to_have_text("ready")
    expect(banner).to_be_hidden()
    assert not errors, errors
    context.close()


def test_the_console_says_how_to_give_a_token(browser, server):
    cases = ((server.http + "/", "token needed",
              f"This server needs a token (HTTP 401): open the console with {server.http}/#token=TOKEN and follow"),
             (server.http + "/#token=wrong", "token refused",
              f"The token was refused (HTTP 401): open {server.http}/#token=TOKEN with a valid one."))
    for url, short, says in cases:
        tab = Console(browser, url)
        expect(tab.page.locator(".notice.error")).to_contain_text(says)
        expect(tab.page.locator("#conn-text")).to_contain_text(f"disconnected (HTTP 401: {short})")
        tab.page.wait_for_timeout(1000)  # a few more refused attempts: still one notice
        expect(tab.page.locator(".notice.error")).to_have_count(1)
        expect(tab.page.locator("#send")).to_be_disabled()
        tab.close()


# Turn rate ----------------------------------------------------------------------------------

def test_the_turn_rate_is_a_sliding_two_minute_window(browser, server):
    """A known rate fed to the page: /status answered with the real document except
    totals.turns_started, and the page's clock advanced one poll (1 s) at a time."""
    document = json.loads(get(server.http + "/status", TOKEN)[2])
    feed = {"started": 100, "polls": 0}

    def answer(route) -> None:
        feed["polls"] += 1
        document["totals"]["turns_started"] = feed["started"]
        document["totals"]["connections_opened"] = feed["polls"]  # shown as "N opened": marks each render
        route.fulfill(status=200, content_type="application/json", body=json.dumps(document))

    context, page, errors = new_page(browser, bypass_csp=True)
    page.clock.install(time=1_800_000_000)  # seconds since the epoch
    page.clock.pause_at(1_800_000_001)      # time moves only with run_for() below
    page.route("**/status", answer)
    page.goto(server.http + "/dashboard#token=" + TOKEN)
    rate, sub = page.locator("#c-rate"), page.locator("#c-rate-sub")
    rendered = page.locator("#c-connections-sub")  # "N opened · ...": poll N was rendered

    # The poll the page must have rendered, counted here: feed["polls"] moves when Playwright
    # dispatches answer(), which can be during the expect() below while the page still shows the
    # poll before. Waiting on that number let the clock advance with a poll in flight: its sample
    # then came 1 s late (CI: "2.5 /s in the last 5 s", 10 turns over 4 s) and the next was lost.
    shown = {"polls": 1}

    def run(seconds: int, per_second: int) -> None:
        for _ in range(seconds):
            expect(rendered).to_have_text(re.compile(f"^{shown['polls']} opened "))
            feed["started"] += per_second
            page.clock.run_for(1000)  # exactly one poll: the next is armed 1 s after this one's render
            shown["polls"] += 1
        expect(rendered).to_have_text(re.compile(f"^{shown['polls']} opened "))
        assert feed["polls"] == shown["polls"]  # no poll the test did not step

    expect(rendered).to_have_text(re.compile("^1 opened "))
    expect(rate).to_have_text("–")  # one sample: no rate yet
    expect(sub).to_have_text("turns started per second: measuring…")
    run(30, 2)
    expect(rate).to_have_text("2.0 /s")
    expect(sub).to_have_text("turns started per second, last 30 s (all this page has seen) · 2.0 /s in the last 5 s")
    run(30, 2)   # 60 s at 2 turns/s ...
    run(60, 0)   # ... then 60 s idle: 120 turns in the last 2 min
    expect(rate).to_have_text("1.0 /s")  # was "0.0 /s": a 5 s average
    expect(sub).to_have_text("turns started per second, last 2 min · 0.0 /s in the last 5 s")
    run(30, 0)   # the window slides: 60 of the 120 turns are older than 2 min now
    expect(rate).to_have_text("0.5 /s")
    run(30, 0)
    expect(rate).to_have_text("0.0 /s")
    assert not errors, errors
    context.close()


# Phone width --------------------------------------------------------------------------------

HEADER_BOXES = """() => {
  const leaves = [...document.querySelectorAll('header.bar .brand > *, header.bar .conn > *, header.bar nav > *')];
  return leaves.map((e) => { const r = e.getBoundingClientRect();
    return {id: e.id || e.className || e.tagName, left: r.left, right: r.right, top: r.top, bottom: r.bottom,
            visible: r.width > 0 && r.height > 0 && getComputedStyle(e).display !== 'none',
            clipped: e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).display !== 'inline'}; });
}"""


def overlaps(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] - 0.5 and b["left"] < a["right"] - 0.5 and \
        a["top"] < b["bottom"] - 0.5 and b["top"] < a["bottom"] - 0.5


@pytest.mark.parametrize("path, ready", [("/", "#send:enabled"), ("/dashboard", "#sandboxes tr.sandbox")])
def test_headers_fit_at_phone_width(browser, server, path, ready):
    context, page, errors = new_page(browser, server.http + path + "#token=" + TOKEN, width=390, height=844,
                                     bypass_csp=True)
    expect(page.locator(ready).first).to_be_visible()
    expect(page.locator("#agent-name")).to_have_text("test-agent")
    page.wait_for_timeout(300)  # the dashboard's second render, with its longer texts
    boxes = [b for b in page.evaluate(HEADER_BOXES) if b["visible"]]
    assert len(boxes) >= 5, boxes
    for i, a in enumerate(boxes):
        assert 0 <= a["left"] and a["right"] <= 390, a
        for b in boxes[i + 1:]:
            assert not overlaps(a, b), (a, b)
    name = page.locator("#agent-name")
    assert name.evaluate("e => e.scrollWidth <= e.clientWidth"), "the agent name is cut"
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"narrow-{path.strip('/') or 'console'}.png"), full_page=True)
    assert not errors, errors
    context.close()

