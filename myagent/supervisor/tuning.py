"""Settings of the front process itself: garbage collector, dumpability, open-files limit."""

from __future__ import annotations

import logging

log = logging.getLogger("myagent.supervisor")


def tune_gc() -> None:
    """Start-up objects are permanent (gc.freeze) and young collections run every 50,000
    allocations instead of 700: at 1000 busy sessions the default thresholds cost ~20% of
    the front process's CPU (measured with scripts/bench/run.py). Memory is freed by
    reference counting either way; only reference cycles wait a little longer."""
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def not_dumpable() -> None:
    """PR_SET_DUMPABLE=0: /proc/<front pid>/environ, mem and ptrace become root-only."""
    from myagent.sandbox.isolation import PR_SET_DUMPABLE, _prctl

    if not _prctl(PR_SET_DUMPABLE, 0):
        log.warning("prctl(PR_SET_DUMPABLE) unavailable: same-user processes can read this process's environment")


def raise_open_files_limit(wanted_connections: int) -> None:
    """Lift the soft RLIMIT_NOFILE to the hard limit: every connection is a file descriptor."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft < wanted_connections + 256:
        log.warning("open-files limit %d is below --max-connections %d: raise it (ulimit -n)",
                    soft, wanted_connections)
