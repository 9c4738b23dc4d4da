"""Placement: the one owner of which sandbox hosts which session.

Only this module writes ``session.sandbox``, ``session.placing`` and a
sandbox's ``hosted``/``opening``/``closing``. A session is bound to a sandbox
once that sandbox has confirmed the open (``opened``); a failed open or move
leaves the session exactly where it was. Closing is immediate on our side:
frames the sandbox sends for the session before it confirms the close are
late, not forged, and are dropped quietly.

This is also where a sandbox is believed or not. A sandbox speaks only for
the sessions placed on it, and only for the turn the front started (see
:meth:`Placement.admit`); anything else is an offence: dropped, logged once
per sandbox and reason, counted in /metrics, and after
``--sandbox-max-offences`` the sandbox is replaced (SANDBOX_MISBEHAVED).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING, Any

from myagent.protocol.errors import ErrorCode
from myagent.protocol.exceptions import FrameTooLarge
from myagent.supervisor.pool import SandboxPool
from myagent.supervisor.sandboxes import DEAD, DRAINING, READY, Sandbox
from myagent.wire import ops

if TYPE_CHECKING:
    from myagent.supervisor.metrics import Metrics
    from myagent.supervisor.sessions import Session

log = logging.getLogger("myagent.supervisor.placement")

MAX_CLOSING = 4096  # sessions a sandbox was told to close and has not confirmed, remembered at most
STOPPING = "the server is stopping"  # what an open still pending when the server stops resolves to


class PlacementError(Exception):
    """A session could not be hosted; ``code`` says why in protocol terms."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Placement:
    def __init__(self, pool: SandboxPool, config: Any, metrics: "Metrics") -> None:
        self.pool = pool
        self.config = config
        self.metrics = metrics
        self._nonces = itertools.count(1)
        self.stopping = False  # set on drain: no open starts, pending ones end (SHUTTING_DOWN)

    # Choosing --------------------------------------------------------------------
    def choose(self, exclude: Sandbox | None = None) -> Sandbox | None:
        """The least-loaded ready sandbox with room, or None."""
        best = None
        limit = self.config.sessions_per_worker
        for sandbox in self.pool.sandboxes.values():
            if sandbox.state == READY and sandbox.kill_reason is None and sandbox is not exclude and (
                    sandbox.load < limit and (best is None or sandbox.load < best.load)):
                best = sandbox
        return best

    @property
    def free_slots(self) -> int:
        limit = self.config.sessions_per_worker
        return sum(max(0, limit - s.load) for s in self.pool.sandboxes.values()
                   if s.state == READY and s.kill_reason is None)

    @property
    def capacity(self) -> int:
        """Sessions the pool can host at most (growing to --max-sandboxes where allowed)."""
        return self.config.sessions_per_worker * self.pool.max_size

    def can_place(self) -> bool:
        """A new session would find room now, or once the pool grows."""
        return self.free_slots > 0 or self.pool.can_grow

    # Binding ---------------------------------------------------------------------
    async def host(self, session: "Session", sandbox: Sandbox | None = None) -> Sandbox:
        """Open ``session`` (with its history) on ``sandbox`` or the best one, and bind it once the
        sandbox confirms. Raises PlacementError; the session is then unbound as before."""
        assert session.sandbox is None, "host() is for unbound sessions; use move()"
        if self.stopping:
            raise PlacementError(ErrorCode.SHUTTING_DOWN, "The server is shutting down.")
        target = sandbox or self.choose() or await self.pool.grow(self.choose)
        if target is None:
            raise PlacementError(ErrorCode.SERVER_BUSY, "Every sandbox is full; try again later.")
        session.placing = True
        try:
            await self._open(session, target)
        finally:
            session.placing = False
        if session.closed:  # ended while the sandbox was opening it: it must forget it again
            self._forget_on(target, session.id)
            raise PlacementError(ErrorCode.SESSION_CLOSED, "The session was closed.")
        self._bind(session, target)
        return target

    async def move(self, session: "Session", target: Sandbox | None = None) -> bool:
        """Re-host a bound, idle session on ``target`` (default: the best other sandbox; the same
        sandbox re-opens it with its current history). Opens first, then closes the old one: a
        failed move leaves the session where it was. True if it moved."""
        old = session.sandbox
        if old is None or session.placing or session.turn is not None or self.stopping:
            return False
        target = target or self.choose(exclude=old)
        if target is None:
            return False
        session.placing = True
        try:
            await self._open(session, target)
        except PlacementError as exc:
            level = logging.INFO if exc.code is ErrorCode.SHUTTING_DOWN else logging.WARNING
            log.log(level, "session %s stays on sandbox %s: %s", session.id, old.id, exc.message,
                    extra={"session_id": session.id, "sandbox_id": target.id})
            return False
        finally:
            session.placing = False
        if session.closed:  # ended during the move (unhost already closed it on the old sandbox)
            if target is not old:
                self._forget_on(target, session.id)
            return False
        if session.sandbox is not old:  # the old sandbox died meanwhile and lost() unbound it
            self._bind(session, target)
            return True
        if target is not old:
            self._unbind(session)
            self._bind(session, target)
        return True

    def unhost(self, session: "Session") -> None:
        """Unbind now and tell the sandbox to forget the session (its answer is not awaited)."""
        if session.sandbox is not None:
            self._unbind(session)

    def stop_opening(self) -> None:
        """The server is stopping: no open starts from now on, and the pending ones end at once
        (SHUTTING_DOWN) instead of holding their client's request, and with it the connection's
        close, until the sandbox is stopped under them."""
        self.stopping = True
        for sandbox in self.pool.sandboxes.values():
            for _, future in sandbox.opening.values():
                if not future.done():
                    future.set_result(STOPPING)

    def lost(self, sandbox: Sandbox) -> list["Session"]:
        """A sandbox is gone: fail its pending opens and unbind every session it hosted."""
        for _, future in sandbox.opening.values():
            if not future.done():
                future.set_result("the sandbox was lost")
        sessions = list(sandbox.hosted.values())
        for session in sessions:
            session.sandbox = None
        sandbox.hosted.clear()
        sandbox.closing.clear()
        return sessions

    async def _open(self, session: "Session", sandbox: Sandbox) -> None:
        sid = session.id
        if sid in sandbox.opening:
            raise PlacementError(ErrorCode.SESSION_BUSY, "The session is already being opened.")
        nonce = next(self._nonces)  # echoed in the answer: a late answer to an older open is told apart
        future = asyncio.get_running_loop().create_future()
        sandbox.opening[sid] = (nonce, future)
        sandbox.last_nonce = nonce
        try:
            if sandbox.pipe is not None and sandbox.pipe.paused:
                await sandbox.pipe.writable()  # a burst of restores waits for the sandbox to read
            sandbox.send_raw(ops.open_frame(sid, nonce, session.history))
            error = await asyncio.wait_for(future, self.config.sandbox_open_timeout)
        except FrameTooLarge:
            error = "its history does not fit in one pipe frame"
        except TimeoutError:
            error = "the sandbox did not answer"
        except asyncio.CancelledError:
            self._forget_on(sandbox, sid)
            raise
        finally:
            sandbox.opening.pop(sid, None)
        if error is None and sandbox.state not in (READY, DRAINING):
            error = "the sandbox was lost"
        if error is not None:
            if session.sandbox is not sandbox:
                self._forget_on(sandbox, sid)  # it may still open it later: make sure it forgets
            if self.stopping or self.pool.stopping:  # the server's own doing, not a fault
                log.info("session %s not opened on sandbox %s: the server is stopping", sid, sandbox.id,
                         extra={"session_id": sid, "sandbox_id": sandbox.id})
                raise PlacementError(ErrorCode.SHUTTING_DOWN, "The server is shutting down.")
            log.warning("session %s could not be opened on sandbox %s: %s", sid, sandbox.id, error,
                        extra={"session_id": sid, "sandbox_id": sandbox.id})
            raise PlacementError(ErrorCode.INTERNAL_ERROR, "The agent could not start a session.")

    def _bind(self, session: "Session", sandbox: Sandbox) -> None:
        assert session.sandbox is None or session.sandbox is sandbox, "bound twice"
        sandbox.closing.pop(session.id, None)
        sandbox.hosted[session.id] = session
        session.sandbox = sandbox

    def _unbind(self, session: "Session") -> None:
        sandbox = session.sandbox
        assert sandbox is not None
        sandbox.hosted.pop(session.id, None)
        session.sandbox = None
        self._forget_on(sandbox, session.id)

    @staticmethod
    def _forget_on(sandbox: Sandbox, sid: str) -> None:
        """Tell ``sandbox`` to forget ``sid``; what it sends for it until it answers is late, not forged."""
        if sandbox.state != DEAD:
            closing = sandbox.closing
            closing[sid] = None
            if len(closing) > MAX_CLOSING:  # a sandbox that never answers closes: forget the oldest
                del closing[next(iter(closing))]
            sandbox.send({"op": ops.CLOSE, "sid": sid})

    # Believing a sandbox -------------------------------------------------------------
    def admit(self, sandbox: Sandbox, sid: bytes, turn_id: bytes) -> "Session | None":
        """The session a turn frame from ``sandbox`` may speak for, or None (dropped).

        Hot path: one dict lookup and a compare in the common case."""
        key = sid.decode("ascii", "replace")
        session = sandbox.hosted.get(key)
        if session is None:
            if key not in sandbox.closing:
                self.offence(sandbox, "session not hosted by this sandbox")
            return None
        turn, tid = session.turn, turn_id.decode("ascii", "replace")
        if turn is not None and turn.id == tid:
            return session
        if tid not in session.ended_turns:  # else a late frame of a turn the front already ended
            self.offence(sandbox, "unknown turn")
        return None

    def on_control(self, sandbox: Sandbox, frame: dict) -> None:
        op, sid, nonce = frame.get("op"), frame.get("sid"), frame.get("n")
        if not isinstance(sid, str):
            self.offence(sandbox, "malformed control op")
        elif op in (ops.OPENED, ops.OPEN_FAILED):
            pending = sandbox.opening.get(sid)
            if pending is not None and pending[0] == nonce:
                if not pending[1].done():
                    pending[1].set_result(None if op == ops.OPENED else str(frame.get("error"))[:500])
            elif not (type(nonce) is int and 0 < nonce <= sandbox.last_nonce):
                self.offence(sandbox, f"{op} for a session it was not asked to open")
            # else: the answer to an open that timed out (or was cancelled): late, not forged
        elif op == ops.CLOSED:
            sandbox.closing.pop(sid, None)
        elif op == ops.SPENT:
            self._spent(sandbox, sid, frame)
        else:
            self.offence(sandbox, "unknown op")

    def _spent(self, sandbox: Sandbox, sid: str, frame: dict) -> None:
        """Tokens a budgeted turn's request spent (charged only if the turn ends without its usage)."""
        tokens, turn_id = frame.get("tokens"), frame.get("turn")
        if type(tokens) is not int or not 0 <= tokens < 2**53 or not isinstance(turn_id, str):
            self.offence(sandbox, "malformed control op")
            return
        session = self.admit(sandbox, sid.encode(), turn_id.encode())
        if session is not None and session.turn is not None:
            session.turn.spent += tokens

    def offence(self, sandbox: Sandbox, what: str) -> None:
        sandbox.offences += 1
        self.metrics.frames_rejected[what] += 1
        if sandbox.offences == 1:
            log.warning("sandbox %s (pid %s) sent a frame it may not send (%s): dropped; it is replaced "
                        "after %d such frames", sandbox.id, sandbox.pid, what, self.config.sandbox_max_offences,
                        extra={"sandbox_id": sandbox.id, "pid": sandbox.pid})
        if sandbox.offences >= self.config.sandbox_max_offences:
            self.pool.terminate(sandbox, ErrorCode.SANDBOX_MISBEHAVED.value)
