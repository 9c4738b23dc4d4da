"""Signed state export and restore with real servers.

user.request_state -> agent.state_exported {content.state}; user.reconnect_with_state on
another connection, or on the same server after a restart with the same --state-secret-file,
-> agent.state_restored with a new session_id and resume_token, and the conversation
remembers its history. Tampered, foreign or missing exports are refused (STATE_INVALID).
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from myagent.client import AgentClient, ClientError, ClientSession

from .helpers import assert_valid_server_event, wait_for_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]

SECRET = "test-state-secret-0123456789abcdef"


def args(tmp_path, secret: str = SECRET) -> tuple[str, ...]:
    """The secret comes from a file (on the command line `ps` would show it: refused)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    key = tmp_path / "exports.key"
    key.write_text(secret + "\n")
    key.chmod(0o600)
    return ("--workers", "1", "--state-secret-file", str(key), "--state-dir", str(tmp_path))


async def export(session: ClientSession) -> dict:
    await session.client.send_frame({"event": "user.request_state", "session_id": session.id})
    event, _ = await wait_for_event(session, "agent.state_exported", 5)
    return event


async def restore(client: AgentClient, frame: dict) -> tuple[ClientSession, dict]:
    """Send a user.reconnect_with_state frame; return the restored session and its event."""
    await client.send_frame({"event": "user.reconnect_with_state", **frame})
    event = await client._await_pending(10)
    assert event["event"] == "agent.state_restored", event
    session = ClientSession(client, event["session_id"], event["metadata"]["resume_token"], event)
    session.last_seq = event["seq"]
    client.sessions[session.id] = session
    return session, event


async def restore_fails(client: AgentClient, frame: dict) -> ClientError:
    with pytest.raises(ClientError) as info:
        await restore(client, frame)
    return info.value


async def conversation(client: AgentClient) -> tuple[ClientSession, str]:
    session = await client.create_session()
    await session.ask("my name is Ada")
    await session.ask("I like tea")
    exported = await export(session)
    assert_valid_server_event(exported)
    assert exported["session_id"] == session.id
    assert exported["metadata"]["history_messages"] >= 4  # two user messages, two answers
    assert exported["metadata"]["size"] == len(exported["content"]["state"])
    assert "expires_at" in exported["metadata"]
    # Where the original MyAgent clients read it, too.
    assert exported["metadata"]["signed_state"] == exported["content"]["state"]
    assert exported["metadata"]["state_size"] == exported["metadata"]["size"]
    assert exported["metadata"]["message_count"] == exported["metadata"]["history_messages"]
    return session, exported["content"]["state"]


async def test_export_then_restore_on_another_connection(start_server, open_client, tmp_path):
    server = start_server(*args(tmp_path))
    original, state = await conversation(await open_client(server.url))

    other = await open_client(server.url)
    restored, event = await restore(other, {"content": {"state": state}})
    assert_valid_server_event(event)
    assert restored.id != original.id
    assert restored.resume_token and restored.resume_token != original.resume_token
    assert event["metadata"]["restored_from"] == original.id
    assert event["seq"] == 1
    final, _ = await restored.ask("what did I say?")
    assert final["content"] == "You said: what did I say?. Before that: I like tea. Turn 3."
    # The original session is untouched by the export.
    final, _ = await original.ask("still here")
    assert final["content"] == "You said: still here. Before that: I like tea. Turn 3."
    # The restored session is a real one: its resume token works on a third connection.
    await other.close()
    third = await open_client(server.url)
    _, replayed = await third.reconnect(restored.id, restored.resume_token, restored.last_seq)
    assert replayed[-1]["event"] == "agent.session_resumed"


async def test_restore_after_restart_with_the_same_secret(start_server, open_client, tmp_path):
    first = start_server(*args(tmp_path))
    _, state = await conversation(await open_client(first.url))
    first.signal(signal.SIGTERM)
    assert await asyncio.to_thread(first.wait, 15) == 0

    second = start_server(*args(tmp_path))
    restored, _ = await restore(await open_client(second.url), {"content": {"state": state}})
    final, _ = await restored.ask("and now?")
    assert final["content"] == "You said: and now?. Before that: I like tea. Turn 3."


async def test_generated_secret_survives_a_restart(start_server, open_client, tmp_path):
    """No state secret given: the one generated in the state directory is reused after a restart."""
    base = ("--workers", "1", "--state-dir", str(tmp_path))
    first = start_server(*base)
    _, state = await conversation(await open_client(first.url))
    first.signal(signal.SIGTERM)
    assert await asyncio.to_thread(first.wait, 15) == 0
    assert (tmp_path / "state-secret").stat().st_mode & 0o777 == 0o600
    second = start_server(*base)
    restored, _ = await restore(await open_client(second.url), {"content": {"state": state}})
    assert (await restored.ask("x"))[0]["content"].endswith("Turn 3.")


async def test_other_secret_refuses_the_export(start_server, open_client, tmp_path):
    first = start_server(*args(tmp_path))
    _, state = await conversation(await open_client(first.url))
    other_server = start_server(*args(tmp_path / "other", secret="another-secret-entirely-0123456789"))
    error = await restore_fails(await open_client(other_server.url), {"content": {"state": state}})
    assert error.code == "STATE_INVALID"
    assert error.event["metadata"]["request_event"] == "user.reconnect_with_state"
    assert "signature" in error.event["content"]


async def test_tampered_and_malformed_exports_are_refused(start_server, open_client, tmp_path):
    server = start_server(*args(tmp_path))
    client = await open_client(server.url)
    _, state = await conversation(client)
    body, _, signature = state.partition(".")
    flipped = body[:10] + ("A" if body[10] != "A" else "B") + body[11:]
    for bad in (f"{flipped}.{signature}",            # payload altered, old signature
                f"{body}.{signature[:-4]}AAAA",      # signature altered
                body,                                 # signature cut off
                "not-a-state-export"):
        error = await restore_fails(client, {"content": {"state": bad}})
        assert error.code == "STATE_INVALID", (bad[:40], error.event)
        assert error.event["metadata"]["recoverable"] is False
    # Nothing was created by the refusals; the connection still works.
    assert server.status()["sessions"]["total"] == 1
    restored, _ = await restore(client, {"content": {"state": state}})
    assert restored.id


async def test_legacy_top_level_signed_state(start_server, open_client, tmp_path):
    """The original clients' round trip: they read the export from ``metadata.signed_state`` and send
    it back as a top-level ``signed_state`` (with their own ``timestamp``)."""
    server = start_server(*args(tmp_path))
    session, _ = await conversation(await open_client(server.url))
    await session.client.send_frame({"event": "user.request_state", "session_id": session.id,
                                     "timestamp": "2026-01-01T00:00:00.000Z"})
    exported, _ = await wait_for_event(session, "agent.state_exported", 5)
    saved = exported["metadata"]["signed_state"]
    restored, _ = await restore(await open_client(server.url),
                                {"signed_state": saved, "timestamp": "2026-01-01T00:00:00.000Z"})
    final, _ = await restored.ask("legacy")
    assert final["content"] == "You said: legacy. Before that: I like tea. Turn 3."


async def test_export_waits_for_the_running_turn(start_server, open_client, tmp_path):
    server = start_server(*args(tmp_path))
    client = await open_client(server.url)
    session = await client.create_session()
    await client.send_frame({"event": "user.message", "session_id": session.id, "content": "slow"})
    await wait_for_event(session, "agent.tool_call", 5)
    await client.send_frame({"event": "user.request_state", "session_id": session.id})
    error, _ = await wait_for_event(session, "system.error", 5)
    assert error["metadata"]["error_code"] == "SESSION_BUSY"
    await wait_for_event(session, "agent.final_answer", 8)
    assert (await export(session))["content"]["state"]


async def test_restore_with_a_durable_store_survives_kill9(start_server, open_client, tmp_path):
    """A restored session is stored like any other: after a kill -9 it is revived with its history."""
    store = ("--store", f"sqlite://{tmp_path}/sessions.db")
    first = start_server(*args(tmp_path), *store)
    _, state = await conversation(await open_client(first.url))
    restored, _ = await restore(await open_client(first.url), {"content": {"state": state}})
    await restored.ask("after restore")
    await asyncio.sleep(0.3)
    first.signal(signal.SIGKILL)
    first.wait(5)
    second = start_server(*args(tmp_path), *store)
    client = await open_client(second.url)
    revived, _ = await client.reconnect(restored.id, restored.resume_token, restored.last_seq)
    final, _ = await revived.ask("still there?")
    assert final["content"] == "You said: still there?. Before that: after restore. Turn 4."
