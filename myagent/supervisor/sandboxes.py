"""The front process's record of one sandbox process, and the termination ladder.

Every kill of a sandbox climbs one ladder with one time budget: the polite
stop op (for planned stops), SIGTERM, SIGKILL, a rung every ``grace`` seconds
until the process has exited; ``kill_rung`` records the last rung that fired
and the zygote's exit report is decoded for /status (:attr:`Sandbox.exit_text`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from myagent.wire import ops
from myagent.wire.pipe import FramePipe

if TYPE_CHECKING:
    from myagent.supervisor.zygote_client import ZygoteClient

STARTING, READY, DRAINING, DEAD = "starting", "ready", "draining", "dead"
RETIRED = "RETIRED"    # kill_reason of a sandbox stopped on purpose (recycling, reload)
SHUTDOWN = "SHUTTING_DOWN"  # kill_reason of every sandbox when the server stops (an ErrorCode value)
# Rungs of the termination ladder, in order; a polite climb starts with the stop op.
STOP_OP, SIGTERM, SIGKILL = "stop op", "SIGTERM", "SIGKILL"


@dataclass(eq=False)
class Sandbox:
    """Front-process view of one sandbox process."""

    id: int
    pid: int
    pipe: FramePipe | None = None
    state: str = STARTING
    # Written by Placement only: sessions hosted here, opens awaiting their answer, closes
    # sent whose answer has not come yet (frames for those are late, not forged).
    hosted: dict[str, Any] = field(default_factory=dict)
    opening: dict[str, tuple[int, asyncio.Future]] = field(default_factory=dict)  # sid -> (nonce, answer)
    closing: dict[str, None] = field(default_factory=dict)  # an ordered set: the oldest is dropped first
    last_nonce: int = 0  # of the last open sent to it: answers to opens up to it may come late
    offences: int = 0
    started: float = field(default_factory=time.monotonic)
    last_beat: float = field(default_factory=time.monotonic)
    turns: int = 0
    turn_limit: int = 0    # recycle after this many turns (0 = never)
    kill_reason: str | None = None  # set before we kill it, so the loss is reported right
    kill_rung: str | None = None    # the rung of the ladder that fired last
    ready: asyncio.Future | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    exited: bool = False
    lost_at: float | None = None
    empty_since: float | None = None  # monotonic; for stopping extra sandboxes (--max-sandboxes)
    zygote: "ZygoteClient | None" = None
    rss: int = 0           # last watchdog sample, bytes (the sandbox and its children)
    cpu: float = 0.0       # last watchdog sample, percent of one core (the sandbox and its children)
    children_rss: int = 0
    children_cpu: float = 0.0
    procs: int = 0         # last watchdog count: the sandbox and every descendant (zombies included)
    tasks: int = 0         # the same, threads included (what --sandbox-max-procs caps)
    containment: str = ""  # "pid-namespace" or "subreaper", as the watchdog found it

    def send(self, frame: dict) -> None:
        if self.pipe is not None:
            self.pipe.send(frame)

    def send_raw(self, body: bytes) -> None:
        if self.pipe is not None:
            self.pipe.send_raw(body)

    @property
    def load(self) -> int:
        return len(self.hosted) + len(self.opening)

    @property
    def exit_text(self) -> str | None:
        return ops.describe_exit(self.exit_code, self.exit_signal) if self.exited else None


def terminate(sandbox: Sandbox, reason: str, grace: float, *, polite: bool = False) -> None:
    """Stop ``sandbox`` for ``reason``: [the stop op,] SIGTERM, SIGKILL, one rung every ``grace``
    seconds until it has exited. ``kill_rung`` records the rung that fired last."""
    if sandbox.exited and sandbox.pipe is not None:
        sandbox.pipe.abort()  # a dead process whose pipe a descendant still holds: report the loss now
    if sandbox.kill_reason is not None or sandbox.exited:
        return
    sandbox.kill_reason = reason
    _climb(sandbox, [STOP_OP, SIGTERM, SIGKILL] if polite else [SIGTERM, SIGKILL], max(grace, 0.0))

def _climb(sandbox: Sandbox, rungs: list[str], grace: float) -> None:
    if sandbox.exited:
        return
    rung = sandbox.kill_rung = rungs[0]
    if rung == STOP_OP:
        sandbox.send({"op": ops.STOP})
    else:
        signal_tree(sandbox, signal.SIGTERM if rung == SIGTERM else signal.SIGKILL)
        if rung == SIGKILL and sandbox.pipe is not None:
            sandbox.pipe.abort()
    if len(rungs) > 1:
        asyncio.get_running_loop().call_later(grace, _climb, sandbox, rungs[1:], grace)

def signal_tree(sandbox: Sandbox, sig: int) -> None:
    try:
        os.killpg(sandbox.pid, sig)  # the sandbox leads its own group: tool children die too
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(sandbox.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
