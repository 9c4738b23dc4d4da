"""myagent/client/prompt.py: lines from a pipe (polled) and from a regular file (read directly)."""

from __future__ import annotations

import asyncio
import os

from myagent.client.prompt import LineReader


async def test_lines_from_a_pipe_arrive_whole_and_end_with_none():
    r, w = os.pipe()
    reader = LineReader(r)
    try:
        os.write(w, "héllo\r\nwor".encode())
        assert await reader.readline() == "héllo"
        waiting = asyncio.ensure_future(reader.readline())
        await asyncio.sleep(0)
        assert not waiting.done()  # "wor" is not a line yet
        os.write(w, b"ld\n")
        assert await asyncio.wait_for(waiting, 5) == "world"
        os.write(w, b"last")
        os.close(w)
        w = -1
        assert await reader.readline() == "last"
        assert await reader.readline() is None
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


async def test_a_wait_can_be_cancelled_at_once():
    r, w = os.pipe()
    try:
        waiting = asyncio.ensure_future(LineReader(r).readline())
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert waiting.cancelled()
    finally:
        os.close(r)
        os.close(w)


async def test_a_regular_file_is_read_without_polling(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("one\ntwo\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = LineReader(fd)
        assert [await reader.readline() for _ in range(3)] == ["one", "two", None]
    finally:
        os.close(fd)


async def test_an_endless_line_is_cut_at_the_bound():
    r, w = os.pipe()
    try:
        os.write(w, b"x" * 100)
        assert await LineReader(r, max_line=10).readline() == "x" * 10
    finally:
        os.close(r)
        os.close(w)
