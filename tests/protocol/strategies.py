"""Hypothesis strategies for client frames of protocol v1 (reused by server fuzz tests).

* :func:`client_frames` -- VALID frames for every client event (or a chosen
  subset), written from the schema's rules, with unknown extra fields mixed
  in the way old clients send them.
* :func:`invalid_client_frames` -- ``(frame, field)`` pairs: a valid frame
  with exactly one field removed or given a wrong value; ``validate_client_frame``
  must reject it with ``SchemaViolation`` naming ``field``.
* :func:`json_values` -- any value orjson round-trips exactly.

Generated text never contains lone surrogates (hypothesis excludes category
Cs by default), so every frame encodes with orjson.
"""

from __future__ import annotations

import copy

from hypothesis import strategies as st

from myagent.protocol import events as ev
from myagent.protocol.schema import MAX_ID_LENGTH, MAX_SEQ

__all__ = [
    "json_values",
    "session_ids",
    "client_frames",
    "invalid_client_frames",
    "CLIENT_FRAME_STRATEGIES",
]

# Top-level names some client event gives a meaning to: extras avoid them.
_RESERVED = frozenset({"event", "session_id", "step_id", "content", "metadata", "signed_state"})

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)


def json_values(max_leaves: int = 10) -> st.SearchStrategy:
    """Any JSON value that orjson encodes and decodes back to an equal value."""
    return st.recursive(
        _scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=max_leaves,
    )


def json_objects(max_leaves: int = 10) -> st.SearchStrategy:
    return st.dictionaries(st.text(max_size=8), json_values(max_leaves), max_size=5)


def session_ids() -> st.SearchStrategy[str]:
    return st.one_of(
        st.uuids().map(str),
        st.text(min_size=1, max_size=MAX_ID_LENGTH),
    )


_ids = session_ids
_seqs = st.integers(min_value=0, max_value=MAX_SEQ)
_small_seqs = st.integers(min_value=0, max_value=10_000)


def _extras(reserved: frozenset[str] = _RESERVED) -> st.SearchStrategy[dict]:
    """Unknown fields a client may add (the original JS client sends ``timestamp``)."""
    return st.dictionaries(
        st.text(max_size=12).filter(lambda k: k not in reserved),
        json_values(max_leaves=4),
        max_size=3,
    ) | st.builds(lambda ts: {"timestamp": ts}, st.text(max_size=30))


def _with_extras(fields: st.SearchStrategy[dict], reserved: frozenset[str] = _RESERVED) -> st.SearchStrategy[dict]:
    """Merge unknown keys into an object (content objects accept them too)."""
    return st.builds(lambda extra, known: {**extra, **known}, _extras(reserved), fields)


def _frame(event: str, required: dict, optional: dict | None = None) -> st.SearchStrategy[dict]:
    fields = st.fixed_dictionaries(required, optional=optional or {})
    return st.builds(lambda extra, known: {"event": event, **extra, **known}, _extras(), fields)


def _last_event_ids() -> st.SearchStrategy[str]:
    return st.builds(lambda sid, seq: f"{sid}:{seq}", st.uuids().map(str), _small_seqs) | st.text(
        min_size=1, max_size=MAX_ID_LENGTH + 20
    )


_content_keys = frozenset({"confirmed", "approved", "last_seq", "last_event_id", "resume_token", "state"})

CLIENT_FRAME_STRATEGIES: dict[str, st.SearchStrategy[dict]] = {
    ev.USER_CREATE_SESSION: _frame(
        ev.USER_CREATE_SESSION,
        {},
        {"content": st.none() | st.text(max_size=20) | json_objects()},
    ),
    ev.USER_MESSAGE: _frame(
        ev.USER_MESSAGE,
        {"session_id": _ids(), "content": st.text(min_size=1).filter(lambda t: not t.isspace())},
        {
            "metadata": _with_extras(
                st.fixed_dictionaries({}, optional={"message_id": _ids()}), frozenset({"message_id"})
            )
        },
    ),
    ev.USER_CANCEL: _frame(ev.USER_CANCEL, {"session_id": _ids()}),
    ev.USER_RESPONSE: _frame(
        ev.USER_RESPONSE,
        {
            "session_id": _ids(),
            "step_id": _ids(),
            "content": _with_extras(
                st.one_of(
                    st.fixed_dictionaries({"confirmed": st.booleans()}),
                    st.fixed_dictionaries({"approved": st.booleans()}),
                    st.fixed_dictionaries({"confirmed": st.booleans(), "approved": st.booleans()}),
                ),
                _content_keys,
            ),
        },
    ),
    ev.USER_ACK: _frame(
        ev.USER_ACK,
        {
            "content": _with_extras(
                st.one_of(
                    st.fixed_dictionaries({"last_seq": _seqs}),
                    st.fixed_dictionaries({"last_event_id": _last_event_ids()}),
                    st.fixed_dictionaries({"last_seq": _seqs, "last_event_id": _last_event_ids()}),
                ),
                _content_keys,
            )
        },
        {"session_id": _ids()},  # the original console omits it
    ),
    ev.USER_RECONNECT: _frame(
        ev.USER_RECONNECT,
        {
            "session_id": _ids(),
            "content": _with_extras(
                st.fixed_dictionaries(
                    {"resume_token": st.text(min_size=1, max_size=64)}, optional={"last_seq": _seqs}
                ),
                _content_keys,
            ),
        },
    ),
    ev.USER_CLOSE_SESSION: _frame(ev.USER_CLOSE_SESSION, {"session_id": _ids()}),
    ev.USER_REQUEST_STATE: _frame(ev.USER_REQUEST_STATE, {"session_id": _ids()}),
    ev.USER_RECONNECT_WITH_STATE: st.one_of(
        _frame(
            ev.USER_RECONNECT_WITH_STATE,
            {"content": _with_extras(st.fixed_dictionaries({"state": st.text(min_size=1)}), _content_keys)},
            {"session_id": _ids()},
        ),
        # Original clients: the export as top-level signed_state.
        _frame(ev.USER_RECONNECT_WITH_STATE, {"signed_state": st.text() | json_objects()}),
    ),
}

assert set(CLIENT_FRAME_STRATEGIES) == ev.CLIENT_EVENTS


def client_frames(events: frozenset[str] | set[str] | None = None) -> st.SearchStrategy[dict]:
    """Valid client frames for the given events (default: every client event)."""
    names = sorted(ev.CLIENT_EVENTS if events is None else events)
    return st.one_of([CLIENT_FRAME_STRATEGIES[name] for name in names])


# -- invalid frames ---------------------------------------------------------------

_DELETE = object()

_not_string = st.none() | st.booleans() | st.integers() | st.lists(st.integers(), max_size=2) | st.just({})
_bad_id = _not_string | st.just("") | st.text(min_size=MAX_ID_LENGTH + 1, max_size=MAX_ID_LENGTH + 5)
_bad_seq = (
    st.integers(max_value=-1)
    | st.integers(min_value=MAX_SEQ + 1, max_value=2**63)
    | st.text(max_size=3)
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
)
_not_object = st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=2)
_not_bool = st.none() | st.integers() | st.text(max_size=5) | st.just({})

# event -> [(field path, replacement strategy or _DELETE)]; each entry breaks exactly that field.
_MUTATIONS: dict[str, list[tuple[str, object]]] = {
    ev.USER_CREATE_SESSION: [("content", st.booleans() | st.integers() | st.lists(st.integers(), max_size=2))],
    ev.USER_MESSAGE: [
        ("session_id", _DELETE),
        ("session_id", _bad_id),
        ("content", _DELETE),
        ("content", st.just("") | _not_string),
        ("metadata", _not_object),
        ("metadata.message_id", _bad_id),
    ],
    ev.USER_CANCEL: [("session_id", _DELETE), ("session_id", _bad_id)],
    ev.USER_CLOSE_SESSION: [("session_id", _DELETE), ("session_id", _bad_id)],
    ev.USER_REQUEST_STATE: [("session_id", _DELETE), ("session_id", _bad_id)],
    ev.USER_RESPONSE: [
        ("session_id", _DELETE),
        ("step_id", _DELETE),
        ("step_id", _bad_id),
        ("content", _DELETE),
        ("content", _not_object),
        ("content.confirmed", _not_bool),
    ],
    ev.USER_ACK: [
        ("content", _DELETE),
        ("content", _not_object),
        ("content.last_seq", _bad_seq),
        ("session_id", _bad_id),
    ],
    ev.USER_RECONNECT: [
        ("session_id", _DELETE),
        ("content", _DELETE),
        ("content.resume_token", _DELETE),
        ("content.resume_token", st.just("") | _not_string),
        ("content.last_seq", _bad_seq),
    ],
    ev.USER_RECONNECT_WITH_STATE: [
        ("content", _not_object),
        ("content.state", _DELETE),
        ("content.state", st.just("") | _not_string),
    ],
}

# Bases for mutation: the canonical shape of each event, with every field a
# mutation may touch present (so "break X" always has an X to break).
_MUTATION_BASES: dict[str, st.SearchStrategy[dict]] = {
    **CLIENT_FRAME_STRATEGIES,
    ev.USER_RESPONSE: _frame(
        ev.USER_RESPONSE,
        {"session_id": _ids(), "step_id": _ids(), "content": st.fixed_dictionaries({"confirmed": st.booleans()})},
    ),
    ev.USER_ACK: _frame(ev.USER_ACK, {"content": st.fixed_dictionaries({"last_seq": _seqs})}),
    ev.USER_RECONNECT_WITH_STATE: _frame(
        ev.USER_RECONNECT_WITH_STATE, {"content": st.fixed_dictionaries({"state": st.text(min_size=1)})}
    ),
}


def _mutate(frame: dict, path: str, value: object) -> dict:
    frame = copy.deepcopy(frame)
    *parents, leaf = path.split(".")
    target = frame
    for key in parents:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    if value is _DELETE:
        target.pop(leaf, None)
    else:
        target[leaf] = value
    return frame


def invalid_client_frames(events: frozenset[str] | set[str] | None = None) -> st.SearchStrategy[tuple[dict, str]]:
    """``(frame, field)``: a frame broken in exactly one field, and that field's path."""
    names = sorted(ev.CLIENT_EVENTS if events is None else events)
    options = []
    for name in names:
        for path, replacement in _MUTATIONS[name]:
            values = st.just(_DELETE) if replacement is _DELETE else replacement
            options.append(
                st.builds(
                    lambda frame, value, path=path: (_mutate(frame, path, value), path),
                    _MUTATION_BASES[name],
                    values,
                )
            )
    return st.one_of(options)
