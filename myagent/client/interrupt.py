"""Ctrl-C for `myagent-ws run`, which runs agent code in this very process.

asyncio's own handler (asyncio.Runner) is not enough: it is installed only if
SIGINT still has Python's default handler, so a process started with SIGINT
ignored (a CI job or a script's ``cmd &`` hands that down) ignored Ctrl-C at the
confirmation prompt for ever; and after cancelling once it waits for the
agent's code, which may swallow the cancellation, block the loop or wait on a
thread at shutdown. Here the first Ctrl-C cancels the turn (the agent repairs
its history) and the process exits within ``grace`` seconds whatever that code
does; a second Ctrl-C exits at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading

EXIT_CTRL_C = 130   # 128 + SIGINT, as shells report it
GRACE_S = 1.0       # after the first Ctrl-C, the turn's cleanup gets this long before the process exits


class CtrlC:
    def __init__(self, grace: float = GRACE_S) -> None:
        self.grace = grace
        self.pressed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    def install(self) -> None:
        """Take SIGINT over, whatever its inherited disposition (ignored included)."""
        signal.signal(signal.SIGINT, self._on_sigint)

    def attach(self) -> None:
        """Called by the main task: Ctrl-C cancels it from now on (before: exits at once)."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()

    def _on_sigint(self, signum: int, frame: object) -> None:
        # A Python-level handler runs in the main thread between bytecodes: also while
        # agent code blocks the loop in a sleep or a busy loop.
        self.pressed += 1
        task, loop = self._task, self._loop
        if self.pressed == 1 and task is not None and loop is not None and not task.done():
            loop.call_soon_threadsafe(task.cancel)
            timer = threading.Timer(self.grace, self.exit_now)
            timer.daemon = True
            timer.start()
            return
        self.exit_now()

    @staticmethod
    def exit_now() -> None:
        try:
            if threading.current_thread() is threading.main_thread():
                sys.stdout.flush()  # from the timer, the main thread may hold (for ever) stdout's lock
            os.write(2, b"\n")  # end the prompt's line
        except Exception:  # noqa: BLE001 - a closed, broken or busy terminal must not stop the exit
            pass
        os._exit(EXIT_CTRL_C)
