"""The zygote: loads the agent file once, then forks sandboxes on request.

Started by the front process as ``python -m myagent.sandbox.zygote``. A fork
costs milliseconds and shares the imported agent (and the openai SDK) copy-on-
write, where a fresh interpreter would pay the imports again. The zygote runs
no agent code after the import and never starts an event loop or a thread, so
forking it is safe. It reaps its children and reports their exit status.

Every sandbox is contained (``myagent.sandbox.containment``): cloned as PID 1
of namespaces of its own where the kernel allows it, otherwise forked as a
child subreaper whose leftovers this process kills when it dies.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import socket
import sys
import time

import orjson

from myagent.sandbox import containment, isolation
from myagent.wire import ops

log = logging.getLogger("myagent.sandbox.containment")
DEFAULT_MAX_PROCS = 64  # --sandbox-max-procs, when the front process does not pass it
SHUTDOWN_SWEEP = 2.0    # seconds the zygote spends killing sandbox trees on its way out


def _send(ctrl: socket.socket, obj: dict) -> None:
    try:
        ctrl.send(orjson.dumps(obj))
    except OSError:
        pass  # the front process is gone: the main loop notices and shuts down


def _setup_logging() -> None:
    """The zygote's own lines (containment) on stderr, in the front's text format. Only this
    logger: agent code's logging stays as it was."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _preload_runtime() -> None:
    import asyncio  # noqa: F401

    import uvloop  # noqa: F401

    import myagent.agents.agent  # noqa: F401
    import myagent.agents.llm  # noqa: F401
    import myagent.agents.llm.offline  # noqa: F401
    import myagent.agents.llm.openai_llm  # noqa: F401
    import myagent.agents.llm.scripted  # noqa: F401
    import myagent.agents.loader  # noqa: F401
    import myagent.sandbox.host  # noqa: F401


def _load(agent_file: str):
    from myagent.agents.exceptions import AgentLoadError
    from myagent.agents.loader import load_agent_file

    try:
        return load_agent_file(agent_file), None
    except AgentLoadError as exc:
        return None, str(exc)
    except BaseException as exc:  # SystemExit and friends from module-level code
        return None, f"{agent_file}: {type(exc).__name__}: {exc}"


def run_sandbox(sock_fd: int, factory, config: dict, zygote_pid: int, landing: containment.Landing,
                zygote_pidfd: int) -> None:
    """Child side of a fork: become a sandbox and never return to the zygote loop."""
    code = ops.EXIT_OK
    try:
        os.setsid()  # own process group: the front kills the whole tree at once
        if landing.mode == containment.PID_NAMESPACE:
            containment.die_with_zygote(zygote_pidfd)
        else:
            if zygote_pidfd >= 0:
                os.close(zygote_pidfd)
            isolation.die_with_parent(zygote_pid)
        isolation.reset_signals()
        if config.get("workdir_root"):
            isolation.enter_workdir(config["workdir_root"], config.get("user", ""), landing.host_pid)
        isolation.apply_rlimits(config.get("max_memory", 0), config.get("max_files", 0),
                                config.get("max_file_size", 0))
        isolation.drop_privileges(config.get("user", ""))
        containment.confine(landing, config.get("max_procs", DEFAULT_MAX_PROCS))
        isolation.no_new_privs()
        import asyncio

        import uvloop

        main = _serve(sock_fd, factory, config)
        code = uvloop.run(main) if hasattr(uvloop, "run") else asyncio.run(main)
    except BaseException as exc:  # noqa: BLE001 - a sandbox must exit, never fall back into the zygote
        print(f"sandbox {landing.host_pid} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = ops.EXIT_PIPE_ERROR
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


async def _serve(sock_fd: int, factory, config: dict) -> int:
    """Host sessions; meanwhile reap the orphans this sandbox inherits (as PID 1 or subreaper)."""
    import asyncio

    from myagent.sandbox.host import serve

    reaper = asyncio.get_running_loop().create_task(containment.OrphanReaper(main_thread_only=True).run())
    try:
        return await serve(sock_fd, factory, config)
    finally:
        reaper.cancel()


def _reap(ctrl: socket.socket, sandboxes: set[int]) -> None:
    """Reap exited children; report the sandboxes among them (the rest are swept orphans)."""
    for pid, status in containment.reap_all():
        if pid not in sandboxes:
            continue
        sandboxes.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        _send(ctrl, {"op": ops.EXITED, "pid": pid, "code": code if code >= 0 else None,
                     "signal": -code if code < 0 else None})


def _choose_containment(ctrl: socket.socket) -> containment.Plan | None:
    """Probe the kernel once; say what is in force. None (and a load error sent) if the operator
    required namespaces that are not available."""
    required = os.environ.get(containment.ENV, "auto").strip().lower() == containment.PID_NAMESPACE
    try:
        plan = containment.probe()
    except ValueError as exc:
        _send(ctrl, {"op": ops.LOAD_ERROR, "reason": str(exc)})
        return None
    if not plan.children_file:
        log.warning("/proc/PID/task/TID/children is missing (CONFIG_PROC_CHILDREN): orphans are not reaped "
                    "before their sandbox ends, and the zygote cannot sweep what a dead sandbox left")
    if plan.mode == containment.PID_NAMESPACE:
        log.info("sandbox containment: %s", plan.describe())
        return plan
    if required:
        _send(ctrl, {"op": ops.LOAD_ERROR, "reason": f"{containment.ENV}={containment.PID_NAMESPACE}, but "
                                                      f"PID namespaces are not available: {plan.reason}"})
        return None
    log.warning("sandbox containment: %s. Processes a tool starts are still counted and killed with "
                "their sandbox, but a tool can signal other processes of its uid (the zygote, other "
                "sandboxes) and a SIGKILL of the zygote can leave them behind; see docs/security.md",
                plan.describe())
    return plan


def _shutdown(fallback: set[int]) -> int:
    """Kill what a namespace would have taken with it: the trees of sandboxes that have none."""
    if not fallback:
        return ops.EXIT_OK  # namespaced sandboxes die by their parent-death signal, with everything in them
    deadline = time.monotonic() + SHUTDOWN_SWEEP
    containment.kill_tree(sorted(fallback))
    while time.monotonic() < deadline:
        containment.reap_all()
        if not containment.kill_orphans(set()):
            break
        time.sleep(0.01)
    return ops.EXIT_OK


def _own_pidfd() -> int:
    try:
        return os.pidfd_open(os.getpid())
    except (AttributeError, OSError):
        return -1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="myagent.sandbox.zygote")
    parser.add_argument("--ctrl-fd", type=int, required=True)
    parser.add_argument("--agent-file", required=True)
    parser.add_argument("--config", required=True, help="JSON config handed to every sandbox")
    args = parser.parse_args(argv)

    front_pid = int(os.environ.get("MYAGENT_WS_FRONT_PID", os.getppid()))
    isolation.die_with_parent(front_pid)
    isolation.become_subreaper()  # _reap() below then also reaps the orphans of dead sandboxes
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _setup_logging()
    ctrl = socket.socket(fileno=args.ctrl_fd)
    config = orjson.loads(args.config)
    if config.get("user"):
        # --sandbox-user: our own runtime is imported while still root (the interpreter's files
        # may not be readable by that user), then root is dropped before any agent code runs.
        _preload_runtime()
        isolation.drop_privileges(config["user"])
    plan = _choose_containment(ctrl)
    if plan is None:
        return ops.EXIT_LOAD_ERROR
    max_procs = config.get("max_procs", DEFAULT_MAX_PROCS)

    factory, error = _load(args.agent_file)
    if error is not None:
        _send(ctrl, {"op": ops.LOAD_ERROR, "reason": error})
        return ops.EXIT_LOAD_ERROR
    # Import what every sandbox needs before forking, so children share it.
    import uvloop  # noqa: F401

    import myagent.sandbox.host  # noqa: F401
    from myagent import otel
    from myagent.agents.llm import describe_llm_choice

    otel.preload()  # the OpenTelemetry SDK when traces are exported; each sandbox starts its own exporter

    # The LLM is described here, in the sandboxes' own environment: the front never imports the runtime.
    # The declared names too: the front checks it read them all from the file (the values are
    # already in our environment, put there by the front from that read).
    _send(ctrl, {"op": ops.LOADED, "agent": factory.describe(), "llm": describe_llm_choice(), "pid": os.getpid(),
                 "env": list(factory.env)})
    # What is loaded now is shared with every sandbox: keep the collector off it (no
    # copy-on-write of its pages by GC bookkeeping, nothing to traverse).
    import gc

    gc.freeze()

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select via the wakeup fd
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGUSR2, lambda *_: None)
    if plan.mode == containment.SUBREAPER:
        # Without namespaces, sandbox trees die only if we kill them: learn of the front's death
        # by a signal we can catch (SIGKILL would leave them behind), then sweep and exit.
        containment.prctl(containment.PR_SET_PDEATHSIG, signal.SIGUSR2)
    zygote_pid = os.getpid()
    zygote_pidfd = _own_pidfd()
    sandboxes: set[int] = set()
    fallback: set[int] = set()  # sandboxes without a PID namespace (the plan, or clone failed)

    while True:
        readable, _, _ = select.select([ctrl, wake_r], [], [], 1.0)
        if wake_r in readable:
            os.read(wake_r, 512)
        _reap(ctrl, sandboxes)
        fallback &= sandboxes
        containment.kill_orphans(sandboxes)  # leftovers of dead sandboxes (none with namespaces)
        if os.getppid() != front_pid:
            return _shutdown(fallback)  # only reached without namespaces: PDEATHSIG is SIGUSR2 then
        if ctrl not in readable:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(ctrl, 65536, 1)
        except ConnectionResetError:
            data, fds = b"", []
        if not data:
            return _shutdown(fallback)  # front process gone: namespaced sandboxes die by their death signal
        request = orjson.loads(data)
        if request.get("op") == ops.STOP:
            return _shutdown(fallback)
        if request.get("op") != ops.FORK or not fds:
            for fd in fds:
                os.close(fd)
            continue
        pid, landing = containment.fork_sandbox(plan, max_procs, log.warning)
        if pid == 0:
            ctrl.close()
            os.close(wake_r)
            os.close(wake_w)
            run_sandbox(fds[0], factory, {**config, **request.get("config", {})}, zygote_pid, landing,
                        zygote_pidfd)
        os.close(fds[0])
        sandboxes.add(pid)
        if landing.mode != containment.PID_NAMESPACE:
            fallback.add(pid)
        _send(ctrl, {"op": ops.FORKED, "req": request.get("req"), "pid": pid})


if __name__ == "__main__":
    sys.exit(main())
