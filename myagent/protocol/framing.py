"""Pipe frame codec (supervisor <-> sandbox): bytes in, objects out, no I/O.

Wire format of one frame::

    +------------------------+---------------------------+
    | length: uint32, big-   | body: ``length`` bytes    |
    | endian (body only)     |                           |
    +------------------------+---------------------------+

The codec only cuts the stream into bodies; what a body means (a JSON
control op, or an event whose JSON payload the front relays without
re-encoding it) is the wire's business (:mod:`myagent.wire.ops`).
:func:`encode_frame` frames a JSON document, :func:`frame` raw bytes.

Limits are enforced before anything is buffered: :class:`FrameDecoder`
rejects a frame from its 4-byte header alone when the announced length is
over ``max_size`` (:class:`FrameTooLarge`). A length error leaves the decoder
failed: the byte stream cannot be trusted any more, and every later
:meth:`FrameDecoder.feed` raises :class:`FrameError` again. The owner drops
the pipe (and its sandbox).
"""

from __future__ import annotations

from struct import Struct
from typing import Any

import orjson

from .exceptions import FrameError, FrameTooLarge

__all__ = ["DEFAULT_MAX_FRAME", "HEADER_SIZE", "encode_frame", "frame", "FrameDecoder"]

DEFAULT_MAX_FRAME = 16 * 1024 * 1024
HEADER_SIZE = 4
_MAX_LENGTH = 0xFFFF_FFFF  # what a uint32 header can express
_HEADER = Struct(">I")
_COMPACT_AT = 64 * 1024  # compact the buffer once this many consumed bytes sit in front


def _check_max_size(max_size: int) -> None:
    if not 0 < max_size <= _MAX_LENGTH:
        raise ValueError(f"max_size must be in 1..{_MAX_LENGTH}, got {max_size}")


def encode_frame(obj: Any, *, max_size: int = DEFAULT_MAX_FRAME) -> bytes:
    """Encode ``obj`` as one frame (header + orjson body).

    Raises :class:`FrameTooLarge` if the body is over ``max_size`` bytes and
    :class:`FrameError` if orjson cannot encode ``obj``.
    """
    try:
        body = orjson.dumps(obj)
    except orjson.JSONEncodeError as exc:
        raise FrameError(f"cannot encode pipe frame: {str(exc)[:100]}") from exc
    return frame(body, max_size=max_size)


def frame(body: bytes, *, max_size: int = DEFAULT_MAX_FRAME) -> bytes:
    """Frame raw ``body`` bytes; :class:`FrameTooLarge` if they are over ``max_size``."""
    if len(body) > max_size:
        raise FrameTooLarge(f"pipe frame of {len(body)} bytes exceeds the maximum of {max_size} bytes")
    return _HEADER.pack(len(body)) + body


class FrameDecoder:
    """Incremental decoder: feed it chunks as they arrive, get whole frame bodies back.

    Accepts any chunking (one byte at a time, many frames per chunk). Buffers
    at most one incomplete frame, never more than ``max_size`` + 4 bytes.
    """

    __slots__ = ("max_size", "_buf", "_pos", "_need", "_failed")

    def __init__(self, max_size: int = DEFAULT_MAX_FRAME) -> None:
        _check_max_size(max_size)
        self.max_size = max_size
        self._buf = bytearray()
        self._pos = 0  # start of the unconsumed bytes in _buf
        self._need: int | None = None  # body length once its header is read
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet decoded (an incomplete frame)."""
        return len(self._buf) - self._pos + (HEADER_SIZE if self._need is not None else 0)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the body of every frame it completes, in order."""
        if self._failed:
            raise FrameError("pipe stream is corrupt: an earlier frame failed to decode")
        buf = self._buf
        buf += data
        end = len(buf)
        pos = self._pos
        need = self._need
        out = []
        try:
            while True:
                if need is None:
                    if end - pos < HEADER_SIZE:
                        break
                    (need,) = _HEADER.unpack_from(buf, pos)
                    if need > self.max_size:
                        raise FrameTooLarge(
                            f"pipe frame announces {need} bytes, over the maximum of {self.max_size} bytes"
                        )
                    pos += HEADER_SIZE
                if end - pos < need:
                    break
                out.append(bytes(buf[pos : pos + need]))
                pos += need
                need = None
        except FrameError:
            self._failed = True
            self._buf = bytearray()
            self._pos = 0
            self._need = None
            raise
        # Compact: free everything when all is consumed (the common case), and
        # shift a large consumed prefix out otherwise; never re-slice per frame.
        if pos == end:
            buf.clear()
            pos = 0
        elif pos >= _COMPACT_AT:
            del buf[:pos]
            pos = 0
        self._pos = pos
        self._need = need
        return out
