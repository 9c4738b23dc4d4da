"""Process-level isolation applied to the zygote and to each sandbox (Linux).

What this gives: a sandbox dies with its parent (parent-death signal), leads
its own session and process group, runs under rlimits it cannot raise, and
cannot gain privileges through exec (``no_new_privs``). Keeping every process a
tool starts inside the sandbox (namespaces, or subreaper and sweep) is
``myagent.sandbox.containment``. It is process isolation, not a VM.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import pwd
import resource
import signal

from myagent.wire.ops import EXIT_PARENT_GONE

log = logging.getLogger("myagent.sandbox")

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
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
        os._exit(EXIT_PARENT_GONE)


def become_subreaper() -> None:
    """Adopt orphaned descendants (a dead sandbox's tool children) so this process reaps them.

    Without it they are re-parented to PID 1, which in many containers never
    calls wait(): every killed sandbox that had started a subprocess would
    leave a zombie behind.
    """
    if not _prctl(PR_SET_CHILD_SUBREAPER, 1):
        log.warning("prctl(PR_SET_CHILD_SUBREAPER) unavailable: orphans of dead sandboxes go to PID 1")


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


def apply_rlimits(max_memory: int, max_files: int, max_file_size: int) -> None:
    """OS ceilings a sandbox cannot raise: the backstop between watchdog samples.

    RLIMIT_DATA (heap and private mappings, Linux >= 4.7) is set to twice the
    psutil cap (at least +256 MiB) so the watchdog acts first and the kernel
    only stops a spike that outruns a sample. RLIMIT_AS is avoided: virtual
    size counts reserved thread stacks and arenas and would fail healthy code.
    """
    def lower(limit: int, value: int) -> None:
        soft, hard = resource.getrlimit(limit)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(limit, (value, value))

    if max_memory > 0:
        lower(resource.RLIMIT_DATA, max(2 * max_memory, max_memory + (256 << 20)))
    if max_files > 0:
        lower(resource.RLIMIT_NOFILE, max_files)
    if max_file_size > 0:
        lower(resource.RLIMIT_FSIZE, max_file_size)


def enter_workdir(root: str, user: str = "", pid: int | None = None) -> str:
    """Give the sandbox a working directory of its own under ``root`` (owned by ``user``).

    ``pid`` names it: the sandbox's pid as the host sees it (inside a PID namespace every
    sandbox is PID 1)."""
    path = os.path.join(root, f"sandbox-{pid or os.getpid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    if user and os.getuid() == 0:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chdir(path)
    os.environ["TMPDIR"] = path
    return path


def drop_privileges(user: str) -> None:
    """When started as root, become ``user`` (and its primary group)."""
    if not user or os.getuid() != 0:
        return
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ["HOME"] = entry.pw_dir
