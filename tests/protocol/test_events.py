import re

from myagent.protocol import events as ev
from myagent.protocol.schema import CLIENT_SCHEMA, SERVER_SCHEMA

NAME = re.compile(r"^(user|system|agent)\.[a-z_]+$")


def test_protocol_version():
    assert ev.PROTOCOL_VERSION == "1"


def test_client_event_names():
    assert ev.USER_CREATE_SESSION == "user.create_session"
    assert ev.CLIENT_EVENTS == {
        "user.create_session", "user.message", "user.cancel", "user.response", "user.ack",
        "user.reconnect", "user.close_session", "user.request_state", "user.reconnect_with_state",
    }


def test_server_event_names():
    assert ev.SERVER_EVENTS == {
        "system.connected", "system.heartbeat", "system.notice", "system.error",
        "agent.session_created", "agent.thinking", "agent.tool_call", "agent.tool_result",
        "agent.partial_answer", "agent.final_answer", "agent.user_confirm", "agent.error",
        "agent.interrupted", "agent.session_end", "agent.session_resumed",
        "agent.state_exported", "agent.state_restored", "agent.message_queued",
    }


def test_every_constant_is_in_its_set():
    for name, value in vars(ev).items():
        if name.startswith("USER_"):
            assert value in ev.CLIENT_EVENTS, name
        elif name.startswith(("SYSTEM_", "AGENT_")):
            assert value in ev.SERVER_EVENTS, name


def test_namespaces_and_disjointness():
    assert not ev.CLIENT_EVENTS & ev.SERVER_EVENTS
    assert all(NAME.match(name) and name.startswith("user.") for name in ev.CLIENT_EVENTS)
    assert all(NAME.match(name) and not name.startswith("user.") for name in ev.SERVER_EVENTS)


def test_terminal_events():
    assert ev.TERMINAL_EVENTS == {"agent.final_answer", "agent.error", "agent.interrupted"}
    assert ev.TERMINAL_EVENTS <= ev.SERVER_EVENTS
    assert isinstance(ev.TERMINAL_EVENTS, frozenset)


def test_every_event_has_a_schema():
    assert set(CLIENT_SCHEMA["definitions"]) == ev.CLIENT_EVENTS
    assert set(SERVER_SCHEMA["definitions"]) == ev.SERVER_EVENTS


def test_turn_events_are_server_events_ending_in_the_terminal_ones():
    assert ev.TURN_EVENTS <= ev.SERVER_EVENTS
    assert ev.TERMINAL_EVENTS <= ev.TURN_EVENTS
    assert ev.AGENT_SESSION_CREATED not in ev.TURN_EVENTS
