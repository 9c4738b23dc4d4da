"""Containment: every process a sandbox starts stays in it, is counted, and dies with it (Linux).

The zygote chooses one of two mechanisms when it starts (``probe``) and logs it:

``pid-namespace``
    Each sandbox is cloned as PID 1 of a PID namespace of its own, with a
    mount namespace whose ``/proc`` shows that namespace only. When the zygote
    is not root (``--sandbox-user``, or a server started by an ordinary user)
    the sandbox gets a user namespace too, mapping its uid to itself. Whatever
    a tool does (``setsid()``, double forks, ``start_new_session=True``), its
    processes stay in the namespace: they are descendants of the sandbox (the
    watchdog counts them), and when PID 1 exits or is killed the kernel kills
    every one of them. From inside, no pid names the zygote, the front process
    or another sandbox, and ``/proc`` does not show them, so a tool cannot
    signal them. In a user namespace ``RLIMIT_NPROC`` counts the sandbox's own
    tasks only (per-user-namespace counts, Linux >= 5.14): ``--sandbox-max-procs``
    is then enforced by the kernel, per sandbox. A root sandbox is exempt from
    ``RLIMIT_NPROC``; there ``pid_max`` of its namespace (Linux >= 6.14, at
    least 301) is the kernel's ceiling and the watchdog enforces the cap.
``subreaper``
    Without namespaces (a kernel or container that forbids them, or
    ``MYAGENT_SANDBOX_CONTAINMENT=subreaper``): the sandbox is a child
    subreaper, so orphaned descendants stay in its tree, where the watchdog
    counts them; when a sandbox dies the zygote (a subreaper too) inherits what
    is left and kills it, generation by generation; and the zygote kills every
    sandbox tree before it exits, including when the front process dies. What
    this does not give: a tool can still signal any process of its uid, and a
    SIGKILL of the zygote itself leaves escaped processes behind.

``MYAGENT_SANDBOX_CONTAINMENT`` (read by the zygote): ``auto`` (default),
``pid-namespace`` (refuse to start without namespaces) or ``subreaper``.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import select
import signal
import sys
import time
from dataclasses import dataclass, replace
from typing import Callable

from myagent.wire.ops import EXIT_CONTAINMENT_FAILED, EXIT_PARENT_GONE, EXIT_TERMINATED

PID_NAMESPACE = "pid-namespace"
SUBREAPER = "subreaper"
ENV = "MYAGENT_SANDBOX_CONTAINMENT"

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_GET_DUMPABLE, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 1, 3, 4, 36
PID_MAX_MIN = 301  # the kernel refuses a smaller pid_max
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# clone(2) numbers where its first argument is the flags (s390 swaps them: not listed).
_SYS_CLONE = {"x86_64": 56, "aarch64": 220, "riscv64": 220}

_libc: ctypes.CDLL | None = None
_pylibc: ctypes.PyDLL | None = None


class ContainmentError(OSError):
    """Setting up a sandbox's namespaces failed."""


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise ContainmentError(err, f"{what}: {os.strerror(err)}")
    return result


def prctl(option: int, arg: int) -> int:
    return _check(_lib().prctl(option, ctypes.c_ulong(arg), 0, 0, 0), f"prctl({option})")


# The plan --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """How this zygote contains its sandboxes (decided once by ``probe``)."""

    mode: str = SUBREAPER
    user_namespace: bool = False  # the zygote is not root: the sandbox needs a user namespace
    private_proc: bool = False    # the sandbox's /proc shows its own namespace only
    pid_max: bool = False         # root, and the kernel keeps pid_max per PID namespace (>= 6.14)
    nproc: bool = False           # user namespace, and RLIMIT_NPROC counts per user namespace (>= 5.14)
    reason: str = ""              # why the fallback is in force
    uid: int = 0
    gid: int = 0
    children_file: bool = True    # /proc/PID/task/TID/children exists (reaping, sweeping)

    @property
    def flags(self) -> int:
        return CLONE_NEWPID | CLONE_NEWNS | (CLONE_NEWUSER if self.user_namespace else 0)

    def describe(self) -> str:
        if self.mode == SUBREAPER:
            return f"subreaper sweep (no PID namespace: {self.reason})"
        parts = ["user + PID namespace" if self.user_namespace else "PID namespace",
                 "private /proc" if self.private_proc else "host /proc (mounting a private one failed)"]
        if self.nproc:
            parts.append("RLIMIT_NPROC per sandbox")
        elif self.pid_max:
            parts.append("pid_max per namespace")
        return f"pid namespace: each sandbox is PID 1 of its own ({', '.join(parts)})"


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        found = tuple(int(x) for x in platform.release().split("-")[0].split(".")[:2])
    except ValueError:
        return False
    return found >= (major, minor)


def probe(forced: str | None = None) -> Plan:
    """Find out (with a throwaway clone) which containment this kernel and these privileges allow."""
    forced = (forced if forced is not None else os.environ.get(ENV, "auto")).strip().lower() or "auto"
    plan = _probe(forced)
    return replace(plan, children_file=os.path.exists(f"/proc/self/task/{os.getpid()}/children"))


def _probe(forced: str) -> Plan:
    uid, gid = os.geteuid(), os.getegid()
    if forced == SUBREAPER:
        return Plan(reason=f"{ENV}={SUBREAPER}", uid=uid, gid=gid)
    if forced not in ("auto", PID_NAMESPACE):
        raise ValueError(f"{ENV}={forced!r}: expected auto, {PID_NAMESPACE} or {SUBREAPER}")
    machine = platform.machine()
    if sys.platform != "linux" or machine not in _SYS_CLONE:
        return Plan(reason=f"not supported on {sys.platform}/{machine}", uid=uid, gid=gid)
    plan = Plan(PID_NAMESPACE, user_namespace=uid != 0, private_proc=True,
                pid_max=uid == 0 and _kernel_at_least(6, 14), nproc=uid != 0 and _kernel_at_least(5, 14),
                uid=uid, gid=gid)
    try:
        pid = clone(plan.flags)
    except OSError as exc:
        return Plan(reason=f"clone({_flag_names(plan.flags)}) failed: {exc.strerror}", uid=uid, gid=gid)
    if pid == 0:
        os._exit(_probe_child(plan))
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return plan
    if code == 1:  # namespaces work; a private /proc could not be mounted (e.g. a masked /proc)
        return replace(plan, private_proc=False, pid_max=False)
    return Plan(reason=f"setting up the namespaces failed in a test sandbox (code {code})", uid=uid, gid=gid)


def _probe_child(plan: Plan) -> int:
    try:
        if plan.user_namespace:
            map_ids(plan.uid, plan.gid)
    except BaseException:
        return 2
    try:
        mount_private_proc()
    except BaseException:
        return 1
    return 0


def _flag_names(flags: int) -> str:
    names = [name for bit, name in ((CLONE_NEWUSER, "CLONE_NEWUSER"), (CLONE_NEWPID, "CLONE_NEWPID"),
                                    (CLONE_NEWNS, "CLONE_NEWNS")) if flags & bit]
    return "|".join(names)


# Cloning -------------------------------------------------------------------------------------
def clone(flags: int) -> int:
    """fork(), with namespace flags: 0 in the child, the child's pid (in our namespace) in the parent.

    Python has no clone(); this is os.fork()'s own sequence around the raw system call:
    PyOS_BeforeFork / AfterFork_{Child,Parent} (import lock, at-fork hooks, interpreter state),
    with the GIL held throughout (PyDLL), as os.fork holds it. The zygote is single-threaded.
    """
    global _pylibc
    if _pylibc is None:
        _pylibc = ctypes.PyDLL(None, use_errno=True)
    _pylibc.syscall.restype = ctypes.c_long
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _pylibc.syscall(ctypes.c_long(_SYS_CLONE[platform.machine()]), ctypes.c_ulong(flags | signal.SIGCHLD),
                          None, None, None, None)
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise ContainmentError(err, os.strerror(err))
    return pid


@dataclass(frozen=True)
class Landing:
    """What a freshly forked sandbox got."""

    mode: str
    host_pid: int        # its pid as the zygote and the front process see it
    user_namespace: bool = False
    nproc: bool = False  # RLIMIT_NPROC would count this sandbox alone


def fork_sandbox(plan: Plan, max_procs: int, warn: Callable[[str], None]) -> tuple[int, Landing]:
    """Like os.fork() for a sandbox; the child returns (0, landing) with its namespaces set up.

    If clone() fails for this one sandbox (e.g. the user namespace count is exhausted), it is
    forked plainly and contained by the subreaper sweep, with a warning: refusing to start it
    would make the agent unavailable.
    """
    if plan.mode == PID_NAMESPACE:
        try:
            pid = clone(plan.flags)
        except OSError as exc:
            warn(f"clone({_flag_names(plan.flags)}) failed: {exc.strerror}; this sandbox is contained by the "
                 f"subreaper sweep only")
        else:
            if pid != 0:
                return pid, Landing(PID_NAMESPACE, pid, plan.user_namespace, plan.nproc)
            return 0, _land(plan, max_procs)
    pid = os.fork()
    return pid, Landing(SUBREAPER, pid or os.getpid())


def _land(plan: Plan, max_procs: int) -> Landing:
    """First steps of a cloned sandbox (still privileged in its namespaces); exit if one fails."""
    try:
        host_pid = int(os.readlink("/proc/self"))  # before /proc is replaced: our pid outside
        if plan.user_namespace:
            map_ids(plan.uid, plan.gid)
        if plan.private_proc:
            mount_private_proc()
        if plan.pid_max and plan.private_proc and max_procs > 0:
            with open("/proc/sys/kernel/pid_max", "w") as f:
                f.write(str(max(PID_MAX_MIN, max_procs + 1)))
    except BaseException as exc:  # noqa: BLE001 - never fall back into the zygote's code
        print(f"sandbox: setting up its namespaces failed: {exc}", file=sys.stderr, flush=True)
        os._exit(EXIT_CONTAINMENT_FAILED)
    return Landing(PID_NAMESPACE, host_pid, plan.user_namespace, plan.nproc)


def map_ids(uid: int, gid: int) -> None:
    """Map our uid and gid to themselves in our new user namespace (the only mapping an
    unprivileged process may write). /proc/self is root's while we are not dumpable (the
    zygote dropped root), so become dumpable for the writes."""
    dumpable = prctl(PR_GET_DUMPABLE, 0)
    prctl(PR_SET_DUMPABLE, 1)
    try:
        for name, text in (("uid_map", f"{uid} {uid} 1\n"), ("setgroups", "deny"), ("gid_map", f"{gid} {gid} 1\n")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    finally:
        prctl(PR_SET_DUMPABLE, dumpable)


def mount_private_proc() -> None:
    """Give our mount namespace a /proc of our PID namespace. Mounts are made private first,
    so the new /proc can never propagate to the host's mount namespace."""
    lib = _lib()
    _check(lib.mount(b"none", b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None), "mount --make-rprivate /")
    _check(lib.mount(b"proc", b"/proc", b"proc", ctypes.c_ulong(MS_NOSUID | MS_NODEV | MS_NOEXEC), None),
           "mount proc /proc")


# Inside the sandbox ------------------------------------------------------------------------------
def die_with_zygote(zygote_pidfd: int) -> None:
    """SIGKILL this sandbox when the zygote dies; exit now if it already did.

    getppid() is 0 for PID 1 of a namespace, so the race between clone and prctl is closed
    with a pidfd of the zygote instead (readable once the zygote has exited).
    """
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if zygote_pidfd < 0:  # no pidfd (Linux < 5.3): the window stays open, the pipe's EOF backs it up
        return
    try:
        gone = bool(select.select([zygote_pidfd], [], [], 0)[0])
    finally:
        os.close(zygote_pidfd)
    if gone:
        os._exit(EXIT_PARENT_GONE)


def confine(landing: Landing, max_procs: int) -> None:
    """Last containment steps, after the sandbox's own setup and before agent code runs."""
    if landing.mode == PID_NAMESPACE:
        # PID 1 ignores signals it has no handler for, even SIGTERM from the front process.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    else:
        # Orphaned descendants stay in this sandbox's tree (counted, and swept when it dies).
        prctl(PR_SET_CHILD_SUBREAPER, 1)
    if landing.nproc and max_procs > 0:
        # Counted per user namespace: this sandbox's tasks only, threads included. (Older kernels
        # count every process of the uid: the limit would starve the other sandboxes.)
        resource.setrlimit(resource.RLIMIT_NPROC, (max_procs, max_procs))
    if landing.user_namespace:
        drop_capabilities()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    os._exit(EXIT_TERMINATED)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """Give up the capabilities a new user namespace grants (over our own namespaces only, but
    enough to unmount our /proc and look at the host's): agent code runs with none."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_lib().capset(ctypes.byref(header), data), "capset")


# Reaping and sweeping ------------------------------------------------------------------------------
def children(pid: int | str = "self", main_thread_only: bool = False) -> list[int]:
    """Children of process ``pid`` (pids as this /proc names them), from /proc/PID/task/TID/children.

    ``main_thread_only``: of the main thread alone, where orphans are re-parented to (the
    kernel hands them to the first live thread of their new parent).
    """
    base = f"/proc/{pid}"
    try:
        if main_thread_only:
            tids = [os.readlink(base) if pid == "self" else str(pid)]  # the main thread's tid is the pid
        else:
            tids = os.listdir(f"{base}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tids:
        try:
            with open(f"{base}/task/{tid}/children") as f:
                found.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return found


def _zombie_ns_pid(pid: int) -> int | None:
    """The pid to wait for if ``pid`` (as /proc names it) is a zombie: its pid in the innermost
    namespace, which is ours when /proc is the host's but we are PID 1 of a namespace."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    state = ns_pid = None
    for line in text.splitlines():
        if line.startswith("State:"):
            state = line.split()[1]
        elif line.startswith("NSpid:"):
            ns_pid = int(line.split()[-1])
    return ns_pid if state == "Z" else None


class OrphanReaper:
    """Reaps the zombies a sandbox inherits as PID 1 (or subreaper) and that nobody waits for.

    Orphans (children of a tool's process that died, double-forked daemons that exit) are
    re-parented to the sandbox; unreaped, each holds a pid and counts against
    ``--sandbox-max-procs`` until the sandbox dies. The sandbox cannot tell an orphan from a
    child its own code will wait for, so it reaps only zombies of its main thread (where
    orphans land) that stayed zombies for ``grace`` seconds across two passes of the event
    loop: asyncio (libuv) and a waiting ``subprocess`` reap their children at once. A tool
    that asks a dead child's status later than that gets what Python gives when the status
    is gone (Popen.returncode 0).
    """

    def __init__(self, main_thread_only: bool, grace: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.main_thread_only = main_thread_only
        self.grace = grace
        self.clock = clock
        self.first_seen: dict[int, float] = {}
        self.reaped = 0

    def sweep(self) -> int:
        """One pass; returns how many zombies it reaped."""
        now = self.clock()
        zombies = {ns for pid in children("self", self.main_thread_only) if (ns := _zombie_ns_pid(pid))}
        reaped = 0
        for pid in zombies:
            if now - self.first_seen.setdefault(pid, now) < self.grace:
                continue
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid  # reaped by someone else meanwhile
            if done:
                reaped += 1
                self.first_seen.pop(pid, None)
        self.first_seen = {pid: t for pid, t in self.first_seen.items() if pid in zombies}
        self.reaped += reaped
        return reaped

    async def run(self, interval: float = 1.0) -> None:
        import asyncio

        while True:
            await asyncio.sleep(interval)
            try:
                self.sweep()
            except Exception as exc:  # noqa: BLE001 - reaping must not take the sandbox down
                print(f"sandbox: reaping orphans failed: {exc!r}", file=sys.stderr, flush=True)


def descendants(roots: list[int]) -> list[int]:
    """Every descendant of ``roots`` (host pids), parents before children."""
    out: list[int] = []
    todo = list(roots)
    seen = set(todo)
    while todo:
        pid = todo.pop()
        for child in children(pid):
            if child not in seen:
                seen.add(child)
                out.append(child)
                todo.append(child)
    return out


def kill_tree(roots: list[int]) -> int:
    """SIGKILL ``roots`` and every descendant found; returns how many were signalled. A killed
    process cannot fork any more; children it made in between are re-parented to the caller
    (a subreaper) and caught by the next call."""
    victims = list(roots) + descendants(roots)
    # Whole process groups first: one call kills a fork bomb's generation. A sandbox leads a
    # session of its own, so a descendant's group holds descendants only (a process can only
    # join groups of its own session), never ours.
    groups = set()
    for pid in victims:
        try:
            groups.add(os.getpgid(pid))
        except (ProcessLookupError, PermissionError):
            pass
    groups.discard(os.getpgrp())
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return len(victims)


def kill_orphans(sandboxes: set[int]) -> int:
    """Kill what the zygote inherited from dead sandboxes: its children that are not live sandboxes."""
    orphans = [pid for pid in children("self") if pid not in sandboxes and _zombie_ns_pid(pid) is None]
    return kill_tree(orphans) if orphans else 0


def reap_all() -> list[tuple[int, int]]:
    """waitpid(-1, WNOHANG) until nothing is left to reap; (pid, status) of each."""
    out = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return out
        if pid == 0:
            return out
        out.append((pid, status))
