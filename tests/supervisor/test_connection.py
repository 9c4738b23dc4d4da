"""Connection: the outbound queue, its byte bound and the frames its writer builds.

The websocket is fake but its protocol object is websockets' real
``Protocol`` in the OPEN state; the transport collects writes. What the writer
frames by hand must be byte for byte what ``Protocol.send_text`` produces.
"""

import pytest
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Opcode
from websockets.protocol import Protocol, Side, State

from myagent.supervisor.connection import WRITE_BATCH, Connection, text_frame_header

from .fakes import run_until, spin


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.fail = False

    def write(self, data: bytes) -> None:
        if self.fail:
            raise OSError("connection reset")
        self.writes.append(bytes(data))


class FakeWebSocket:
    def __init__(self, deflate: bool = False) -> None:
        self.protocol = Protocol(Side.SERVER, state=State.OPEN)
        if deflate:
            self.protocol.extensions = [deflate_extension()]
        self.transport = FakeTransport()
        self.drains = 0
        self.closes: list[tuple[int, str]] = []

    async def drain(self) -> None:
        self.drains += 1

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closes.append((code, reason))


def deflate_extension():
    return PerMessageDeflate(False, False, 15, 15)


def reference(payloads, deflate=False):
    """What websockets itself writes for these text messages."""
    protocol = Protocol(Side.SERVER, state=State.OPEN)
    if deflate:
        protocol.extensions = [deflate_extension()]
    for payload in payloads:
        protocol.send_text(payload)
    return b"".join(protocol.data_to_send())


def connection(max_outbound=1 << 20, deflate=False):
    ws = FakeWebSocket(deflate)
    return Connection(ws, "alice", max_outbound), ws


@pytest.fixture
async def conns():
    made = []
    yield made
    for conn in made:
        conn.stop_writer()
    await spin(2)


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 1000, 65535, 65536, 70000])
def test_hand_built_headers_match_websockets(length):
    payload = b"x" * length
    assert text_frame_header(length) + payload == reference([payload])


async def test_the_writer_writes_what_websockets_would_in_one_write_per_batch(conns):
    conn, ws = connection()
    conns.append(conn)
    payloads = [b'{"event":"a"}', "é".encode() * 100, b"y" * 70000]
    for payload in payloads:
        conn.enqueue(payload)
    assert conn.queued == 3 and conn.queued_bytes == sum(map(len, payloads))
    conn.start()
    await run_until(lambda: ws.transport.writes)
    assert ws.transport.writes == [reference(payloads)]
    assert conn.sent == 3 and conn.queued == 0 and conn.queued_bytes == 0 and ws.drains == 1


async def test_a_burst_is_written_in_batches_of_write_batch_frames(conns):
    conn, ws = connection()
    conns.append(conn)
    payloads = [b'{"n":%d}' % i for i in range(WRITE_BATCH + 44)]
    for payload in payloads:
        conn.enqueue(payload)
    conn.start()
    await run_until(lambda: conn.sent == len(payloads))
    assert len(ws.transport.writes) == 2
    assert ws.transport.writes[0] == reference(payloads[:WRITE_BATCH])
    assert b"".join(ws.transport.writes) == reference(payloads)


async def test_frames_queued_later_wake_the_writer(conns):
    conn, ws = connection()
    conns.append(conn)
    conn.start()
    await spin(3)
    assert ws.transport.writes == []
    conn.enqueue(b"late")
    await run_until(lambda: ws.transport.writes)
    assert ws.transport.writes == [reference([b"late"])]


async def test_with_permessage_deflate_frames_go_through_send_text(conns):
    conn, ws = connection(deflate=True)
    conns.append(conn)
    payloads = [b'{"event":"agent.partial_answer","content":"hello hello hello"}'] * 3
    for payload in payloads:
        conn.enqueue(payload)
    conn.start()
    await run_until(lambda: conn.sent == 3)
    written = b"".join(ws.transport.writes)
    assert written == reference(payloads, deflate=True)
    assert written[0] & 0x40  # RSV1: compressed, so not framed by hand
    client = Protocol(Side.CLIENT, state=State.OPEN)
    client.extensions = [deflate_extension()]
    client.receive_data(written)
    frames = client.events_received()
    assert [(f.opcode, f.data) for f in frames] == [(Opcode.TEXT, p) for p in payloads]


async def test_a_client_that_does_not_read_is_closed_with_1008_at_the_byte_bound():
    conn, ws = connection(max_outbound=100)
    conn.enqueue(b"x" * 60)
    conn.enqueue(b"y" * 40)  # exactly at the bound: still fine
    assert not conn.closed and conn.queued_bytes == 100
    conn.enqueue(b"z")
    assert conn.closed and conn.queued == 0 and conn.queued_bytes == 0
    await run_until(lambda: ws.closes)
    assert ws.closes == [(1008, "outbound backlog limit exceeded")]
    conn.enqueue(b"more")  # a closed connection queues nothing
    assert conn.queued == 0
    conn.close(1000)
    await spin(3)
    assert len(ws.closes) == 1


async def test_the_writer_stops_when_the_websocket_is_no_longer_open(conns):
    conn, ws = connection()
    conns.append(conn)
    conn.start()
    ws.protocol.state = State.CLOSING
    conn.enqueue(b"too late")
    await run_until(lambda: conn.closed)
    assert ws.transport.writes == [] and conn.queued == 0


async def test_a_failing_socket_ends_the_writer_and_empties_the_queue(conns):
    conn, ws = connection()
    conns.append(conn)
    ws.transport.fail = True
    conn.enqueue(b"a")
    conn.start()
    await run_until(lambda: conn.closed)
    assert conn.queued == 0 and conn.queued_bytes == 0 and conn.sent == 0


async def test_drain_returns_once_everything_was_written(conns):
    conn, ws = connection()
    conns.append(conn)
    conn.enqueue(b"a")
    conn.start()
    await conn.drain(5.0)
    assert conn.queued == 0 and ws.transport.writes


def test_connection_ids_are_unique_and_prefixed():
    ids = {Connection(FakeWebSocket(), "alice", 10).id for _ in range(100)}
    assert len(ids) == 100 and all(i.startswith("c_") for i in ids)
