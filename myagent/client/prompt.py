"""Lines typed by the user, read on the event loop.

``input()`` in a thread cannot be interrupted: Ctrl-C at the prompt did
nothing until Enter, because the loop's shutdown waited for the thread. This
reader waits for the file descriptor to be readable (a terminal in canonical
mode is readable once a line is complete), so a Ctrl-C handler can cancel the
wait at once. A regular file (``chat < file``) is never "not ready": it is
read directly.
"""

from __future__ import annotations

import asyncio
import os

MAX_LINE_BYTES = 1024 * 1024  # a longer line is handed over as is (the server refuses one too long)


class LineReader:
    def __init__(self, fd: int = 0, max_line: int = MAX_LINE_BYTES) -> None:
        self.fd = fd
        self.max_line = max_line
        self._buf = bytearray()
        self._eof = False

    async def _readable(self) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        try:
            loop.add_reader(self.fd, lambda: ready.done() or ready.set_result(None))
        except (OSError, ValueError):  # a regular file: epoll refuses it, and reads do not block
            return
        try:
            await ready
        finally:
            loop.remove_reader(self.fd)

    async def readline(self) -> str | None:
        """The next line without its end, or None at end of input (Ctrl-D)."""
        while b"\n" not in self._buf and not self._eof and len(self._buf) < self.max_line:
            await self._readable()
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                self._eof = True
            self._buf += chunk
        if not self._buf and self._eof:
            return None
        end = self._buf.find(b"\n")
        cut = end if end >= 0 else min(len(self._buf), self.max_line)
        line = bytes(self._buf[:cut])
        del self._buf[:cut + 1 if end >= 0 else cut]
        return line.decode("utf-8", "replace").rstrip("\r")
