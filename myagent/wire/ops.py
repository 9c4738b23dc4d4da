"""What the front process and a sandbox say to each other, frame by frame.

Every frame is one length-prefixed body (codec: :mod:`myagent.protocol.framing`).
A body is either a control op, a JSON object with an ``op`` key, or one of
three frames with a one-letter kind and NUL-separated ids whose JSON payload
the receiver takes as is::

    E sid NUL turn NUL event NUL body   sandbox -> front: one protocol event of a turn;
                                        body from protocol.envelope.event_body
    M sid NUL turn NUL message          sandbox -> front: one message the turn appended
                                        to the session's history (a JSON object)
    O sid NUL n NUL [message, ...]      front -> sandbox: host a session with this history
                                        (n: the open's number, echoed in its answer)

Ids are ASCII tokens the front generated; a NUL cannot occur in them.

Control ops, front -> sandbox:
    turn     {sid, turn, text, tp?}         run one turn (tp: W3C traceparent, when traces are exported)
    cancel   {sid, turn, reason}            cancel the running turn (reason: an ErrorCode value)
    confirm  {sid, step, ok}                answer an agent.user_confirm
    close    {sid}                          forget a session
    stop     {}                             exit after cancelling every turn

Control ops, sandbox -> front:
    ready    {pid}                          the sandbox serves
    hb       {}                             heartbeat (the event loop is alive)
    opened   {sid, n} / open_failed {sid, n, error}
    closed   {sid}                          nothing more will come for sid
    spent    {sid, turn, tokens}            a budgeted turn's LLM request spent these tokens (sent
                                            as each request ends, so a sandbox lost mid-turn is
                                            still charged for what it spent)

Zygote control socket (SOCK_SEQPACKET, one JSON document per message):
    front -> zygote: fork {req} + the sandbox's socket as SCM_RIGHTS
    zygote -> front: loaded {agent, llm, env} / load_error {reason} / forked {req, pid} /
                     exited {pid, code, signal}
"""

from __future__ import annotations

import signal as _signal

OPEN = "open"
TURN = "turn"
CANCEL = "cancel"
CONFIRM = "confirm"
CLOSE = "close"
STOP = "stop"

READY = "ready"
HEARTBEAT = "hb"
OPENED = "opened"
OPEN_FAILED = "open_failed"
CLOSED = "closed"
SPENT = "spent"

FORK = "fork"
LOADED = "loaded"
LOAD_ERROR = "load_error"
FORKED = "forked"
EXITED = "exited"

# First byte of a frame body.
KIND_EVENT = ord("E")
KIND_MESSAGE = ord("M")
KIND_OPEN = ord("O")
KIND_CONTROL = ord("{")


def event_frame(sid: str, turn: str, event: str, body: bytes) -> bytes:
    return b"E%s\0%s\0%s\0%s" % (sid.encode(), turn.encode(), event.encode(), body)


def message_frame(sid: str, turn: str, message: bytes) -> bytes:
    return b"M%s\0%s\0%s" % (sid.encode(), turn.encode(), message)


def open_frame(sid: str, nonce: int, history: list[str]) -> bytes:
    """History messages are JSON text already: joined, not re-encoded."""
    return b"O%s\0%d\0[%s]" % (sid.encode(), nonce, ",".join(history).encode())


def split_ids(body: bytes, count: int) -> list[bytes] | None:
    """``body`` without its kind byte, cut into ``count`` NUL-separated ids and the payload."""
    parts = body[1:].split(b"\0", count)
    return parts if len(parts) == count + 1 else None


# Exit codes of the zygote and sandboxes (gunicorn-style named codes), and what they mean.
EXIT_OK = 0
EXIT_LOAD_ERROR = 3
EXIT_PARENT_GONE = 4
EXIT_PIPE_ERROR = 5
EXIT_AGENT_EXIT = 6
EXIT_CONTAINMENT_FAILED = 7  # a sandbox could not enter its namespaces
EXIT_TERMINATED = 128 + 15   # a sandbox (PID 1 of its namespace) exiting on SIGTERM, as a shell reports it

EXIT_MEANINGS = {
    EXIT_OK: "exited normally",
    EXIT_LOAD_ERROR: "the agent file failed to load",
    EXIT_PARENT_GONE: "its parent process was gone",
    EXIT_PIPE_ERROR: "the sandbox failed to start or lost its pipe",
    EXIT_AGENT_EXIT: "agent code raised SystemExit",
    EXIT_CONTAINMENT_FAILED: "the sandbox could not enter its namespaces",
    EXIT_TERMINATED: "stopped by SIGTERM",
}


def describe_exit(code: int | None, sig: int | None) -> str:
    """``exit 6 (agent code raised SystemExit)``, ``signal 9 (SIGKILL)``, or ``unknown``."""
    if sig:
        try:
            name = _signal.Signals(sig).name
        except ValueError:
            name = "unknown signal"
        return f"signal {sig} ({name})"
    if code is None:
        return "unknown"
    meaning = EXIT_MEANINGS.get(code)
    return f"exit {code} ({meaning})" if meaning else f"exit {code}"
