"""A public endpoint under attack: auth, origins, floods, slow readers, TLS, raw frame abuse."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
import struct
import subprocess

import psutil
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from myagent.client import AgentClient
from myagent.supervisor.guard import needs_auth_warning
from tests.serverproc import AGENTS, SCRIPTS, ServerProcess

LLM = f"scripted:{SCRIPTS / 'test_script.json'}"
TOKEN = "tok-3f9a1c77d2"


@pytest.fixture
def start():
    servers: list[ServerProcess] = []

    def _start(*args: str, **kw) -> ServerProcess:
        server = ServerProcess(AGENTS / "test_agent.py", "--workers", "1", *args, llm=LLM, **kw).start()
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.stop()


async def settles(condition, timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes (sockets close asynchronously)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def status_code_of(url: str, **kw) -> int:
    try:
        async with connect(url, open_timeout=5, **kw):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def test_auth_refuses_before_anything_is_allocated(start):
    server = start("--auth-token", TOKEN, "--log-level", "debug")
    before = server.get(f"/status?token={TOKEN}")[1]
    pids = set(server.track_children())
    assert await status_code_of(server.url) == 401
    assert await status_code_of(server.url, additional_headers={"Authorization": "Bearer wrong"}) == 401
    assert await status_code_of(server.url + "/?token=wrong") == 401
    after = server.get(f"/status?token={TOKEN}")[1]
    assert after["connections"] == 0 and after["sessions"]["total"] == 0
    assert after["totals"]["connections_opened"] == before["totals"]["connections_opened"]
    assert set(server.track_children()) == pids, "nothing was spawned for a refused client"
    # The right token works, as a header or as a query parameter (browsers cannot set headers).
    async with await AgentClient.connect(server.url, token=TOKEN) as client:
        final, _ = await (await client.create_session()).ask("hello")
        assert final["event"] == "agent.final_answer"
    async with await AgentClient.connect(server.url + f"/?token={TOKEN}") as client:
        await client.create_session()
    await asyncio.sleep(0.2)
    assert TOKEN not in server.text, "a token reached the logs"


async def test_sessions_belong_to_the_principal(start, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# two tenants\nalice-token\nbob-token\n")
    server = start("--auth-tokens-file", str(tokens))
    async with await AgentClient.connect(server.url, token="alice-token") as alice:
        session = await alice.create_session()
        await session.ask("hello")
        async with await AgentClient.connect(server.url, token="bob-token") as bob:
            from myagent.client import ClientError

            with pytest.raises(ClientError) as err:
                await bob.reconnect(session.id, session.resume_token, 0, timeout=5)
            assert err.value.code == "SESSION_NOT_FOUND"  # even with the resume token
        async with await AgentClient.connect(server.url, token="alice-token") as alice2:
            _, replay = await alice2.reconnect(session.id, session.resume_token, 0)
            assert replay[-1]["event"] == "agent.session_resumed"


async def test_origin_check(start):
    server = start()
    assert await status_code_of(server.url, origin="http://evil.example") == 403
    assert await status_code_of(server.url, origin=f"http://127.0.0.1:{server.port}") == 101  # same origin
    assert await status_code_of(server.url) == 101  # no Origin: not a browser
    listed = start("--allow-origin", "https://app.example")
    assert await status_code_of(listed.url, origin="https://app.example") == 101
    assert await status_code_of(listed.url, origin="https://app.example.evil") == 403


def test_binding_beyond_loopback_without_auth_warns():
    assert needs_auth_warning("0.0.0.0", auth_enabled=False)
    assert needs_auth_warning("192.0.2.10", auth_enabled=False)
    assert not needs_auth_warning("0.0.0.0", auth_enabled=True)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert not needs_auth_warning(host, auth_enabled=False)


async def test_connection_flood_is_refused_cleanly(start):
    server = start("--max-connections", "40", "--max-connections-per-address", "1000")
    front = psutil.Process(server.proc.pid)
    fds_before = front.num_fds()
    held = []
    refused = 0

    async def attempt() -> None:
        nonlocal refused
        try:
            held.append(await connect(server.url, open_timeout=10, ping_interval=None))
        except InvalidStatus as exc:
            assert exc.response.status_code == 503
            refused += 1

    await asyncio.gather(*(attempt() for _ in range(200)))
    assert len(held) <= 40 + 5 and refused >= 150, (len(held), refused)
    # Refused sockets are closed right after their 503: only the held ones stay open.
    assert await settles(lambda: front.num_fds() < fds_before + 40 + 20), front.num_fds()
    for ws in held:
        await ws.close()
    await asyncio.sleep(0.5)
    assert server.get("/ready")[0] == 200
    async with await AgentClient.connect(server.url) as client:
        await (await client.create_session()).ask("still fine")
    assert await settles(lambda: front.num_fds() < fds_before + 20), front.num_fds()


async def test_per_address_cap(start):
    server = start("--max-connections-per-address", "3")
    held = [await connect(server.url) for _ in range(3)]
    assert await status_code_of(server.url) == 503
    await held[0].close()
    await asyncio.sleep(0.2)
    assert await status_code_of(server.url) == 101
    for ws in held[1:]:
        await ws.close()


async def test_idle_connection_is_closed(start):
    server = start("--idle-timeout", "1")
    async with connect(server.url) as ws:
        await ws.recv()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)  # heartbeats are off by default beyond 30 s
        assert ws.close_code == 1000


async def test_a_client_that_never_reads_is_cut_off_with_bounded_memory(tmp_path):
    script = tmp_path / "huge.json"
    script.write_text('{"chunk_size": 4, "default": [{"content": "' + "lorem ipsum " * 4000 + '"}]}')
    server = ServerProcess(AGENTS / "test_agent.py", "--workers", "1", "--max-outbound-buffer", "256KiB",
                           "--rate-limit", "0", llm=f"scripted:{script}").start()
    try:
        front = psutil.Process(server.proc.pid)
        rss_before = front.memory_info().rss
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        sock.connect(("127.0.0.1", server.port))
        sock.settimeout(5)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        sock.sendall(_masked_text(b'{"event":"user.create_session"}'))
        seen = b""
        while b"agent.session_created" not in seen:
            seen += sock.recv(65536)
        sid = re.search(rb'"session_id":"([^"]+)"', seen.split(b"agent.session_created", 1)[1]).group(1)
        # From here on the client never reads: each turn streams ~12,000 token events at it.
        message = _masked_text(b'{"event":"user.message","session_id":"' + sid + b'","content":"go"}')
        for _ in range(100):
            try:
                sock.sendall(message)
            except OSError:
                break
            await asyncio.sleep(0.1)
            if server.status()["connections"] == 0:
                break
        assert server.status()["connections"] == 0, "the non-reading client was not disconnected"
        assert "client is not reading" in server.text  # cut by the outbound backlog limit
        assert front.memory_info().rss - rss_before < 64 * 2**20
        assert server.status()["sessions"]["detached"] == 1  # the session lives on for a reconnect
        sock.close()
        assert server.get("/ready")[0] == 200
    finally:
        server.stop()


def _masked_text(payload: bytes, opcode: int = 0x1, mask: bool = True) -> bytes:
    head = bytes([0x80 | opcode])
    length = len(payload)
    bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([bit | length])
    elif length < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def test_unmasked_client_frame_closes_1002(start):
    server = start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    writer.write(_masked_text(b'{"event":"user.create_session"}', mask=False))
    data = await asyncio.wait_for(reader.read(4096), 5)
    # Skip system.connected, find the close frame (opcode 0x8) and its code.
    codes = []
    while data:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        offset = 2 + (2 if length == 126 else 8 if length == 127 else 0)
        if length >= 126:
            length = int.from_bytes(data[2:offset], "big")
        payload = data[offset:offset + length]
        if opcode == 0x8:
            codes.append(struct.unpack("!H", payload[:2])[0])
        data = data[offset + length:] or await asyncio.wait_for(reader.read(4096), 5)
        if codes:
            break
    writer.close()
    assert codes == [1002]
    assert server.get("/ready")[0] == 200


async def test_wss_with_a_self_signed_certificate(start, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    server = start("--tls-cert", str(cert), "--tls-key", str(key))
    assert server.url.startswith("wss://")
    context = ssl.create_default_context(cafile=str(cert))
    async with await AgentClient.connect(server.url, ssl=context) as client:
        final, _ = await (await client.create_session()).ask("over tls")
        assert final["event"] == "agent.final_answer"
    with pytest.raises(Exception):  # plain ws:// to a TLS port does not get in
        async with connect(f"ws://127.0.0.1:{server.port}", open_timeout=3):
            pass


def test_with_auth_the_ops_documents_need_a_token_but_probes_do_not(start):
    import urllib.request

    server = start("--auth-token", TOKEN)
    server.token = None  # ask as an anonymous client
    assert server.get("/health")[0] == 200 and server.get("/ready")[0] == 200
    assert server.get("/status")[0] == 401 and server.get("/metrics")[0] == 401
    assert server.get(f"/status?token={TOKEN}")[0] == 200
    request = urllib.request.Request(server.http + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200 and b"myagent" in resp.read()


async def test_rate_limited_requests_are_attributed(start):
    from myagent.client import ClientError

    server = start("--rate-limit", "0.5", "--rate-burst", "1")
    async with await AgentClient.connect(server.url) as client:
        session = await client.create_session()
        with pytest.raises(ClientError) as refused:  # at once, not after a timeout
            await client.create_session(timeout=3)
        assert refused.value.code == "RATE_LIMITED"
        with pytest.raises(ClientError) as refused:
            await session.ask("hello", timeout=3)
        assert refused.value.code == "RATE_LIMITED"
        assert refused.value.event["metadata"]["session_id"] == session.id


async def test_per_address_cap_behind_a_trusted_proxy(start):
    server = start("--max-connections-per-address", "2", "--trusted-proxy", "127.0.0.1")
    alice = [await connect(server.url, additional_headers={"X-Forwarded-For": "203.0.113.7"}) for _ in range(2)]
    assert await status_code_of(server.url, additional_headers={"X-Forwarded-For": "203.0.113.7"}) == 503
    bob = await connect(server.url, additional_headers={"X-Forwarded-For": "198.51.100.9"})  # another client
    for ws in [*alice, bob]:
        await ws.close()
