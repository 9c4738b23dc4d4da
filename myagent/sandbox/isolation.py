"""Process-level isolation applied to the zygote and to each sandbox (Linux).

What this gives: a sandbox dies with its parent (parent-death signal), lives in
its own process group (the whole tree can be killed at once) and cannot gain
privileges through exec (``no_new_privs``). It is process isolation, not a VM.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal

log = logging.getLogger("myagent.sandbox")

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38

_libc = None


def _prctl(option: int, arg: int) -> bool:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        if name is None:
            return False
        _libc = ctypes.CDLL(name, use_errno=True)
    return _libc.prctl(option, arg, 0, 0, 0) == 0


def die_with_parent(expected_parent: int) -> None:
    """SIGKILL this process when its parent dies; exit now if it already did."""
    if not _prctl(PR_SET_PDEATHSIG, signal.SIGKILL):
        log.warning("prctl(PR_SET_PDEATHSIG) unavailable: sandboxes rely on pipe EOF alone")
    # The parent may have died between fork and prctl: then we were re-parented.
    if os.getppid() != expected_parent:
        os._exit(4)


def no_new_privs() -> None:
    if not _prctl(PR_SET_NO_NEW_PRIVS, 1):
        log.warning("prctl(PR_SET_NO_NEW_PRIVS) unavailable")


def reset_signals() -> None:
    """A forked sandbox starts from default dispositions, not the zygote's."""
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)
    # The front process decides when sandboxes stop; a terminal's Ctrl-C does not.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.set_wakeup_fd(-1)
