"""Scenarios of tests/sandbox/test_containment.py, each run in a fresh interpreter.

``python -m tests.sandbox.contained SCENARIO [root|user]`` plays a zygote: it
probes, forks sandboxes with ``myagent.sandbox.containment`` and prints one JSON
line of findings. ``user`` drops to nobody first (as the zygote does with
``--sandbox-user``). A fresh interpreter is single-threaded, as a zygote must be.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import signal
import subprocess
import sys
import time
from typing import Callable

from myagent.sandbox import containment, isolation

NOBODY = 65534
MAX_PROCS = 16


def _drop(mode: str) -> None:
    if mode == "user":
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def _probe() -> containment.Plan:
    """The zygote's plan; CONTAINED_SHARED_PROC=1 plays a host whose /proc cannot be mounted again
    (a container that masks parts of /proc): PID namespaces, the host's /proc."""
    plan = containment.probe()
    if os.environ.get("CONTAINED_SHARED_PROC") == "1":
        plan = dataclasses.replace(plan, private_proc=False, pid_max=False)
    return plan


def _sandbox(plan: containment.Plan, body: Callable[[containment.Landing], dict], pipe_w: int,
             max_procs: int = MAX_PROCS) -> int:
    """Fork a contained sandbox that runs ``body`` and writes its findings (JSON) to ``pipe_w``; it dies
    with us, as run_sandbox arranges."""
    zygote, zygote_fd = os.getpid(), os.pidfd_open(os.getpid())
    pid, landing = containment.fork_sandbox(plan, max_procs, lambda text: print(text, file=sys.stderr))
    if pid:
        os.close(zygote_fd)
        return pid
    try:
        if landing.mode == containment.PID_NAMESPACE:
            containment.die_with_zygote(zygote_fd)
        else:
            os.close(zygote_fd)
            isolation.die_with_parent(zygote)
        containment.confine(landing, max_procs)
        found = body(landing)
        os.write(pipe_w, (json.dumps(found) + "\n").encode())
    except BaseException as exc:  # noqa: BLE001 - report, never return into the caller's code
        os.write(pipe_w, (json.dumps({"error": repr(exc)}) + "\n").encode())
        os._exit(1)
    if found.get("linger"):
        time.sleep(found["linger"])
    os._exit(0)


def _read_line(fd: int, timeout: float = 10.0) -> dict:
    import select

    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n") and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data or b"{}")


def ns_members(pid: int) -> list[int]:
    """Host pids of every process in ``pid``'s PID namespace (empty if it shares ours)."""
    try:
        ns = os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return []
    if ns == os.readlink("/proc/self/ns/pid"):
        return []
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/ns/pid") == ns:
                    out.append(int(name))
            except OSError:
                pass
    return sorted(out)


def _spawn_escapers(children: int, daemons: int, seconds: float = 60) -> list[int]:
    """What a hostile tool does: setsid() children and double-forked daemons. Returns our children."""
    pids = []
    for _ in range(children):
        pid = os.fork()
        if pid == 0:
            os.setsid()
            time.sleep(seconds)
            os._exit(0)
        pids.append(pid)
    for _ in range(daemons):
        pid = os.fork()
        if pid == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(seconds)
                os._exit(0)
            os._exit(0)
        os.waitpid(pid, 0)
    return pids


# Scenarios ---------------------------------------------------------------------------------
def identity(mode: str) -> dict:
    """Who the sandbox is, what it sees, what it may do."""
    _drop(mode)
    plan = _probe()
    r, w = os.pipe()

    def body(landing: containment.Landing) -> dict:
        with open("/proc/self/status") as f:
            cap_eff = next(line.split()[1] for line in f if line.startswith("CapEff:"))
        return {"pid": os.getpid(), "ppid": os.getppid(), "host_pid": landing.host_pid, "uid": os.getuid(),
                "proc": sorted(int(n) for n in os.listdir("/proc") if n.isdigit()), "cap_eff": cap_eff,
                "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0]}

    pid = _sandbox(plan, body, w)
    found = _read_line(r)
    os.waitpid(pid, 0)
    return {"mode": plan.mode, "user_namespace": plan.user_namespace, "private_proc": plan.private_proc,
            "forked_pid": pid, "our_proc_intact": os.readlink("/proc/self") == str(os.getpid()), **found}


def kill_takes_all(mode: str) -> dict:
    """A sandbox's setsid children and double-forked daemons die when it is SIGKILLed (alone).
    Prints the sandbox's pid and waits for a line on stdin (the test lists the namespace: a zygote
    running as nobody may not read a sandbox's namespace), then kills it."""
    _drop(mode)
    plan = _probe()
    r, w = os.pipe()
    pid = _sandbox(plan, lambda landing: {"children": len(_spawn_escapers(10, 3)), "linger": 60}, w,
                   max_procs=64)
    found = _read_line(r)
    print(json.dumps({**found, "sandbox": pid}), flush=True)
    sys.stdin.readline()
    os.kill(pid, signal.SIGKILL)  # the sandbox only, not its group: the escapers left it anyway
    os.waitpid(pid, 0)
    return {"reaped": pid}


def nproc(mode: str) -> dict:
    """RLIMIT_NPROC of one sandbox's user namespace caps it, not its sibling (same uid)."""
    _drop(mode)
    plan = _probe()
    r, w = os.pipe()

    def bomb(landing: containment.Landing) -> dict:
        forked = 0
        try:
            while forked < 200:
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                forked += 1
        except OSError as exc:
            return {"forked": forked, "error": exc.errno}
        return {"forked": forked, "error": None}

    def modest(landing: containment.Landing) -> dict:
        return {"forked": len(_spawn_escapers(5, 0, 5))}

    a = _sandbox(plan, lambda landing: {**bomb(landing), "linger": 30}, w)
    first = _read_line(r)  # A sits at its cap (its children live on)
    b = _sandbox(plan, modest, w)
    second = _read_line(r)
    for pid in (a, b):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return {"a": first, "b": second}


def sigterm(mode: str) -> dict:
    """SIGTERM from outside ends PID 1 (which has no default action for it)."""
    _drop(mode)
    plan = _probe()
    r, w = os.pipe()
    pid = _sandbox(plan, lambda landing: {"linger": 30}, w)
    _read_line(r)
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    return {"code": os.waitstatus_to_exitcode(status), "seconds": time.monotonic() - started}


def signals(mode: str) -> dict:
    """Sandbox A tries kill(-1), kill(getppid()), kill(B) and kill(zygote) with SIGKILL."""
    _drop(mode)
    plan = _probe()
    r, w = os.pipe()
    b = _sandbox(plan, lambda landing: {"linger": 30}, w)
    _read_line(r)
    zygote = os.getpid()

    def attack(landing: containment.Landing) -> dict:
        out = {}
        for name, target in (("other_sandbox", b), ("zygote", zygote), ("parent", os.getppid()), ("everyone", -1)):
            if target == 0:
                out[name] = "getppid() is 0"
                continue
            try:
                os.kill(target, signal.SIGKILL)
                out[name] = "sent"
            except OSError as exc:
                out[name] = type(exc).__name__
        return out

    a = _sandbox(plan, attack, w)
    found = _read_line(r)
    os.waitpid(a, 0)
    alive = os.waitpid(b, os.WNOHANG) == (0, 0)
    os.kill(b, signal.SIGKILL)
    os.waitpid(b, 0)
    return {**found, "other_sandbox_alive": alive}


def zygote_dies(mode: str) -> dict:
    """Print the sandbox's pid, then wait to be SIGKILLed by the test."""
    _drop(mode)
    plan = _probe()
    r, w = os.pipe()
    pid = _sandbox(plan, lambda landing: {"children": len(_spawn_escapers(10, 3)), "linger": 60}, w,
                   max_procs=64)
    found = _read_line(r)
    print(json.dumps({**found, "sandbox": pid}), flush=True)
    time.sleep(60)
    return {}


def reaper(mode: str) -> dict:
    """PID 1 reaps an orphan that exited, after the grace; a child its code waits for is its own."""
    _drop(mode)
    plan = _probe()
    r, w = os.pipe()

    def body(landing: containment.Landing) -> dict:
        reaper = containment.OrphanReaper(main_thread_only=True, grace=0.3)
        middle = os.fork()
        if middle == 0:
            if os.fork() == 0:
                time.sleep(0.1)  # outlive the middle process, then exit: a zombie of PID 1
                os._exit(0)
            os._exit(0)
        os.waitpid(middle, 0)
        own = subprocess.Popen(["/bin/sh", "-c", "exit 3"])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not reaper.reaped:
            reaper.sweep()
            if own.returncode is None:
                own.poll()  # its code asks at once: the reaper's grace leaves it alone
            time.sleep(0.05)
        zombies = [pid for pid in containment.children("self", True) if containment._zombie_ns_pid(pid)]
        return {"reaped": reaper.reaped, "own_code": own.returncode, "zombies_left": zombies}

    pid = _sandbox(plan, body, w)
    found = _read_line(r)
    os.waitpid(pid, 0)
    return found


def subreaper(mode: str) -> dict:
    """Fallback: the sandbox keeps its orphans; when it dies the zygote kills what it inherits."""
    _drop(mode)
    isolation.become_subreaper()
    plan = containment.probe(containment.SUBREAPER)
    r, w = os.pipe()

    def body(landing: containment.Landing) -> dict:
        _spawn_escapers(3, 2)
        time.sleep(0.2)
        kids = containment.children("self")
        return {"children_after_double_fork": len(kids), "linger": 60}

    pid = _sandbox(plan, body, w, max_procs=64)
    found = _read_line(r)
    tree = [pid] + containment.descendants([pid])
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    time.sleep(0.1)  # let the kernel re-parent the orphans to us
    inherited = [p for p in containment.children("self") if containment._zombie_ns_pid(p) is None]
    killed = containment.kill_orphans(set())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and containment.children("self"):
        containment.reap_all()
        time.sleep(0.02)
    return {**found, "mode": plan.mode, "tree": tree, "inherited": len(inherited), "killed": killed,
            "left": containment.children("self")}


def clone_fails(mode: str) -> dict:
    """clone() refused for one sandbox (e.g. no user namespace left): forked plainly, with a warning."""
    _drop(mode)
    plan = _probe()
    warnings: list[str] = []

    def refuse(flags: int) -> int:
        raise containment.ContainmentError(28, "No space left on device")

    containment.clone = refuse
    r, w = os.pipe()
    pid, landing = containment.fork_sandbox(plan, MAX_PROCS, warnings.append)
    if pid == 0:
        containment.confine(landing, MAX_PROCS)
        os.write(w, json.dumps({"pid": os.getpid(), "mode": landing.mode}).encode() + b"\n")
        os._exit(0)
    found = _read_line(r)
    os.waitpid(pid, 0)
    return {**found, "forked": pid, "warnings": warnings}


SCENARIOS = {f.__name__: f for f in (identity, kill_takes_all, nproc, sigterm, signals, zygote_dies, reaper,
                                     subreaper, clone_fails)}

if __name__ == "__main__":
    print(json.dumps(SCENARIOS[sys.argv[1]](sys.argv[2] if len(sys.argv) > 2 else "root")), flush=True)
