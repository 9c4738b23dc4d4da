"""The SQLite writer process: applies the front process's write batches to the database.

    python -I sqlite_writer.py --fd N --path sessions.db --events-limit 1000 --history-limit 2000

Started by :class:`~myagent.supervisor.store.sqlite.SQLiteStore` with one end of a
socketpair (``--fd``), in an isolated interpreter (stdlib only, no site packages, a
scrubbed environment). Why a process: SQLite costs 6-25 µs of CPU per row written
(B-tree inserts, WAL, checkpoints), more than the front spends on the event itself; in a
writer thread that CPU was the front process's and doubled its cost per event.

Loop: gather batches for ``COMMIT_INTERVAL`` after the previous commit (at once for a batch
marked urgent), apply them in one transaction (executemany per table; a trim, delete or
clear first writes what came before it), answer with the last batch number committed.

Lifetime: it holds an exclusive lock on ``PATH.lock`` (so a server restarted after a kill -9
waits until the old writer has committed everything it was handed, and two servers never
share the file), ignores SIGINT and SIGTERM, and exits when the front's end of the socket
is closed, after committing every batch it received: a front process killed with -9 loses
only what it had not handed over yet.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import importlib.util
import os
import select
import signal
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any



def _sibling(name: str) -> Any:
    """A module of this directory, loaded by path: the isolated interpreter has no package."""
    spec = importlib.util.spec_from_file_location(f"_myagent_{name}", Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wire: Any = _sibling("sqlite_wire")
rows: Any = _sibling("sqlite_rows")

MAX_TXN_BYTES = 8 * 1024 * 1024  # bytes of batches applied in one transaction at most
RECV_BYTES = 1024 * 1024
LOCK_WAIT = 10.0  # seconds to wait for the previous writer of this file to finish
SQLITE_BUSY_TIMEOUT = 10.0
COMMIT_INTERVAL = 0.05  # seconds between two commits at least, unless a batch is urgent


def _background_priority() -> None:
    # The writer batches; turns do not wait for it. SCHED_BATCH: its wake-ups (every commit)
    # do not preempt the front or a sandbox mid-turn, yet it keeps its normal share of CPU
    # (nice 10 made it fall 10 000 writes behind at 800 turns/s on 2 cores).
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        pass


def _not_dumpable() -> None:
    # As the front process: same-user processes (agent code) must not read this memory.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        pass


def _lock(path: str, wait: float) -> int:
    """Take the writer lock of ``path``, waiting up to ``wait`` seconds; raise TimeoutError."""
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise TimeoutError(f"another myagent-ws server is writing {path}") from None
            time.sleep(0.02)


def open_db(path: str) -> sqlite3.Connection:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT)
    os.chmod(path, 0o600)  # conversations: owner only (SQLite gives -wal/-shm the same mode)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(rows.SCHEMA)
    rows.migrate(conn)
    return conn


def _send(sock: socket.socket, data: bytes) -> bool:
    """Answer the front; False once it is gone (the writer still commits what it has)."""
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def _take(sock: socket.socket, buf: bytearray) -> bool:
    """Block for data, then take what else is already there; False at end of stream.

    A front that dies with our acknowledgements unread makes the kernel report ECONNRESET
    once its last bytes are read: that is an end of stream like any other, and what was
    read before it is applied."""
    try:
        chunk = sock.recv(RECV_BYTES)
        if not chunk:
            return False
        buf += chunk
        sock.setblocking(False)
        try:
            while len(buf) < MAX_TXN_BYTES:
                chunk = sock.recv(RECV_BYTES)
                if not chunk:
                    return False
                buf += chunk
        except BlockingIOError:
            pass
        finally:
            sock.setblocking(True)
    except ConnectionResetError:
        return False
    return True


def serve(sock: socket.socket, applier: Any) -> None:
    """Apply batches until end of stream, one transaction per ``COMMIT_INTERVAL`` at most:
    SQLite's cost is per row *and* per commit (WAL pages written again for every commit that
    touches them), and this process shares the machine with the front and the sandboxes.
    A batch marked urgent (a flush() waits for it) is committed and acknowledged at once."""
    buf = bytearray()
    front = True
    waiting: list[tuple[int, bytes]] = []  # complete frames not committed yet
    last_commit = 0.0
    more = True
    while True:
        if more:
            wait = None if not waiting else last_commit + COMMIT_INTERVAL - time.monotonic()
            if wait is None or (wait > 0 and select.select([sock], [], [], wait)[0]):
                more = _take(sock, buf)
                frames, used = wire.split_frames(buf)
                del buf[:used]
                waiting += frames
        if not waiting:
            if not more:
                return
            continue
        urgent = any(batch & wire.URGENT for batch, _ in waiting)
        if more and not urgent and time.monotonic() < last_commit + COMMIT_INTERVAL \
                and sum(len(p) for _, p in waiting) < MAX_TXN_BYTES:
            continue
        try:
            applier.apply(wire.operations(payload) for _, payload in waiting)
            answer = wire.OK
        except (sqlite3.Error, ValueError) as exc:
            # Given up, not retried: a broken file or schema does not heal by itself. The
            # front shows the failure on /ready and /status until a later batch succeeds.
            text = f"sqlite write failed: {exc} ({len(waiting)} batches lost)"
            print(f"myagent-ws sqlite writer: {text}", file=sys.stderr, flush=True)
            data = text.encode()[:4000]
            answer = wire.FAILURE.pack(b"F", len(data)) + data
        front = front and _send(sock, answer + wire.ACK.pack(b"A", waiting[-1][0] & wire.BATCH_MASK))
        waiting = []
        last_commit = time.monotonic()
        if not more:
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--events-limit", type=int, default=1000)
    parser.add_argument("--history-limit", type=int, default=2000)
    parser.add_argument("--lock-wait", type=float, default=LOCK_WAIT)
    args = parser.parse_args(argv)
    # The front decides when to stop (it closes the socket); a signal to the whole process
    # group (Ctrl-C, a service manager) must not cut the last batches short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _not_dumpable()
    _background_priority()
    sock = socket.socket(fileno=args.fd)
    try:
        os.makedirs(os.path.dirname(args.path), mode=0o700, exist_ok=True)
        lock = _lock(args.path, args.lock_wait)
        conn = open_db(args.path)
    except (OSError, sqlite3.Error, TimeoutError) as exc:
        data = f"cannot open {args.path}: {exc}".encode()[:4000]
        _send(sock, wire.FAILURE.pack(b"F", len(data)) + data)
        return 2
    _send(sock, wire.OK)
    try:
        serve(sock, rows.Applier(conn, args.events_limit, args.history_limit))
    finally:
        conn.close()
        os.close(lock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
