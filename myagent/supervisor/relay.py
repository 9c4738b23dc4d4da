"""The hot path: a sandbox's event and message frames in, session events out.

An event frame's body was built by the sandbox's translator; the front checks
it (:func:`~myagent.protocol.envelope.check_event_body`, which hands back its
canonical bytes) and frames it with the fields only the front decides
(session, seq, event id, connection id) without building an envelope object.
What a sandbox may say at all is Placement's call.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import orjson

from myagent.protocol.envelope import check_event_body
from myagent.protocol.events import TURN_EVENTS
from myagent.wire import ops

if TYPE_CHECKING:
    from myagent.supervisor.placement import Placement
    from myagent.supervisor.sandboxes import Sandbox
    from myagent.supervisor.turns import Turns

log = logging.getLogger("myagent.supervisor.relay")

_TURN_EVENTS = {name.encode(): name for name in TURN_EVENTS}


class Relay:
    def __init__(self, placement: "Placement", turns: "Turns", max_size: int) -> None:
        self.placement = placement
        self.turns = turns
        self.max_size = max_size

    def on_data(self, sandbox: "Sandbox", body: bytes) -> None:
        if len(body) > self.max_size:  # parsing it would cost every user the front's time
            self.placement.offence(sandbox, "event over --sandbox-max-event-size")
            return
        kind = body[0] if body else None
        if kind == ops.KIND_EVENT:
            self._event(sandbox, body)
        elif kind == ops.KIND_MESSAGE:
            self._message(sandbox, body)
        else:
            self.placement.offence(sandbox, "unknown frame kind")

    def _event(self, sandbox: "Sandbox", frame: bytes) -> None:
        parts = ops.split_ids(frame, 3)
        if parts is None:
            self.placement.offence(sandbox, "malformed event frame")
            return
        sid, turn_id, name, payload = parts
        session = self.placement.admit(sandbox, sid, turn_id)
        if session is None:
            return
        event = _TURN_EVENTS.get(name)
        checked = check_event_body(payload, session.turn.id) if event is not None else None  # type: ignore[union-attr]
        if checked is None:
            self.placement.offence(sandbox, "malformed event")
            return
        session.deliver(name, checked[1])
        self.turns.on_event(session, event, checked[0])  # type: ignore[arg-type]

    def _message(self, sandbox: "Sandbox", body: bytes) -> None:
        parts = ops.split_ids(body, 2)
        if parts is None:
            self.placement.offence(sandbox, "malformed message frame")
            return
        session = self.placement.admit(sandbox, parts[0], parts[1])
        if session is None:
            return
        try:
            valid = type(orjson.loads(parts[2])) is dict
        except orjson.JSONDecodeError:
            valid = False
        if not valid:  # it would poison every later restore of this session
            self.placement.offence(sandbox, "malformed history message")
            return
        session.add_history(parts[2].decode())
