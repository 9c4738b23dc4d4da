"""Relay: sandbox E/M frames in, session events out, nothing forged gets through.

Frames are built with the real wire helpers (``ops.event_frame``,
``ops.message_frame``, ``envelope.event_body``) and fed to a real Relay wired
to a real Placement and Turns; what the client received is decoded from the
fake connection's bytes and checked field by field.
"""

import re

import orjson
import pytest

from myagent.protocol.envelope import event_body
from myagent.protocol.schema import validate_server_event
from myagent.wire import ops

from .fakes import Core, FakeConnection


async def running(**options):
    core = Core(**options)
    sandbox = core.add_sandbox()
    conn = FakeConnection()
    session = await core.session(conn)
    core.turns.submit(session, "hello", None, "enqueue")
    conn.clear()
    return core, sandbox, conn, session


def feed_event(core, sandbox, session, name, body, turn_id=None):
    core.relay.on_data(sandbox, ops.event_frame(session.id, turn_id or session.turn.id, name, body))


# Accepted frames ------------------------------------------------------------------------------
async def test_an_event_is_delivered_with_the_fronts_fields_around_the_sandboxs_body():
    core, sandbox, conn, session = await running()
    tid = session.turn.id
    seq_before = session.seq
    body = event_body("Step 1: thinking", {"step": 1, "turn_id": tid})
    feed_event(core, sandbox, session, "agent.thinking", body)
    assert len(conn.received) == 1
    data = conn.received[0]
    doc = orjson.loads(data)
    assert list(doc) == ["event", "timestamp", "session_id", "seq", "event_id", "content", "metadata"]
    assert doc["event"] == "agent.thinking"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["timestamp"])
    assert doc["session_id"] == session.id
    assert doc["seq"] == seq_before + 1 == session.seq
    assert doc["event_id"] == f"{session.id}:{doc['seq']}"
    assert doc["content"] == "Step 1: thinking"
    assert doc["metadata"] == {"step": 1, "turn_id": tid, "connection_id": conn.id}
    assert list(doc["metadata"])[-1] == "connection_id"
    validate_server_event(doc)
    # Kept for replay exactly as sent; the body's bytes were not re-encoded.
    assert session.replay[-1] == (doc["seq"], data)
    assert body[1:-2] in data


async def test_step_id_keeps_its_place_in_the_envelope():
    core, sandbox, conn, session = await running()
    tid = session.turn.id
    body = event_body("Calling tool", {"tool": "t1", "args": {}, "status": "running", "turn_id": tid}, "call_1")
    feed_event(core, sandbox, session, "agent.tool_call", body)
    doc = conn.events()[0]
    assert list(doc) == ["event", "timestamp", "session_id", "seq", "event_id", "step_id", "content", "metadata"]
    assert doc["step_id"] == "call_1"
    validate_server_event(doc)


async def test_a_detached_session_still_numbers_and_keeps_events_without_a_connection_id():
    core, sandbox, conn, session = await running()
    session.connection = None
    feed_event(core, sandbox, session, "agent.partial_answer", event_body("x", {"turn_id": session.turn.id}))
    seq, data = session.replay[-1]
    assert conn.received == [] and seq == session.seq
    assert orjson.loads(data)["metadata"] == {"turn_id": session.turn.id}


async def test_events_are_numbered_gaplessly_across_the_sandbox_and_the_front():
    core, sandbox, conn, session = await running()
    core.turns.submit(session, "second", None, "enqueue")  # the front says agent.message_queued
    for i in range(3):
        core.event(sandbox, session, "agent.partial_answer", f"tok{i}")
    core.finish(sandbox, session)
    seqs = [d["seq"] for d in conn.events()]
    assert seqs == list(range(seqs[0], seqs[0] + 5)) and seqs[-1] == session.seq


async def test_user_confirm_records_the_pending_step():
    core, sandbox, conn, session = await running()
    core.event(sandbox, session, "agent.user_confirm", "Allow?", step_id="call_9",
               tool_name="t1", tool_args={}, tool_description="d")
    assert session.turn.pending_steps == {"call_9"}


async def test_a_terminal_event_ends_the_turn_and_later_frames_of_it_are_quiet():
    core, sandbox, conn, session = await running()
    tid = core.finish(sandbox, session, "4")
    assert session.turn is None
    core.event(sandbox, session, "agent.partial_answer", "late", turn_id=tid)
    core.message(sandbox, session, {"role": "assistant", "content": "late"}, turn_id=tid)
    assert conn.names() == ["agent.final_answer"] and sandbox.offences == 0


async def test_history_messages_are_kept_as_the_sandbox_sent_them():
    core, sandbox, conn, session = await running()
    raw = b'{"role":"assistant","content":"caf\xc3\xa9","tool_calls":[]}'
    core.relay.on_data(sandbox, ops.message_frame(session.id, session.turn.id, raw))
    assert session.history[-1] == raw.decode()
    assert conn.received == []  # history is not an event


# Refused frames: offences, never delivered ----------------------------------------------------------
def body_cases(tid):
    return {
        "extra top-level key": b'{"content":"x","extra":1,"metadata":{"turn_id":"%s"}}' % tid,
        "session_id at the top": b'{"session_id":"s_forged","content":"x","metadata":{"turn_id":"%s"}}' % tid,
        "seq at the top": b'{"seq":1,"content":"x","metadata":{"turn_id":"%s"}}' % tid,
        "event_id at the top": b'{"event_id":"s:1","content":"x","metadata":{"turn_id":"%s"}}' % tid,
        "event at the top": b'{"event":"system.error","content":"x","metadata":{"turn_id":"%s"}}' % tid,
        "connection_id in metadata":
            b'{"content":"x","metadata":{"turn_id":"%s","connection_id":"c_forged"}}' % tid,
        "wrong turn_id": b'{"content":"x","metadata":{"turn_id":"t_other"}}',
        "no turn_id": b'{"content":"x","metadata":{}}',
        "turn_id not a string": b'{"content":"x","metadata":{"turn_id":1}}',
        "not JSON": b'{"content":"x","metadata":{"turn_id":"%s"}' % tid,
        "not an object": b'["content","metadata"]',
        "metadata not last": b'{"metadata":{"turn_id":"%s"},"content":"x"}' % tid,
        "metadata not an object": b'{"content":"x","metadata":"turn_id"}',
        "step_id not a string": b'{"step_id":7,"content":"x","metadata":{"turn_id":"%s"}}' % tid,
        "invalid UTF-8": b'{"content":"\xff","metadata":{"turn_id":"%s"}}' % tid,
        "empty": b"",
    }


@pytest.mark.parametrize("case", list(body_cases(b"")))
async def test_untrusted_bodies_that_could_forge_the_envelope_are_refused(case):
    core, sandbox, conn, session = await running()
    body = body_cases(session.turn.id.encode())[case]
    seq = session.seq
    feed_event(core, sandbox, session, "agent.thinking", body)
    assert conn.received == [] and session.seq == seq and len(session.replay) == seq
    assert sandbox.offences == 1 and core.metrics.frames_rejected == {"malformed event": 1}
    assert session.turn is not None


@pytest.mark.parametrize("body", [b'{"content":"x","metadata":{"turn_id":"%s"} }',
                                  b'{"content":"x","metadata":{"turn_id":"%s"}}\n',
                                  b'{ "content" : "x" , "metadata" : { "turn_id" : "%s" } }'],
                         ids=["space before the end", "trailing newline", "spaces everywhere"])
async def test_valid_bodies_in_another_layout_are_relayed_in_canonical_form(body):
    core, sandbox, conn, session = await running()
    tid = session.turn.id
    feed_event(core, sandbox, session, "agent.thinking", body % tid.encode())
    assert sandbox.offences == 0
    [data] = conn.received
    assert data.endswith(b'"content":"x","metadata":{"turn_id":"%s","connection_id":"%s"}}'
                         % (tid.encode(), conn.id.encode()))


@pytest.mark.parametrize("name", ["agent.session_created", "system.error", "agent.session_end",
                                  "agent.message_queued", "agent.nonsense", ""])
async def test_only_turn_events_may_come_from_a_sandbox(name):
    core, sandbox, conn, session = await running()
    body = event_body("x", {"turn_id": session.turn.id})
    feed_event(core, sandbox, session, name, body)
    assert conn.received == [] and sandbox.offences == 1


async def test_a_terminal_event_that_is_refused_does_not_end_the_turn():
    core, sandbox, conn, session = await running()
    feed_event(core, sandbox, session, "agent.final_answer", b'{"content":"x","metadata":{"turn_id":"t_other"}}')
    assert session.turn is not None and conn.received == []


@pytest.mark.parametrize("frame", [b"Es_x", b"Es_x\0t_y", b"Ms_x", b"X-whatever", b"O\0[]"])
async def test_malformed_frames_are_offences(frame):
    core, sandbox, conn, session = await running()
    core.relay.on_data(sandbox, frame)
    assert sandbox.offences == 1 and conn.received == []


async def test_a_sandbox_cannot_speak_for_a_session_it_does_not_host():
    core, a, conn, mine = await running()
    b = core.add_sandbox()
    other_conn = FakeConnection()
    theirs = await core.session(other_conn, sandbox=b)
    core.turns.submit(theirs, "hi", None, "enqueue")
    other_conn.clear()
    feed_event(core, a, theirs, "agent.final_answer", event_body("forged", {"turn_id": theirs.turn.id}))
    core.relay.on_data(a, ops.message_frame(theirs.id, theirs.turn.id, b'{"role":"assistant"}'))
    assert other_conn.received == [] and theirs.turn is not None and a.offences == 2
    assert len(theirs.history) == 1  # only the user's message


@pytest.mark.parametrize("message", [b'"text"', b"[1,2]", b"3", b"null", b"{not json", b"", b'{"a":1}x'])
async def test_history_messages_must_be_json_objects(message):
    core, sandbox, conn, session = await running()
    before = list(session.history)
    core.relay.on_data(sandbox, ops.message_frame(session.id, session.turn.id, message))
    assert session.history == before
    assert sandbox.offences == 1 and core.metrics.frames_rejected == {"malformed history message": 1}


async def test_a_message_for_an_unknown_turn_is_an_offence():
    core, sandbox, conn, session = await running()
    core.message(sandbox, session, {"role": "assistant"}, turn_id="t_forged")
    assert len(session.history) == 1 and sandbox.offences == 1


async def test_duplicate_keys_cannot_smuggle_a_forged_connection_id():
    core, sandbox, conn, session = await running()
    tid = session.turn.id.encode()
    body = b'{"content":"x","metadata":{"turn_id":"%s","connection_id":"c_forged"},"metadata":{"turn_id":"%s"}}' % (
        tid, tid)
    feed_event(core, sandbox, session, "agent.thinking", body)
    assert all(b"c_forged" not in data for data in conn.received)


async def test_an_odd_error_code_from_a_sandbox_cannot_break_the_front():
    core, sandbox, conn, session = await running()
    core.turns.submit(session, "queued", None, "enqueue")
    body = event_body("boom", {"error_code": {"x": 1}, "recoverable": False, "turn_id": session.turn.id})
    feed_event(core, sandbox, session, "agent.error", body)  # must not raise
    # Either refused (the turn still runs) or delivered (the queued message started).
    assert session.turn is not None
