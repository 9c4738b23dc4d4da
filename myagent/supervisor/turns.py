"""Turns: start, queue, cancel and end them, one at a time per session.

A user message runs at once when its session is free (hosted, not being
placed, no turn running). Otherwise it waits in the session's inbox (at most
``--max-queued-messages``) and the client is told with
``agent.message_queued``, naming the turn id it will run as. A message sent
while a turn runs follows its ``metadata.multitask`` (default ``--multitask``):
``reject`` refuses it (SESSION_BUSY), ``enqueue`` runs it after, ``interrupt``
cancels the running turn (its work is kept) and runs it next, ``rollback``
cancels the running turn, drops that turn's messages from the history, then
runs it. A message that arrives while the session is being restored or moved
always waits (up to the queue's bound): a client never retries because of a
restore.

Invariants: the front records the user's message in the history itself when
the turn is sent to its sandbox; a turn ends only in :meth:`Turns.finish` (after its terminal
event was delivered), which then runs the next queued message or reports the
session idle, and adds the turn's usage to the session, /metrics and its budget holder.

Budgets (:mod:`myagent.supervisor.budgets`): with a token budget set, a started turn is sent
only once its holder's balance was read; a spent balance ends it at once with one
``agent.interrupted`` (BUDGET_EXCEEDED) and its message never reaches the sandbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

import orjson

from myagent.protocol import events as ev
from myagent.protocol.errors import ErrorCode
from myagent.protocol.translate import Translator
from myagent.protocol.usage import budget_refusal, check_usage, zero_usage
from myagent.supervisor.background import Background
from myagent.supervisor.replies import ClientError
from myagent.supervisor.sessions import Session, Turn, new_turn_id
from myagent.supervisor.tracing import TurnTraces
from myagent.wire import ops

if TYPE_CHECKING:
    from myagent.supervisor.budgets import Budgets
    from myagent.supervisor.metrics import Metrics
    from myagent.supervisor.placement import Placement
    from myagent.supervisor.pool import SandboxPool

log = logging.getLogger("myagent.supervisor.turns")

_CODES = frozenset(code.value for code in ErrorCode)
PRIORITY = ("interrupt", "rollback")  # multitask modes that go ahead of the queue
MAX_PENDING_CONFIRMS = 64  # confirmations one turn may have waiting at once


class Turns:
    def __init__(self, config: Any, metrics: "Metrics", placement: "Placement", pool: "SandboxPool",
                 budgets: "Budgets | None" = None) -> None:
        self.config = config
        self.budgets = budgets if budgets is not None and budgets.enabled else None
        self.metrics = metrics
        self.placement = placement
        self.pool = pool
        self.translate = Translator()
        # Set by the server: a free session with nothing queued, and an unhosted one with a message.
        self.on_idle: Callable[[Session], None] = lambda session: None
        self.on_unplaced: Callable[[Session], None] = lambda session: None
        self.draining = False  # set by the server on SIGTERM: queued messages are refused, not started
        self.traces: TurnTraces | None = None  # set by the server when traces are exported
        self.background = Background()

    # A new message ------------------------------------------------------------------
    def submit(self, session: Session, text: str, message_id: str | None, mode: str) -> None:
        """Run ``text`` now or queue it; ClientError if it is refused."""
        if session.quarantined:
            raise ClientError(ErrorCode.SESSION_QUARANTINED, "This session's turns kept crashing the agent; it "
                              "runs no more turns. Export its state or start a new session.")
        running = session.turn
        if running is None and not session.inbox and session.free:
            self._start(session, Turn(new_turn_id(), text, message_id, mode))
            return
        if running is not None and mode == "reject":
            raise ClientError(ErrorCode.SESSION_BUSY, "A turn is already running in this session.")
        if len(session.inbox) >= self.config.max_queued_messages:
            raise ClientError(ErrorCode.SESSION_BUSY,
                              f"{len(session.inbox)} messages already wait in this session (limit).")
        turn = Turn(new_turn_id(), text, message_id, mode)
        inbox = session.inbox
        if running is not None and mode in PRIORITY:
            # Ahead of the queue, behind earlier interrupting messages: they run in the order sent.
            ahead = 0
            while ahead < len(inbox) and inbox[ahead].multitask in PRIORITY:
                ahead += 1
            inbox.insert(ahead, turn)
            running.rollback = running.rollback or mode == "rollback"
            self.cancel(session, ErrorCode.CANCELLED)
        else:
            inbox.append(turn)
        meta: dict[str, Any] = {"turn_id": turn.id, "position": inbox.index(turn) + 1, "multitask": mode}
        if message_id:
            meta["message_id"] = message_id
        session.emit(ev.AGENT_MESSAGE_QUEUED, "The message will run when the session is free.", meta)
        if session.sandbox is None and not session.placing:
            self.on_unplaced(session)
        elif running is None:
            self.next(session)  # free after all (a placement just ended): nothing may wait for no reason

    def _start(self, session: Session, turn: Turn) -> None:
        sandbox = session.sandbox
        assert sandbox is not None
        turn.started = time.monotonic()
        turn.history_mark = session.history_added
        session.turn = turn
        if self.traces is not None:
            self.traces.start(session, turn)  # one trace per turn, its root span on turn.trace
        if log.isEnabledFor(logging.DEBUG):
            log.debug("turn %s of session %s started", turn.id, session.id, extra=_ids(session, turn))
        session.turns += 1
        if self.config.turn_timeout > 0:
            turn.timer = asyncio.get_running_loop().call_later(
                self.config.turn_timeout, self.timeout, session, turn.id)
        session.persist()
        sandbox.turns += 1
        if sandbox.turn_limit and sandbox.turns >= sandbox.turn_limit:
            self.pool.retire(sandbox)  # takes no new sessions; this one moves after its turn
        self.metrics.turns_started += 1
        if self.budgets is not None:
            self.background.spawn(self._dispatch_budgeted(session, turn))
        else:
            self._dispatch(session, turn, None)

    def _dispatch(self, session: Session, turn: Turn, budget: dict | None) -> None:
        """Send the started turn to its sandbox, with its token allowance (None: no budget)."""
        sandbox = session.sandbox
        assert sandbox is not None
        turn.dispatched = True
        # The user's message is history from now on, whatever happens to the sandbox.
        session.add_history(orjson.dumps({"role": "user", "content": turn.text}).decode())
        frame: dict[str, Any] = {"op": ops.TURN, "sid": session.id, "turn": turn.id, "text": turn.text}
        if budget is not None:
            frame["budget"] = budget
        if turn.trace is not None:
            frame["tp"] = TurnTraces.traceparent(turn)  # the sandbox's spans join this turn's trace
        sandbox.send(frame)

    async def _dispatch_budgeted(self, session: Session, turn: Turn) -> None:
        assert self.budgets is not None
        budget = await self.budgets.allowance(session.owner, session.id)
        if session.turn is not turn:
            return  # ended while the balance was read (cancelled, closed, its sandbox lost)
        if session.sandbox is None:  # lost and not restored yet: the turn cannot run (never seen here)
            self.abort(session, ErrorCode.SANDBOX_CRASHED)
            return
        if budget["tokens"] <= 0:
            text, meta = budget_refusal(budget)
            if turn.trace is not None:
                meta.update(TurnTraces.trace_id(turn))
            usage = zero_usage()
            name, body = self.translate.interrupted(turn.id, ErrorCode.BUDGET_EXCEEDED, text=text, usage=usage,
                                                    **meta)
            session.deliver(name.encode(), body)
            self.finish(session, name, ErrorCode.BUDGET_EXCEEDED.value, usage)
            return
        self._dispatch(session, turn, budget)

    # Cancelling -------------------------------------------------------------------------
    def cancel(self, session: Session, reason: ErrorCode) -> bool:
        """Ask the sandbox to cancel the running turn; its terminal event ends it. False if none runs.

        A sandbox that has not ended the turn --cancel-grace seconds later (agent code that
        swallows the cancellation) loses it: the front ends the turn and re-opens the session."""
        turn = session.turn
        if turn is None:
            return False
        if not turn.dispatched:  # still waiting for its balance: nothing runs to cancel
            self.abort(session, reason)
            return True
        if turn.cancelling is None and session.sandbox is not None:
            turn.cancelling = reason.value
            session.sandbox.send({"op": ops.CANCEL, "sid": session.id, "turn": turn.id, "reason": reason.value})
            turn.grace = asyncio.get_running_loop().call_later(
                self.config.cancel_grace, self._cancel_ignored, session, turn.id)
        return True

    def _cancel_ignored(self, session: Session, turn_id: str) -> None:
        turn = session.turn
        if turn is None or turn.id != turn_id or session.closed:
            return
        log.warning("session %s: turn %s ignored its cancellation for %.0fs; ending it here", session.id,
                    turn_id, self.config.cancel_grace, extra=_ids(session, turn))
        self.placement.unhost(session)  # its sandbox may still run it: that agent instance is dropped
        self.abort(session, turn.cancelling or ErrorCode.CANCELLED)
        self.on_unplaced(session)

    def timeout(self, session: Session, turn_id: str) -> None:
        if session.turn is not None and session.turn.id == turn_id:
            self.cancel(session, ErrorCode.TURN_TIMEOUT)

    # Events of the running turn ------------------------------------------------------------
    def on_event(self, session: Session, event: str, doc: dict) -> None:
        """Bookkeeping after a turn event from the sandbox was delivered."""
        turn = session.turn
        assert turn is not None
        if turn.first_event is None:
            turn.first_event = time.monotonic()
            self.metrics.first_event(turn.first_event - turn.started)
        if event == ev.AGENT_TOOL_CALL:
            turn.tools_running += 1
        elif event == ev.AGENT_TOOL_RESULT:
            turn.tools_running = max(0, turn.tools_running - 1)
        elif event == ev.AGENT_USER_CONFIRM and doc.get("step_id"):
            if len(turn.pending_steps) < MAX_PENDING_CONFIRMS:  # more would be a sandbox filling our memory
                turn.pending_steps.add(doc["step_id"])
        elif event in ev.TERMINAL_EVENTS:
            meta = doc["metadata"]
            code = meta.get("error_code") or meta.get("reason")
            if code is not None and (type(code) is not str or code not in _CODES):
                code = ErrorCode.INTERNAL_ERROR.value  # /metrics labels: only the protocol's codes
            self.finish(session, event, code, check_usage(meta.get("usage")))

    def abort(self, session: Session, code: ErrorCode | str, **extra: Any) -> None:
        """End the running turn from the front (its sandbox is gone, the session is closing)."""
        turn = session.turn
        if turn is None:
            return
        # A turn its sandbox ran without reporting back has unknown usage; one never sent, none.
        usage = None if turn.dispatched else zero_usage()
        if turn.trace is not None:
            extra.update(TurnTraces.trace_id(turn))
        name, body = self.translate.interrupted(turn.id, code, usage=usage, **extra)
        session.deliver(name.encode(), body)
        self.finish(session, name, orjson.loads(body)["metadata"]["error_code"], usage)

    def finish(self, session: Session, event: str, code: str | None, usage: dict | None = None) -> None:
        """The one place a turn ends: its terminal event has just been delivered. ``usage``: the
        turn's, checked (None: unknown)."""
        turn, session.turn = session.turn, None
        if turn is None:
            return
        session.usage.add(usage)
        self.metrics.add_usage(session.agent, usage)
        if self.budgets is not None:
            # The turn's usage when it came; else what its sandbox reported before it was lost.
            self.budgets.charge(session.owner, session.id, usage["total_tokens"] if usage is not None else turn.spent)
        for timer in (turn.timer, turn.grace):
            if timer is not None:
                timer.cancel()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("turn %s of session %s ended: %s", turn.id, session.id, code or event, extra=_ids(session, turn))
        if turn.trace is not None:
            self.traces.end(turn, event, code)
        session.ended_turns.append(turn.id)
        session.last_active = time.monotonic()
        self.metrics.turn_done(event, code, time.monotonic() - turn.started)
        session.persist()
        if turn.rollback and event == ev.AGENT_INTERRUPTED:  # a turn that completed keeps its work
            self.background.spawn(self._rollback(session, turn))
        else:
            self.next(session)

    async def _rollback(self, session: Session, turn: Turn) -> None:
        if session.closed:
            return
        dropped = session.drop_history_since(turn.history_mark)
        if session.sandbox is not None:
            # Re-open on the same sandbox: its agent forgets the dropped messages too.
            if not await self.placement.move(session, session.sandbox) and session.sandbox is not None:
                self.placement.unhost(session)  # cannot be trusted to hold the right history now
        if session.closed:
            return
        session.emit(ev.SYSTEM_NOTICE, "The interrupted turn was rolled back: its messages left the history.",
                     {"rolled_back_turn_id": turn.id, "messages_dropped": dropped})
        if session.sandbox is None:
            self.on_unplaced(session)
        else:
            self.next(session)

    # What comes next ----------------------------------------------------------------------
    def next(self, session: Session) -> None:
        """The session may be free now: run its next queued message, or report it idle."""
        if not session.free:
            return
        if session.inbox and self.draining:
            self.drop_queue(session, ErrorCode.SHUTTING_DOWN, "The server is shutting down.")
        if session.inbox:
            self._start(session, session.inbox.popleft())
        else:
            self.on_idle(session)

    def drop_queue(self, session: Session, code: ErrorCode, text: str) -> None:
        """Refuse every queued message of ``session`` (closed, quarantined, the agent is unavailable,
        the server stops): each ends its announced turn with one agent.error."""
        while session.inbox:
            turn = session.inbox.popleft()
            extra = {"message_id": turn.message_id} if turn.message_id else {}
            name, body = self.translate.failed(turn.id, code, text, usage=zero_usage(), **extra)
            session.deliver(name.encode(), body)


def _ids(session: Session, turn: Turn) -> dict[str, str]:
    """Log extras of a line about ``turn``: its session, its id, its trace when there is one."""
    ids = {"session_id": session.id, "turn_id": turn.id}
    if turn.trace is not None:
        ids.update(TurnTraces.trace_id(turn))
    return ids
