"""myagent.logs: JSON lines with the ids of what a line is about; one logger set up alone."""

from __future__ import annotations

import io
import json
import logging

from myagent import logs


def test_json_lines_carry_the_turn_and_trace_ids_given_as_extras():
    record = logging.LogRecord("myagent.supervisor.turns", logging.DEBUG, __file__, 1, "turn %s ended", ("t1",),
                               None)
    record.__dict__.update(session_id="s1", turn_id="t1", trace_id="a" * 32)
    doc = json.loads(logs.JsonFormatter().format(record))
    assert doc["msg"] == "turn t1 ended" and doc["level"] == "debug"
    assert (doc["session_id"], doc["turn_id"], doc["trace_id"]) == ("s1", "t1", "a" * 32)
    assert "span_id" not in doc  # absent extras are left out, not null


def test_setup_logger_formats_one_logger_and_leaves_the_root_alone(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root_handlers = list(logging.getLogger().handlers)

    class Context(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.trace_id = "b" * 32
            return True

    logs.setup_logger("myagent.test.logs", "info", "json", Context())
    logger = logging.getLogger("myagent.test.logs")
    try:
        logger.debug("hidden")
        logger.info("shown")
        assert logging.getLogger().handlers == root_handlers and not logger.propagate
    finally:
        logger.handlers.clear()
        logger.propagate = True
    [line] = stream.getvalue().splitlines()
    assert json.loads(line)["msg"] == "shown" and json.loads(line)["trace_id"] == "b" * 32
