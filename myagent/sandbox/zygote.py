"""The zygote: loads the agent file once, then forks sandboxes on request.

Started by the front process as ``python -m myagent.sandbox.zygote``. A fork
costs milliseconds and shares the imported agent (and the openai SDK) copy-on-
write, where a fresh interpreter would pay the imports again. The zygote runs
no agent code after the import and never starts an event loop or a thread, so
forking it is safe. It reaps its children and reports their exit status.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import sys

import orjson

from myagent.sandbox import isolation
from myagent.wire import ops


def _send(ctrl: socket.socket, obj: dict) -> None:
    ctrl.send(orjson.dumps(obj))


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


def run_sandbox(sock_fd: int, factory, config: dict, zygote_pid: int) -> None:
    """Child side of a fork: become a sandbox and never return to the zygote loop."""
    code = ops.EXIT_OK
    try:
        os.setsid()  # own process group: the front kills the whole tree at once
        isolation.die_with_parent(zygote_pid)
        isolation.reset_signals()
        if config.get("workdir_root"):
            isolation.enter_workdir(config["workdir_root"], config.get("user", ""))
        isolation.apply_rlimits(config.get("max_memory", 0), config.get("max_files", 0),
                                config.get("max_file_size", 0))
        isolation.drop_privileges(config.get("user", ""))
        isolation.no_new_privs()
        import asyncio

        import uvloop

        from myagent.sandbox.host import serve

        code = uvloop.run(serve(sock_fd, factory, config)) if hasattr(uvloop, "run") else asyncio.run(
            serve(sock_fd, factory, config))
    except BaseException as exc:  # noqa: BLE001 - a sandbox must exit, never fall back into the zygote
        print(f"sandbox {os.getpid()} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = ops.EXIT_PIPE_ERROR
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap(ctrl: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        _send(ctrl, {"op": ops.EXITED, "pid": pid, "code": code if code >= 0 else None,
                     "signal": -code if code < 0 else None})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="myagent.sandbox.zygote")
    parser.add_argument("--ctrl-fd", type=int, required=True)
    parser.add_argument("--agent-file", required=True)
    parser.add_argument("--config", required=True, help="JSON config handed to every sandbox")
    args = parser.parse_args(argv)

    isolation.die_with_parent(int(os.environ.get("MYAGENT_WS_FRONT_PID", os.getppid())))
    isolation.become_subreaper()  # _reap() below then also reaps the orphans of dead sandboxes
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctrl = socket.socket(fileno=args.ctrl_fd)
    config = orjson.loads(args.config)
    if config.get("user"):
        # --sandbox-user: our own runtime is imported while still root (the interpreter's files
        # may not be readable by that user), then root is dropped before any agent code runs.
        _preload_runtime()
        isolation.drop_privileges(config["user"])

    factory, error = _load(args.agent_file)
    if error is not None:
        _send(ctrl, {"op": ops.LOAD_ERROR, "reason": error})
        return ops.EXIT_LOAD_ERROR
    # Import what every sandbox needs before forking, so children share it.
    import uvloop  # noqa: F401

    import myagent.sandbox.host  # noqa: F401
    from myagent.agents.llm import describe_llm_choice

    # The LLM is described here, in the sandboxes' own environment: the front never imports the runtime.
    _send(ctrl, {"op": ops.LOADED, "agent": factory.describe(), "llm": describe_llm_choice(), "pid": os.getpid()})
    # What is loaded now is shared with every sandbox: keep the collector off it (no
    # copy-on-write of its pages by GC bookkeeping, nothing to traverse).
    import gc

    gc.freeze()

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select via the wakeup fd
    signal.signal(signal.SIGTERM, lambda *_: None)
    zygote_pid = os.getpid()

    while True:
        readable, _, _ = select.select([ctrl, wake_r], [], [], 1.0)
        if wake_r in readable:
            os.read(wake_r, 512)
        _reap(ctrl)
        if ctrl not in readable:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(ctrl, 65536, 1)
        except ConnectionResetError:
            data, fds = b"", []
        if not data:
            return ops.EXIT_OK  # front process gone: our children die by their death signal
        request = orjson.loads(data)
        if request.get("op") == ops.STOP:
            return ops.EXIT_OK
        if request.get("op") != ops.FORK or not fds:
            for fd in fds:
                os.close(fd)
            continue
        pid = os.fork()
        if pid == 0:
            ctrl.close()
            os.close(wake_r)
            os.close(wake_w)
            run_sandbox(fds[0], factory, {**config, **request.get("config", {})}, zygote_pid)
        os.close(fds[0])
        _send(ctrl, {"op": ops.FORKED, "req": request.get("req"), "pid": pid})


if __name__ == "__main__":
    sys.exit(main())
