"""Event names of the client protocol (v1).

Client -> server events are ``user.*``; server -> client events are
``system.*`` (connection scoped) and ``agent.*`` (session scoped). Names are
part of the published protocol: add, never rename.
"""

from __future__ import annotations

__all__ = [
    "PROTOCOL_VERSION",
    "USER_CREATE_SESSION", "USER_MESSAGE", "USER_CANCEL", "USER_RESPONSE", "USER_ACK",
    "USER_RECONNECT", "USER_CLOSE_SESSION", "USER_REQUEST_STATE", "USER_RECONNECT_WITH_STATE",
    "SYSTEM_CONNECTED", "SYSTEM_HEARTBEAT", "SYSTEM_NOTICE", "SYSTEM_ERROR",
    "AGENT_SESSION_CREATED", "AGENT_THINKING", "AGENT_TOOL_CALL", "AGENT_TOOL_RESULT",
    "AGENT_PARTIAL_ANSWER", "AGENT_FINAL_ANSWER", "AGENT_USER_CONFIRM", "AGENT_ERROR",
    "AGENT_INTERRUPTED", "AGENT_SESSION_END", "AGENT_SESSION_RESUMED",
    "AGENT_STATE_EXPORTED", "AGENT_STATE_RESTORED", "AGENT_MESSAGE_QUEUED",
    "CLIENT_EVENTS", "SERVER_EVENTS", "TERMINAL_EVENTS", "TURN_EVENTS", "MULTITASK_MODES",
]

PROTOCOL_VERSION = "1"

# -- client -> server ------------------------------------------------------------
USER_CREATE_SESSION = "user.create_session"
USER_MESSAGE = "user.message"
USER_CANCEL = "user.cancel"
USER_RESPONSE = "user.response"
USER_ACK = "user.ack"
USER_RECONNECT = "user.reconnect"
USER_CLOSE_SESSION = "user.close_session"
USER_REQUEST_STATE = "user.request_state"
USER_RECONNECT_WITH_STATE = "user.reconnect_with_state"

# -- server -> client ------------------------------------------------------------
SYSTEM_CONNECTED = "system.connected"
SYSTEM_HEARTBEAT = "system.heartbeat"
SYSTEM_NOTICE = "system.notice"
SYSTEM_ERROR = "system.error"
AGENT_SESSION_CREATED = "agent.session_created"
AGENT_THINKING = "agent.thinking"
AGENT_TOOL_CALL = "agent.tool_call"
AGENT_TOOL_RESULT = "agent.tool_result"
AGENT_PARTIAL_ANSWER = "agent.partial_answer"
AGENT_FINAL_ANSWER = "agent.final_answer"
AGENT_USER_CONFIRM = "agent.user_confirm"
AGENT_ERROR = "agent.error"
AGENT_INTERRUPTED = "agent.interrupted"
AGENT_SESSION_END = "agent.session_end"
AGENT_SESSION_RESUMED = "agent.session_resumed"
AGENT_STATE_EXPORTED = "agent.state_exported"
AGENT_STATE_RESTORED = "agent.state_restored"
AGENT_MESSAGE_QUEUED = "agent.message_queued"

CLIENT_EVENTS: frozenset[str] = frozenset({
    USER_CREATE_SESSION, USER_MESSAGE, USER_CANCEL, USER_RESPONSE, USER_ACK,
    USER_RECONNECT, USER_CLOSE_SESSION, USER_REQUEST_STATE, USER_RECONNECT_WITH_STATE,
})

SERVER_EVENTS: frozenset[str] = frozenset({
    SYSTEM_CONNECTED, SYSTEM_HEARTBEAT, SYSTEM_NOTICE, SYSTEM_ERROR,
    AGENT_SESSION_CREATED, AGENT_THINKING, AGENT_TOOL_CALL, AGENT_TOOL_RESULT,
    AGENT_PARTIAL_ANSWER, AGENT_FINAL_ANSWER, AGENT_USER_CONFIRM, AGENT_ERROR,
    AGENT_INTERRUPTED, AGENT_SESSION_END, AGENT_SESSION_RESUMED,
    AGENT_STATE_EXPORTED, AGENT_STATE_RESTORED, AGENT_MESSAGE_QUEUED,
})

# A turn (started by user.message) ends with exactly one of these.
TERMINAL_EVENTS: frozenset[str] = frozenset({AGENT_FINAL_ANSWER, AGENT_ERROR, AGENT_INTERRUPTED})

# What a sandbox may say during a turn; anything else from a sandbox is refused.
TURN_EVENTS: frozenset[str] = frozenset({
    AGENT_THINKING, AGENT_TOOL_CALL, AGENT_TOOL_RESULT, AGENT_PARTIAL_ANSWER, AGENT_USER_CONFIRM,
    *TERMINAL_EVENTS,
})

# user.message metadata.multitask: what a message does when its session is busy with a turn.
MULTITASK_MODES = ("reject", "enqueue", "interrupt", "rollback")
