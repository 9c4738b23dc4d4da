"""A public endpoint under attack: auth, origins, DNS rebinding, secrets on the command line,
floods, slow readers, TLS, raw frame abuse."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from myagent.client import AgentClient
from myagent.supervisor.guard import needs_auth_warning
from tests.integration.test_state_export import export, restore
from tests.serverproc import AGENTS, ROOT, SCRIPTS, ServerProcess

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
    server = start("--log-level", "debug", env={"MYAGENT_WS_AUTH_TOKENS": TOKEN})
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
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
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

    server = start(env={"MYAGENT_WS_AUTH_TOKENS": TOKEN})
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


# DNS rebinding: a page whose name the attacker re-points at 127.0.0.1 ------------------------

EVIL = "rebind.evil.example"
PAGES = ("/", "/dashboard", "/static/console.js", "/health", "/ready", "/status", "/metrics")


async def rebound_status(port: int, name: str = EVIL, *, via: int | None = None, **kw) -> int:
    """What a browser gets after a DNS rebinding: it resolves ``name`` to 127.0.0.1 and sends
    ``Host: name:port`` with the page's own (matching) ``Origin``. ``via``: the port to dial
    (a proxy) when it differs from the one in the URL."""
    return await status_code_of(f"ws://{name}:{port}", host="127.0.0.1", port=via or port,
                                origin=f"http://{name}:{port}", **kw)


def get_with_host(port: int, path: str, host: str, **headers: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host, **headers})  # our Host, not http.client's
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_dns_rebinding_is_refused_before_anything_else(start):
    status_port = free_port()
    server = start("--status-port", str(status_port))
    async with await AgentClient.connect(server.url) as bystander:
        session = await bystander.create_session()
        before = server.status()
        # The attack: a foreign name with a matching Origin (the same-origin check alone admits it).
        assert await rebound_status(server.port) == 403
        assert await rebound_status(server.port, EVIL + ".") == 403  # a trailing dot changes nothing
        for path in PAGES:
            status, body = get_with_host(server.port, path, f"{EVIL}:{server.port}")
            assert status == 421 and b"--allow-host" in body and EVIL.encode() not in body, (path, status, body)
            assert get_with_host(status_port, path, f"{EVIL}:{status_port}")[0] == 421, path
        after = server.status()
        assert after["connections"] == before["connections"] == 1
        assert after["sessions"]["total"] == 1
        assert after["totals"]["connections_opened"] == before["totals"]["connections_opened"]
        assert after["totals"]["connections_refused"] == {"host": 2}
        # What this server's own names and addresses get: served as before.
        for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", f"[::1]:{server.port}"):
            assert get_with_host(server.port, "/status", host)[0] == 200, host
        assert get_with_host(status_port, "/status", f"localhost:{status_port}")[0] == 200
        async with await AgentClient.connect(f"ws://localhost:{server.port}", host="127.0.0.1",
                                             origin=f"http://localhost:{server.port}") as console:
            final, _ = await (await console.create_session()).ask("from the console")
            assert final["event"] == "agent.final_answer"
        final, _ = await session.ask("still here")  # the bystander never noticed
        assert final["event"] == "agent.final_answer"
    assert server.text.count(f"refused requests for Host '{EVIL}:{server.port}'") == 1  # logged once per name
    assert "Host names served: IP addresses, localhost" in server.text  # said at start


async def test_allow_host_serves_a_public_name_and_only_that(start):
    server = start("--allow-host", "agent.example.test", "--allow-host", ".corp.example.test")
    for name in ("agent.example.test", "AGENT.example.test", "x.corp.example.test"):
        assert await rebound_status(server.port, name) == 101, name
    assert await rebound_status(server.port) == 403
    assert await rebound_status(server.port, "agent.example.test.evil.example") == 403
    async with await AgentClient.connect(f"ws://agent.example.test:{server.port}", host="127.0.0.1",
                                         origin=f"http://agent.example.test:{server.port}") as client:
        final, _ = await (await client.create_session()).ask("by name")
        assert final["event"] == "agent.final_answer"


async def test_dns_rebinding_through_nginx(start, tmp_path):
    """deploy/nginx.conf forwards the client's Host ($http_host): the node still tells its own
    public name from a rebound one, and a forged X-Forwarded-Host from a client changes nothing."""
    from tests.integration.test_durability import NGINX, Nginx

    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx)")
    node = start("--allow-host", "agent.example.test", "--trusted-proxy", "127.0.0.1")
    proxy = Nginx([node.port], tmp_path).start()
    try:
        public = f"agent.example.test:{proxy.port}"
        assert get_with_host(proxy.port, "/ready", public)[0] == 200
        assert get_with_host(proxy.port, "/ready", f"localhost:{proxy.port}")[0] == 200
        assert get_with_host(proxy.port, "/ready", f"{EVIL}:{proxy.port}")[0] == 421
        assert get_with_host(proxy.port, "/ready", f"{EVIL}:{proxy.port}", **{"X-Forwarded-Host": public})[0] == 421
        assert await rebound_status(proxy.port, via=proxy.port) == 403
        async with await AgentClient.connect(f"ws://{public}", host="127.0.0.1", port=proxy.port,
                                             origin=f"http://{public}") as client:
            final, _ = await (await client.create_session()).ask("through the proxy")
            assert final["event"] == "agent.final_answer"
        assert node.status()["totals"]["connections_refused"] == {"host": 1}
    finally:
        proxy.stop()


# Secrets stay off the command line ------------------------------------------------------------

SECRET = "state-secret-5b1e0c9d7a"


def server_command(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYAGENT_WS_")}
    return subprocess.run([sys.executable, "-m", "myagent.cli", "server", str(AGENTS / "test_agent.py"),
                           "--port", "0", "--workers", "1", *args], cwd=ROOT, env={**env, "MYAGENT_LLM": LLM},
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("args, variable", [
    (("--auth-token", TOKEN), "MYAGENT_WS_AUTH_TOKENS or --auth-tokens-file FILE"),
    ((f"--auth-token={TOKEN}",), "MYAGENT_WS_AUTH_TOKENS or --auth-tokens-file FILE"),
    (("--state-secret", SECRET), "MYAGENT_WS_STATE_SECRET or --state-secret-file FILE"),
    (("--log-level", "debug", f"--state-secret={SECRET}"), "MYAGENT_WS_STATE_SECRET or --state-secret-file FILE"),
])
def test_a_secret_on_the_command_line_is_refused_in_one_line(args, variable):
    result = server_command(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is refused on the command line" in lines[0] and variable in lines[0], lines
    assert TOKEN not in result.stderr and SECRET not in result.stderr
    assert result.stdout == ""  # refused before anything started


def tree_of(server: ServerProcess) -> list[psutil.Process]:
    front = psutil.Process(server.proc.pid)
    return [front, *front.children(recursive=True)]


async def test_no_secret_in_any_command_line_and_both_secret_sources_agree(start, tmp_path):
    key = tmp_path / "exports.key"
    key.write_text(SECRET + "\n")
    key.chmod(0o600)
    tokens = tmp_path / "tokens"
    tokens.write_text("# one per line\nfile-token-3c1d\n")
    tokens.chmod(0o644)  # too open: said at start
    from_env = start(env={"MYAGENT_WS_AUTH_TOKENS": TOKEN, "MYAGENT_WS_STATE_SECRET": SECRET})
    from_files = start("--auth-tokens-file", str(tokens), "--state-secret-file", str(key))
    secrets = (TOKEN, SECRET, "file-token-3c1d")
    for server in (from_env, from_files):
        for proc in tree_of(server):  # front, zygote, sandboxes
            cmdline = (Path("/proc") / str(proc.pid) / "cmdline").read_bytes()
            assert not any(s.encode() in cmdline for s in secrets), (proc.pid, cmdline)
        for proc in tree_of(server)[1:]:  # and agent code cannot find them in its environment
            environ = (Path("/proc") / str(proc.pid) / "environ").read_bytes()
            assert not any(s.encode() in environ for s in secrets), proc.pid
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, timeout=10).stdout
    assert not any(s in listing for s in secrets)
    assert f"--auth-tokens-file {tokens} is open to other users (mode 0644): chmod 600 it." in from_files.text
    assert f"--state-secret-file {key} is open" not in from_files.text  # 0600: nothing to say
    # The secret read from the environment and the one read from the file sign alike: an export
    # made on one server restores on the other.
    async with await AgentClient.connect(from_env.url, token=TOKEN) as client:
        session = await client.create_session()
        await session.ask("remember me")
        exported = await export(session)
    async with await AgentClient.connect(from_files.url, token="file-token-3c1d") as client:
        restored, _ = await restore(client, {"content": {"state": exported["content"]["state"]}})
        final, _ = await restored.ask("who?")
        assert final["content"] == "You said: who?. Before that: remember me. Turn 2.", final
    for server in (from_env, from_files):
        assert not any(s in server.text for s in secrets), "a secret reached the logs"


# Rate-limit flood: 1008 after the refusals already queued --------------------------------------

async def test_rate_limit_flood_closes_1008_after_the_queued_refusals(start):
    server = start("--rate-limit", "0.2", "--rate-burst", "3", "--rate-strikes", "5")
    async with await AgentClient.connect(server.url) as bystander:
        session = await bystander.create_session()
        async with connect(server.url, open_timeout=5) as flood:
            await flood.recv()  # system.connected
            for i in range(60):
                try:
                    await flood.send(json.dumps({"event": "user.cancel", "session_id": f"s_none{i}"}))
                except ConnectionClosed:
                    break
            loop = asyncio.get_running_loop()
            started = loop.time()
            received = []
            with pytest.raises(ConnectionClosed):
                while True:
                    received.append(json.loads(await asyncio.wait_for(flood.recv(), 5)))
            closed_after = loop.time() - started
        codes = [event["metadata"]["error_code"] for event in received]
        # 3 frames within the burst are answered; 4 refusals follow; the 5th strike closes.
        assert codes == ["SESSION_NOT_FOUND"] * 3 + ["RATE_LIMITED"] * 4, codes
        assert (flood.close_code, flood.close_reason) == (1008, "rate limit exceeded")
        assert closed_after < 2.0, closed_after  # not the 5 s close timeout
        final, _ = await session.ask("unharmed")
        assert final["event"] == "agent.final_answer"
    assert await settles(lambda: server.status()["connections"] == 0)
