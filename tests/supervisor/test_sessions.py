"""Session and SessionRegistry: seq, replay, ack, history, envelopes, the store written behind."""

import re

import orjson
import pytest

from myagent.protocol.schema import validate_server_event
from myagent.supervisor.sessions import Limits, SessionRegistry, encode_history
from myagent.supervisor.store.base import SessionRecord, StoredSession

from .fakes import FakeConnection, FakeStore

KEY_ORDER = ["event", "timestamp", "session_id", "seq", "event_id", "step_id", "content", "metadata"]


def registry(store=None, **limits):
    return SessionRegistry(Limits(**limits), store)


def new_session(**limits):
    session, _ = registry(**limits).create("alice")
    return session


# seq and envelopes -------------------------------------------------------------------------------
def test_seq_is_gapless_and_every_event_is_a_valid_envelope_in_protocol_order():
    session = new_session()
    conn = FakeConnection()
    session.connection = conn  # type: ignore[assignment]
    session.emit("agent.session_created", "Session created", {"resume_token": "r", "agent_name": "a",
                                                               "usage": session.usage.as_dict()})
    session.emit("system.notice", None, {})
    session.emit("agent.tool_call", "call", {"tool": "t", "args": {}, "status": "running", "turn_id": "t_1"},
                 step_id="s1")
    session.emit("agent.thinking", {"nested": [1, 2]}, {"turn_id": "t_1"})
    docs = conn.events()
    assert [d["seq"] for d in docs] == [1, 2, 3, 4] and session.seq == 4
    for doc in docs:
        assert list(doc) == [k for k in KEY_ORDER if k in doc]
        assert doc["session_id"] == session.id and doc["event_id"] == f"{session.id}:{doc['seq']}"
        assert doc["metadata"]["connection_id"] == conn.id
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["timestamp"])
        validate_server_event(doc)
    assert docs[1]["metadata"] == {"connection_id": conn.id} and docs[1]["content"] is None
    assert docs[2]["step_id"] == "s1"


def test_deliver_returns_the_bytes_it_queued_and_kept():
    session = new_session()
    conn = FakeConnection()
    session.connection = conn  # type: ignore[assignment]
    data = session.deliver(b"agent.thinking", b'{"content":"x","metadata":{"turn_id":"t"}}')
    assert conn.received == [data] and session.replay[-1] == (1, data)
    assert orjson.loads(data)["metadata"] == {"turn_id": "t", "connection_id": conn.id}


def test_a_detached_session_frames_events_without_a_connection_id():
    session = new_session()
    data = session.emit("system.notice", "hi", {"x": 1})
    assert orjson.loads(data)["metadata"] == {"x": 1}
    assert session.emit("system.notice", "hi", {}).endswith(b',"metadata":{}}')


# replay, ack, events_after ------------------------------------------------------------------------
def test_replay_is_bounded_by_count():
    session = new_session(replay=3)
    for i in range(5):
        session.emit("system.notice", i, {})
    assert [seq for seq, _ in session.replay] == [3, 4, 5]
    assert session.replay_bytes == sum(len(d) for _, d in session.replay)


def test_replay_is_bounded_by_bytes_but_keeps_the_newest_event():
    session = new_session(replay_bytes=400)
    for i in range(6):
        session.emit("system.notice", "x" * 100, {})
    assert session.replay_bytes <= 400 and session.replay[-1][0] == 6
    big = new_session(replay_bytes=10)
    big.emit("system.notice", "y" * 100, {})
    assert [seq for seq, _ in big.replay] == [1]


def test_ack_trims_the_replay_up_to_the_acked_seq():
    session = new_session()
    for i in range(5):
        session.emit("system.notice", i, {})
    session.ack(3)
    assert [seq for seq, _ in session.replay] == [4, 5]
    assert session.replay_bytes == sum(len(d) for _, d in session.replay)
    session.ack(99)
    assert not session.replay and session.replay_bytes == 0


def test_events_after_returns_what_the_client_missed_in_order():
    session = new_session()
    sent = [session.emit("system.notice", i, {}) for i in range(4)]
    assert session.events_after(2) == (sent[2:], None)
    assert session.events_after(4) == ([], None)
    assert session.events_after(0) == (sent, None)


def test_events_after_names_the_first_missing_seq_when_the_buffer_lost_some():
    session = new_session(replay=2)
    sent = [session.emit("system.notice", i, {}) for i in range(5)]
    assert session.events_after(1) == (sent[3:], 2)
    assert session.events_after(3) == (sent[3:], None)
    session.ack(5)
    assert session.events_after(2) == ([], 3)
    assert session.events_after(5) == ([], None)


def test_a_fresh_session_has_nothing_to_replay():
    assert new_session().events_after(0) == ([], None)


# history -----------------------------------------------------------------------------------------------
def test_history_is_bounded_by_count_and_keeps_counting_what_was_added():
    session = new_session(history=3)
    for i in range(5):
        session.add_history(f'{{"n":{i}}}')
    assert session.history == ['{"n":2}', '{"n":3}', '{"n":4}']
    assert session.history_added == 5
    assert session.history_bytes == sum(len(m) for m in session.history)


def test_history_is_bounded_by_bytes_and_a_message_over_the_limit_is_not_kept():
    session = new_session(history_bytes=30)
    for i in range(4):
        session.add_history('{"n":"%s"}' % (str(i) * 4))  # 12 bytes each
    assert session.history_bytes <= 30 and session.history[-1] == '{"n":"3333"}' and len(session.history) == 2
    session.add_history('{"big":"%s"}' % ("x" * 40))
    assert session.history[-1] == '{"n":"3333"}' and session.history_added == 4


def test_drop_history_since_forgets_a_turns_messages():
    store = FakeStore()
    session, _ = registry(store).create("alice", [{"role": "user", "content": "old"}])
    mark = session.history_added
    session.add_history('{"role":"user","content":"new"}')
    session.add_history('{"role":"assistant","content":"reply"}')
    store.calls.clear()
    assert session.drop_history_since(mark) == 2
    assert session.history == ['{"role":"user","content":"old"}'] and session.history_added == mark
    assert session.history_bytes == len(session.history[0])
    assert store.calls == [("replace_history", session.id, ['{"role":"user","content":"old"}'])]
    assert session.drop_history_since(mark) == 0 and len(store.calls) == 1


def test_drop_history_since_never_drops_more_than_is_held():
    session = new_session(history=2)
    for i in range(5):
        session.add_history(f'{{"n":{i}}}')
    assert session.drop_history_since(0) == 2 and session.history == [] and session.history_bytes == 0


# the store, written behind ---------------------------------------------------------------------------------
def test_events_messages_and_acks_are_written_behind_to_a_durable_store():
    store = FakeStore()
    session, _ = registry(store).create("alice")
    session.emit("system.notice", "a", {})
    session.emit("system.notice", "b", {})
    session.add_history('{"role":"user"}')
    session.ack(5)
    session.persist()
    assert store.calls == [("add_event", session.id, 1), ("add_event", session.id, 2),
                           ("add_message", session.id, '{"role":"user"}'),
                           ("trim_events", session.id, 1),  # the newest event stays: it carries the seq
                           ("put_record", session.id, 2, None)]


def test_a_store_that_is_not_durable_is_not_written_to():
    store = FakeStore()
    store.durable = False
    reg = registry(store)
    session, _ = reg.create("alice")
    session.emit("system.notice", "a", {})
    assert reg.store is None and store.calls == []


# SessionRegistry -------------------------------------------------------------------------------------------
def test_create_hashes_the_token_and_trims_the_initial_history():
    reg = registry(history=2)
    session, token = reg.create("alice", [{"n": 1}, '{"n":2}', {"n": 3}], "192.0.2.7")
    assert session.check_token(token) and not session.check_token(token + "x")
    assert token.encode() not in session.token_hash
    assert session.history == ['{"n":2}', '{"n":3}']
    assert reg.get(session.id) is session and reg.get(None) is None and reg.get(7) is None
    assert reg.by_owner["alice"] == 1 and reg.by_address["192.0.2.7"] == 1 and len(reg) == 1


def test_remove_deletes_from_the_store_unless_kept_and_updates_the_counts():
    store = FakeStore()
    reg = registry(store)
    a, _ = reg.create("alice", address="x")
    b, _ = reg.create("alice", address="x")
    reg.remove(a.id)
    reg.remove(b.id, keep_stored=True)
    assert ("delete", a.id) in store.calls and ("delete", b.id) not in store.calls
    assert len(reg) == 0 and reg.by_owner == {} and reg.by_address == {}
    assert reg.remove("s_gone") is None


def test_revive_takes_seq_from_the_newest_of_record_and_events():
    reg = registry(replay=2)
    record = SessionRecord("s_old", "alice", "00" * 32, "agent", 1.0, 2.0, seq=3)
    events = [(4, b"e4"), (5, b"e5"), (6, b"e6")]
    session = reg.revive(StoredSession(record, [{"role": "user"}], events), "192.0.2.9")
    assert session.seq == 6 and [seq for seq, _ in session.replay] == [5, 6]
    assert session.replay_bytes == 4 and session.history == encode_history([{"role": "user"}])
    assert reg.get("s_old") is session and session.address == "192.0.2.9"
    fresh = reg.revive(StoredSession(SessionRecord("s_new", "bob", "00" * 32, "a", 1.0, 2.0, seq=9)))
    assert fresh.seq == 9


def test_detached_and_oldest_detached():
    reg = registry()
    a, _ = reg.create("alice", address="x")
    b, _ = reg.create("alice", address="x")
    c, _ = reg.create("bob", address="y")
    a.connection = FakeConnection()  # type: ignore[assignment]
    b.detached_at, c.detached_at = 20.0, 10.0
    assert set(reg.detached()) == {b, c}
    assert reg.oldest_detached() is c
    assert reg.oldest_detached(owner="alice") is b and reg.oldest_detached(address="y") is c
    b.turn = object()  # type: ignore[assignment]
    assert reg.oldest_detached(owner="alice") is None


@pytest.mark.parametrize("turn, sandbox, placing, free", [
    (None, object(), False, True), (object(), object(), False, False),
    (None, None, False, False), (None, object(), True, False)])
def test_free_means_hosted_not_placing_and_no_turn(turn, sandbox, placing, free):
    session = new_session()
    session.turn, session.sandbox, session.placing = turn, sandbox, placing  # type: ignore[assignment]
    assert session.free is free
