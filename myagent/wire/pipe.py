"""Frame transport between the front process and a sandbox (both sides).

A socketpair carries length-prefixed frames (codec in
``myagent.protocol.framing``); the receiver gets each frame's body as bytes
and decides what it means (:mod:`myagent.wire.ops`). Writes made during one loop iteration are
coalesced into a single ``transport.write`` so a burst of token deltas costs
one syscall, not one per frame. Writing respects the transport's flow control:
producers ``await pipe.writable()`` and pause while the peer is not reading.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, Callable

from myagent.protocol.exceptions import FrameError
from myagent.protocol.framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame, frame

log = logging.getLogger("myagent.pipe")

# Flow control of the pipe: a writer pauses above HIGH and resumes below LOW.
PIPE_HIGH_WATER = 4 * 1024 * 1024
PIPE_LOW_WATER = 1024 * 1024


class FramePipe(asyncio.Protocol):
    """asyncio protocol that turns a stream socket into frames in, frames out."""

    def __init__(
        self,
        on_frame: Callable[[bytes], None],
        on_lost: Callable[[BaseException | None], None],
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._max_frame = max_frame
        self._decoder = FrameDecoder(max_frame)
        self._pending: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    # asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(PIPE_HIGH_WATER, PIPE_LOW_WATER)

    def data_received(self, data: bytes) -> None:
        try:
            bodies = self._decoder.feed(data)
        except FrameError as exc:
            log.error("pipe protocol error: %s", exc)
            self.abort()
            return
        on_frame = self._on_frame
        try:
            for body in bodies:
                on_frame(body)
        except Exception:  # a frame the receiver could not handle: the peer is broken or hostile
            log.exception("pipe: a frame could not be handled; closing the pipe")
            self.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self._writable.set()  # release waiting producers; their next send is a no-op
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._pending.clear()
        self._on_lost(exc)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # API ----------------------------------------------------------------
    def send(self, obj: Any) -> None:
        """Queue one control op (a JSON document); it is written at the end of this loop iteration."""
        if not self.closed:
            self._queue(encode_frame(obj, max_size=self._max_frame))

    def send_raw(self, body: bytes) -> None:
        """Queue one frame whose body is already encoded (see :mod:`myagent.wire.ops`)."""
        if not self.closed:
            self._queue(frame(body, max_size=self._max_frame))

    def _queue(self, data: bytes) -> None:
        self._pending.append(data)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def flush(self) -> None:
        """Write queued frames now (used right before a process exits)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush()

    def _flush(self) -> None:
        self._flush_handle = None
        if self.closed or not self._pending or self.transport is None:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self.transport.write(data)

    async def writable(self) -> None:
        """Wait while the peer is not keeping up (bounded pipe buffer)."""
        if not self._writable.is_set():
            await self._writable.wait()

    @property
    def paused(self) -> bool:
        return not self._writable.is_set()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()


async def open_pipe(
    sock: socket.socket,
    on_frame: Callable[[bytes], None],
    on_lost: Callable[[BaseException | None], None],
    max_frame: int = DEFAULT_MAX_FRAME,
) -> FramePipe:
    """Attach a FramePipe to an already connected stream socket."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    _, pipe = await loop.create_unix_connection(lambda: FramePipe(on_frame, on_lost, max_frame), sock=sock)
    return pipe
