"""`myagent-ws chat` (and `run`) as people use them: the real command against real servers.

Under a pseudo-terminal (pexpect) where the prompt and Ctrl-C matter; as a
plain subprocess otherwise. The scripted model (tests/fixtures/scripts/chat.json)
answers with text that looks like rich markup, runs out of steps ("loop") or
waits in a slow tool ("slow").
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pexpect
import pytest

from tests.serverproc import ROOT, SCRIPTS, ServerProcess, alive

from .conftest import TEST_AGENT

CHAT_LLM = f"scripted:{SCRIPTS / 'chat.json'}"
TOKEN = "chat-cli-token"


def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
    return ServerProcess(TEST_AGENT, "--workers", "1", *args, llm=CHAT_LLM, env=env).start(timeout=30)


@pytest.fixture(scope="module")
def server():
    srv = start()
    yield srv
    srv.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "myagent.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "MYAGENT_LLM": CHAT_LLM, **(env or {})})


class Chat:
    """`myagent-ws chat ARGS` under a pseudo-terminal; ``transcript`` is everything it printed."""

    def __init__(self, *args: str) -> None:
        self.log = io.StringIO()
        self.child = pexpect.spawn(sys.executable, ["-m", "myagent.cli", "chat", *args], cwd=str(ROOT),
                                   env={**os.environ, "TERM": "dumb"},  # rich: no styles to match around
                                   encoding="utf-8", timeout=30, dimensions=(40, 200))
        self.child.logfile_read = self.log

    def expect(self, pattern: str, timeout: float = 30) -> None:
        self.child.expect(pattern, timeout=timeout)

    def say(self, text: str, until: str) -> None:
        """At the prompt, type ``text``; wait for ``until`` (a regex)."""
        self.expect("you: ")
        self.child.sendline(text)
        self.expect(until)

    def exit_after_ctrl_c(self, within: float) -> tuple[int, float]:
        """Press Ctrl-C; the exit status and how long the chat took to end."""
        started = time.monotonic()
        self.child.sendintr()
        self.child.expect(pexpect.EOF, timeout=within)
        took = time.monotonic() - started
        self.child.close()
        return self.child.exitstatus, took

    @property
    def transcript(self) -> str:
        return self.log.getvalue()

    def close(self) -> None:
        if self.child.isalive():
            self.child.close(force=True)


def totals(srv: ServerProcess) -> tuple[int, int]:
    """(sessions closed so far, sessions detached now)."""
    st = srv.status()
    return st["totals"]["sessions_closed"], st["sessions"]["detached"]


# Server text is text -------------------------------------------------------------------


def test_markup_in_answers_tool_calls_and_reasoning_prints_literally(server):
    # Before: "[high] buy milk" printed as " buy milk"; "[/x]" in the reasoning crashed with MarkupError.
    result = run("chat", server.url, "-m", "markup [high] :smile: \x1b[2J")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "you: markup [high] :smile: \\x1b[2J" in out
    assert "… [bold]thinking[/bold] about [/x]" in out
    assert "→ get_weather {'city': '[/x] [red]Paris'}" in out
    assert "✓ [/x] [red]Paris: sunny, 25°C" in out
    assert "[high] buy milk; the tool said [/x] [red]Paris: sunny, 25°C" in out
    assert "\x1b" not in out and "Traceback" not in out


def test_run_prints_markup_literally_too():
    result = run("run", str(TEST_AGENT), "markup please")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "… [bold]thinking[/bold] about [/x]" in result.stdout
    assert "[high] buy milk; the tool said [/x] [red]Paris: sunny, 25°C" in result.stdout


def spawn_run(agent: object, question: str, llm: str, sigint: object = signal.SIG_DFL) -> pexpect.spawn:
    """`myagent-ws run` under a pseudo-terminal, started with SIGINT handled as ``sigint``
    (SIG_IGN: as a CI job or a script's `cmd &` hands it down)."""
    return pexpect.spawn(sys.executable, ["-m", "myagent.cli", "run", str(agent), question], cwd=str(ROOT),
                         env={**os.environ, "TERM": "dumb", "MYAGENT_LLM": llm}, encoding="utf-8", timeout=30,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))


def ctrl_c_until_exit(child: pexpect.spawn, within: float = 5) -> float:
    started = time.monotonic()
    child.sendintr()
    child.expect(pexpect.EOF, timeout=within)
    took = time.monotonic() - started
    child.close()
    return took


@pytest.mark.parametrize("sigint", [signal.SIG_DFL, signal.SIG_IGN], ids=["sigint-default", "sigint-ignored"])
def test_run_quits_at_once_on_ctrl_c_at_its_confirmation(sigint):
    # Before: nothing until Enter (the question ran in a thread); then, with SIGINT ignored
    # by the parent (CI), nothing at all: asyncio's handler is installed only over Python's default.
    child = spawn_run(TEST_AGENT, "danger", CHAT_LLM, sigint)
    try:
        child.expect(r"Run dangerous\(\{\}\)\? \[y/N\] ")
        took = ctrl_c_until_exit(child)
    finally:
        child.close(force=True)
    assert took < 2.0 and child.exitstatus == 130, (took, child.exitstatus)


@pytest.mark.parametrize("tool", ["stubborn", "blocking"])
def test_run_quits_on_ctrl_c_whatever_the_tool_does(tool):
    # A tool that swallows the cancellation, or blocks the loop: before, Ctrl-C never ended the process.
    child = spawn_run(ROOT / "tests/fixtures/agents/stubborn_agent.py", tool,
                      f"scripted:{SCRIPTS / 'stubborn.json'}")
    try:
        child.expect(f"{tool}: started")
        took = ctrl_c_until_exit(child)
    finally:
        child.close(force=True)
    assert took < 3.0 and child.exitstatus == 130, (took, child.exitstatus)


# -m: exit codes and closing ------------------------------------------------------------


def test_one_shot_exit_code_says_whether_every_turn_was_answered(server):
    ok = run("chat", server.url, "-m", "hello")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # Before: 0 although the turn ended in MAX_STEPS.
    failed = run("chat", server.url, "-m", "hello", "-m", "loop", "-m", "bye")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "error MAX_STEPS" in failed.stdout
    assert "You said: bye. Before that: loop." in failed.stdout  # the next message still ran


def test_one_shot_closes_its_session(server):
    closed, detached = totals(server)
    result = run("chat", server.url, "-m", "hello")
    assert result.returncode == 0, result.stdout + result.stderr
    # Before: the session stayed detached for the TTL (600 s).
    assert totals(server) == (closed + 1, detached)


def test_help_documents_exit_codes_and_the_token_variable():
    from myagent.client import backoff, chat

    text = run("chat", "--help").stdout
    for code in (chat.EXIT_OK, chat.EXIT_TURN_FAILED, chat.EXIT_NO_SERVER, chat.EXIT_CTRL_C):
        assert f"{code} " in text
    assert "MYAGENT_WS_TOKEN" in text
    assert f"{backoff.RECONNECT_FIRST_DELAY:g} s doubling to {backoff.RECONNECT_MAX_DELAY:g} s, for up to " \
           f"{backoff.RECONNECT_GIVE_UP:g} s" in " ".join(text.split())


# Addresses and one-line reasons --------------------------------------------------------


@pytest.mark.parametrize("form", ["http", "host:port", "trailing slash"])
def test_chat_accepts_every_url_form_status_accepts(server, form):
    url = {"http": server.http, "host:port": f"127.0.0.1:{server.port}", "trailing slash": server.url + "/"}[form]
    result = run("chat", url, "-m", "hello")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "You said: hello." in result.stdout


@pytest.fixture(scope="module")
def auth_server():
    srv = start(env={"MYAGENT_WS_AUTH_TOKENS": TOKEN})
    yield srv
    srv.stop()


def failure_cases(server: ServerProcess, auth: ServerProcess) -> list[tuple[str, str]]:
    return [
        (f"wss://127.0.0.1:{server.port}", "TLS handshake failed: is the server serving plain ws://?"),
        (f"ws://127.0.0.1:{free_port()}", "connection refused: is the server running, on this port?"),
        ("ws://no-such-host.invalid:8080", "unknown host 'no-such-host.invalid'"),
        (auth.url, "the server requires a token (HTTP 401): pass --token or set MYAGENT_WS_TOKEN"),
        ("ftp://127.0.0.1:1", "unsupported scheme 'ftp'"),
    ]


def test_each_connect_failure_is_one_clear_line(server, auth_server):
    for url, reason in failure_cases(server, auth_server):
        result = run("chat", url, "-m", "hello", env={"MYAGENT_WS_TOKEN": ""}, timeout=30)
        out = (result.stdout + result.stderr).strip()
        assert result.returncode == 2, out
        assert reason in out and len(out.splitlines()) == 1, out


def test_the_token_from_the_environment_is_used(auth_server):
    result = run("chat", auth_server.url, "-m", "hello", env={"MYAGENT_WS_TOKEN": TOKEN})
    assert result.returncode == 0, result.stdout + result.stderr


# Ctrl-C ------------------------------------------------------------------------------


def test_ctrl_c_at_the_prompt_exits_at_once_and_closes_the_session(server):
    closed, detached = totals(server)
    chat = Chat(server.url)
    try:
        chat.expect("you: ")
        # Before: nothing happened until Enter.
        status, took = chat.exit_after_ctrl_c(within=5)
    finally:
        chat.close()
    assert status == 130 and took < 1.5, (status, took, chat.transcript)
    assert totals(server) == (closed + 1, detached)
    assert "Traceback" not in chat.transcript


@pytest.mark.parametrize("second", ["in the turn", "at the prompt"])
def test_ctrl_c_cancels_the_running_turn_and_a_second_one_quits(server, second):
    chat = Chat(server.url)
    try:
        chat.say("slow please", "→ slow")
        chat.child.sendintr()
        chat.expect("cancelling the turn")
        if second == "at the prompt":
            chat.expect(r"interrupted \(CANCELLED\)")
            chat.say("hello", r"You said: hello\.")  # the session goes on
            chat.expect("you: ")
        status, took = chat.exit_after_ctrl_c(within=5)
    finally:
        chat.close()
    assert status == 130 and took < 1.5, (status, took, chat.transcript)
    assert "Traceback" not in chat.transcript


def test_the_interactive_chat_asks_before_a_tool_that_needs_approval(server):
    chat = Chat(server.url)
    try:
        chat.say("danger", r"Approve\? \[y/N\] ")
        chat.child.sendline("y")
        chat.expect("Outcome: dangerous thing done")
        chat.expect("you: ")
        chat.child.sendeof()  # Ctrl-D: done
        chat.child.expect(pexpect.EOF, timeout=10)
        chat.child.close()
    finally:
        chat.close()
    assert chat.child.exitstatus == 0, chat.transcript


# Reconnecting --------------------------------------------------------------------------


@pytest.fixture
def restartable(tmp_path):
    """``start_on(store)``: a server on the same port and state directory each time (stopped after the test)."""
    port, started = free_port(), []

    def start_on(store: str = "sqlite") -> ServerProcess:
        url = f"sqlite://{tmp_path / 'sessions.db'}" if store == "sqlite" else "memory:"
        started.append(start("--port", str(port), "--state-dir", str(tmp_path), "--store", url))
        return started[-1]

    yield start_on
    for srv in started:
        srv.stop()


def chat_through_a_restart(start_on, store: str) -> Chat:
    """An interactive chat with one answered turn, whose server has just been stopped (SIGTERM)."""
    first = start_on(store)
    chat = Chat(first.url)
    chat.say("hello", r"You said: hello\.")
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0
    # Before: a ConnectionClosedOK traceback, the resume token never used.
    chat.expect("reconnecting…")
    return chat


def test_chat_resumes_after_a_server_restart(restartable):
    chat = chat_through_a_restart(restartable, "sqlite")
    try:
        chat.child.sendline("typed while it was down")  # sent once the session is back
        restartable("sqlite")
        chat.expect("resumed session")
        chat.expect(r"You said: typed while it was down\. Before that: hello\.")  # the same conversation
        chat.expect("you: ")
        status, _ = chat.exit_after_ctrl_c(within=5)
    finally:
        chat.close()
    assert status == 130 and "Traceback" not in chat.transcript, chat.transcript


def test_an_expired_session_is_said_clearly_and_a_new_one_starts(restartable):
    chat = chat_through_a_restart(restartable, "memory")
    try:
        restartable("memory")  # the session is gone
        chat.expect(r"could not be resumed \(SESSION_NOT_FOUND\): it expired or the server no longer has it")
        chat.child.sendline("again")  # goes to a new session
        chat.expect("this is a new session")
        chat.expect(r"You said: again\. Before that: \.")
        chat.expect("you: ")
        status, _ = chat.exit_after_ctrl_c(within=5)
    finally:
        chat.close()
    assert status == 130 and "Traceback" not in chat.transcript, chat.transcript


def test_a_turn_cut_by_kill_9_of_the_front_ends_on_resume(restartable):
    first = restartable("sqlite")
    pids = first.track_children()
    chat = Chat(first.url, "-m", "slow please")
    try:
        chat.expect("→ slow")
        deadline = time.monotonic() + 10
        while first.status()["store"]["pending_writes"] and time.monotonic() < deadline:
            time.sleep(0.05)  # what the store acknowledged survives a kill -9; the last writes may not
        first.proc.kill()
        first.wait(10)
        while alive(pids) and time.monotonic() < deadline + 10:  # the sandboxes die with the front
            time.sleep(0.05)
        chat.expect("reconnecting…")
        restartable("sqlite")
        chat.expect("resumed session")
        chat.expect(r"interrupted \(SERVER_RESTARTED\)")
        chat.child.expect(pexpect.EOF, timeout=10)
        chat.child.close()
    finally:
        chat.close()
    assert chat.child.exitstatus == 1, chat.transcript
    assert "Traceback" not in chat.transcript


class Proxy:
    """A TCP relay to a server that can be cut (every connection closed, nothing accepted) and put back."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def listen(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        if self._listener is not None:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
            self._listener.close()
            self._listener = None
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._sockets.clear()


def test_events_missed_while_the_network_was_down_are_replayed(server):
    proxy = Proxy(server.port)
    proxy.listen()
    chat = Chat(f"ws://127.0.0.1:{proxy.port}", "-m", "slow please")
    try:
        chat.expect("→ slow")
        proxy.cut()
        chat.expect("reconnecting…")
        deadline = time.monotonic() + 20
        while server.status()["sessions"]["turns_running"] and time.monotonic() < deadline:
            time.sleep(0.05)  # the turn ends on the server while the chat cannot hear it
        proxy.listen()
        chat.expect(r"resumed session \S+ \(\d+ missed events replayed\)")
        chat.expect("✓ slept 2s")
        chat.expect("Finished: slept 2s")
        chat.child.expect(pexpect.EOF, timeout=10)
        chat.child.close()
    finally:
        chat.close()
        proxy.cut()
    assert chat.child.exitstatus == 0, chat.transcript


async def test_a_session_taken_over_elsewhere_is_lost_not_fought_over(server):
    """Another client resumes the chat's session: the chat says so and stops, instead of waiting for
    events that now go elsewhere (or resuming it back, which the other would answer in kind)."""
    from myagent.client import AgentClient
    from myagent.client.resume import ResumingSession, SessionLost

    notes: list[str] = []
    link = ResumingSession(server.url, None, lambda text, style: notes.append(text))
    session = await link.open()
    other = await AgentClient.connect(server.url)
    try:
        await other.reconnect(session.id, session.resume_token or "", session.last_seq)
        with pytest.raises(SessionLost, match="taken over by another connection"):
            await asyncio.wait_for(link.next_event(), 10)
        assert not any("reconnecting" in note for note in notes)
    finally:
        await link.close()
        await other.close()
