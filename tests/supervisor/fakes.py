"""Shared fakes for unit tests of the front core: no processes, no sockets, no sleeps.

The real core objects (Placement, Turns, Relay, Recovery, Router, sessions)
are wired exactly as ``Server.__init__`` wires them, over:

* real :class:`~myagent.supervisor.sandboxes.Sandbox` records whose pipe is a
  :class:`FakePipe` that records every control op and raw frame sent to the
  sandbox, and can answer ``open`` frames (``opened``, ``open_failed`` or
  nothing) the way a sandbox would;
* a :class:`FakePool` holding those sandboxes that records terminations and
  retirements instead of signalling anything;
* :class:`FakeConnection`, whose ``enqueue`` collects the bytes a client would
  receive.

Tests wait on conditions with :func:`run_until` (a bounded number of loop
iterations), never on wall-clock sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, Callable

import orjson

from myagent.protocol.envelope import event_body
from myagent.protocol.exceptions import FrameTooLarge
from myagent.settings import config_from
from myagent.supervisor.metrics import Metrics
from myagent.supervisor.placement import Placement
from myagent.supervisor.recovery import Recovery
from myagent.supervisor.relay import Relay
from myagent.supervisor.router import Router
from myagent.supervisor.sandboxes import DEAD, DRAINING, READY, RETIRED, Sandbox
from myagent.supervisor.sessions import Limits, Session, SessionRegistry
from myagent.supervisor.turns import Turns
from myagent.wire import ops

# Answers a FakePipe gives to an ``open`` frame.
OPENED, FAILED, SILENT = "opened", "open_failed", None


def make_config(**options: Any) -> Any:
    """A ServerConfig for unit tests: no turn timer unless asked, prompt opens and restores."""
    values: dict[str, Any] = {"turn-timeout": "0", "sandbox-open-timeout": "5", "restore-timeout": "5"}
    values.update({k.replace("_", "-"): str(v) for k, v in options.items()})
    return config_from(values)


async def run_until(predicate: Callable[[], Any], iterations: int = 200) -> None:
    """Run the event loop until ``predicate()`` holds, at most ``iterations`` passes."""
    for _ in range(iterations):
        if predicate():
            return
        await asyncio.sleep(0)
    assert predicate(), f"condition not reached within {iterations} loop iterations"


async def spin(iterations: int = 20) -> None:
    """Let ready callbacks and tasks run for a bounded number of loop passes."""
    for _ in range(iterations):
        await asyncio.sleep(0)


# Sandboxes --------------------------------------------------------------------------------
class FakePipe:
    """Stands in for FramePipe: records what the front sends; answers opens if told to."""

    def __init__(self, sandbox: Sandbox, answer: Any) -> None:
        self.sandbox = sandbox
        self.answer = answer          # OPENED, FAILED, SILENT, or a list of them used one open at a time
        self.on_control: Callable[[Sandbox, dict], None] | None = None
        self.too_large = False        # send_raw raises FrameTooLarge (as FramePipe does past its limit)
        self.frames: list[dict] = []  # control ops, in order
        self.raw: list[bytes] = []    # raw frame bodies (open frames), in order
        self.aborted = False
        self.paused = False

    def send(self, frame: dict) -> None:
        self.frames.append(frame)

    def send_raw(self, body: bytes) -> None:
        if self.too_large:
            raise FrameTooLarge("frame too large")
        self.raw.append(body)
        answer = self.answer
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if body[:1] == b"O" and answer is not None and self.on_control is not None:
            sid, nonce, _ = body[1:].split(b"\0", 2)
            frame = {"op": answer, "sid": sid.decode(), "n": int(nonce)}
            if answer == FAILED:
                frame["error"] = "the agent refused"
            asyncio.get_running_loop().call_soon(self.on_control, self.sandbox, frame)

    def abort(self) -> None:
        self.aborted = True

    # What was sent --------------------------------------------------------------------
    def ops(self, op: str, sid: str | None = None) -> list[dict]:
        return [f for f in self.frames if f.get("op") == op and (sid is None or f.get("sid") == sid)]

    def opens(self, sid: str | None = None) -> list[tuple[str, list]]:
        """(sid, history) of every open frame sent."""
        out = []
        for body in self.raw:
            if body[:1] == b"O":
                frame_sid, _, history = body[1:].split(b"\0", 2)
                if sid is None or frame_sid.decode() == sid:
                    out.append((frame_sid.decode(), orjson.loads(history)))
        return out


_pids = itertools.count(900_001)


def make_sandbox(sandbox_id: int, state: str = READY, answer: Any = OPENED) -> Sandbox:
    """A real Sandbox record over a FakePipe (its pid is never signalled: FakePool kills nothing)."""
    sandbox = Sandbox(id=sandbox_id, pid=next(_pids), state=state)
    sandbox.pipe = FakePipe(sandbox, answer)  # type: ignore[assignment]
    return sandbox


def answer(sandbox: Sandbox, sid: str, op: str = OPENED, **extra: Any) -> dict:
    """The answer ``sandbox`` gives to the open of ``sid`` it is asked for now (with that open's number)."""
    nonce = sandbox.opening[sid][0] if sid in sandbox.opening else sandbox.last_nonce
    return {"op": op, "sid": sid, "n": nonce, **extra}


def pipe(sandbox: Sandbox) -> FakePipe:
    assert isinstance(sandbox.pipe, FakePipe)
    return sandbox.pipe


class FakePool:
    """The parts of SandboxPool the core uses, with no processes behind them."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.sandboxes: dict[int, Sandbox] = {}
        self.agent: dict[str, Any] = {"name": "fake-agent", "description": "a fake",
                                      "tools": [{"name": "t1", "description": "tool one"}]}
        self.unavailable_reason: str | None = None
        self.terminated: list[tuple[int, str, bool]] = []  # (sandbox id, reason, polite)
        self.retired: list[int] = []
        self.on_lost: Callable[[Sandbox, str], bool] = lambda sandbox, reason: False
        self.blamed: list[bool] = []  # what on_lost answered, per loss
        self.max_size = 0
        self.can_grow = False  # no growth: a full pool is full
        self.stopping = False

    def terminate(self, sandbox: Sandbox, reason: str, *, polite: bool = False, grace: float | None = None) -> None:
        self.terminated.append((sandbox.id, reason, polite))
        if sandbox.kill_reason is None:
            sandbox.kill_reason = reason

    def retire(self, sandbox: Sandbox) -> None:
        if sandbox.state == READY:
            sandbox.state = DRAINING
            self.retired.append(sandbox.id)

    def stop_if_drained(self, sandbox: Sandbox) -> None:
        if sandbox.state == DRAINING and not sandbox.load:
            self.terminate(sandbox, RETIRED, polite=True)

    def lose(self, sandbox: Sandbox, reason: str = "SANDBOX_CRASHED") -> None:
        """What SandboxPool._lost reports once the process is gone."""
        sandbox.state = DEAD
        self.sandboxes.pop(sandbox.id, None)
        self.blamed.append(self.on_lost(sandbox, reason))

    async def grow(self, choose: Callable[[], Sandbox | None]) -> Sandbox | None:
        return choose()

    @property
    def ready_count(self) -> int:
        return sum(1 for s in self.sandboxes.values() if s.state == READY)


# The session store -----------------------------------------------------------------------------
class FakeStore:
    """A durable session store that records every call (write-behind ones and leases)."""

    name = "fake"
    durable = True

    def __init__(self, shared: bool = False) -> None:
        self.shared = shared
        self.calls: list[tuple] = []

    def health(self) -> tuple[bool, str]:
        return True, "ok"

    def put_record(self, record: Any) -> None:
        self.calls.append(("put_record", record.id, record.seq, record.turn_id))

    def add_event(self, sid: str, seq: int, data: bytes) -> None:
        self.calls.append(("add_event", sid, seq))

    def trim_events(self, sid: str, upto: int) -> None:
        self.calls.append(("trim_events", sid, upto))

    def add_message(self, sid: str, message: str) -> None:
        self.calls.append(("add_message", sid, message))

    def replace_history(self, sid: str, history: list) -> None:
        self.calls.append(("replace_history", sid, history))

    def delete(self, sid: str) -> None:
        self.calls.append(("delete", sid))

    async def acquire(self, sid: str, node: str, ttl: float) -> bool:
        self.calls.append(("acquire", sid, node))
        return True

    async def release(self, sid: str, node: str) -> None:
        self.calls.append(("release", sid, node))

    def called(self, name: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == name]


# Clients ------------------------------------------------------------------------------------
_conn_ids = itertools.count(1)


class FakeConnection:
    """A client connection as the core sees it; ``enqueue`` collects what the client receives."""

    def __init__(self, principal: str = "alice") -> None:
        self.id = f"c_fake{next(_conn_ids)}"
        self.key = self.id.encode()
        self.principal = principal
        self.remote = "192.0.2.1"
        self.sessions: set[str] = set()
        self.closed = False
        self.received: list[bytes] = []

    def enqueue(self, data: bytes) -> None:
        if not self.closed:
            self.received.append(data)

    def events(self, name: str | None = None) -> list[dict]:
        docs = [orjson.loads(b) for b in self.received]
        return [d for d in docs if name is None or d["event"] == name]

    def names(self) -> list[str]:
        return [d["event"] for d in self.events()]

    def clear(self) -> None:
        self.received.clear()


# The core, wired as the server wires it --------------------------------------------------------
class Core:
    """Real Placement, Turns, Relay, Recovery, Router and registry over a FakePool."""

    def __init__(self, store: Any = None, budgets: Any = None, **options: Any) -> None:
        self.config = make_config(**options)
        self.metrics = Metrics()
        self.pool = FakePool(self.config)
        self.store = store
        c = self.config
        self.registry = SessionRegistry(Limits(c.max_history_messages, c.max_history_bytes, c.replay_buffer,
                                               c.replay_buffer_bytes), store)
        pool: Any = self.pool  # duck-typed SandboxPool
        self.placement = Placement(pool, c, self.metrics)
        self.turns = Turns(c, self.metrics, self.placement, pool, budgets)
        self.recovery = Recovery(c, self.registry, self.placement, self.turns, pool, self.metrics, store, "node-a")
        self.relay = Relay(self.placement, self.turns, c.sandbox_max_event_size)
        self.router = Router(c, pool, self.registry, self.metrics, self.placement, self.turns, self.recovery, store,
                             b"k" * 32, "node-a")
        self.turns.on_idle = self.recovery.idle
        self.turns.on_unplaced = self.recovery.restore
        self.pool.on_lost = self.recovery.on_sandbox_lost
        self._ids = itertools.count(1)

    def add_sandbox(self, state: str = READY, answer: Any = OPENED) -> Sandbox:
        sandbox = make_sandbox(next(self._ids), state, answer)
        pipe(sandbox).on_control = self.placement.on_control
        self.pool.sandboxes[sandbox.id] = sandbox
        return sandbox

    async def session(self, conn: FakeConnection | None = None, history: list | None = None,
                      sandbox: Sandbox | None = None) -> Session:
        """A registered session hosted on ``sandbox`` (or the best one), attached to ``conn``."""
        owner = conn.principal if conn is not None else "alice"
        session, _ = self.registry.create(owner, history)
        await self.placement.host(session, sandbox)
        if conn is not None:
            session.connection = conn  # type: ignore[assignment]
            conn.sessions.add(session.id)
        return session

    # Playing the sandbox ----------------------------------------------------------------------
    def event(self, sandbox: Sandbox, session: Session, name: str, content: Any = None,
              turn_id: str | None = None, step_id: str | None = None, **meta: Any) -> None:
        """The sandbox sends one turn event (an E frame) for ``session``'s running turn."""
        tid = turn_id if turn_id is not None else session.turn.id  # type: ignore[union-attr]
        body = event_body(content, {**meta, "turn_id": tid}, step_id)
        self.relay.on_data(sandbox, ops.event_frame(session.id, tid, name, body))

    def message(self, sandbox: Sandbox, session: Session, message: dict, turn_id: str | None = None) -> None:
        """The sandbox appends one message to the running turn's history (an M frame)."""
        tid = turn_id if turn_id is not None else session.turn.id  # type: ignore[union-attr]
        self.relay.on_data(sandbox, ops.message_frame(session.id, tid, orjson.dumps(message)))

    def finish(self, sandbox: Sandbox, session: Session, answer: str = "done") -> str:
        """The sandbox ends the running turn with a final answer; returns the turn id."""
        tid = session.turn.id  # type: ignore[union-attr]
        self.event(sandbox, session, "agent.final_answer", answer)
        return tid
