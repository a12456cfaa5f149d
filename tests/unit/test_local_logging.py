"""make dev: uvicorn's own log lines (errors, ASGI tracebacks) are JSON like the app's."""

from __future__ import annotations

import io
import json
import logging

import uvicorn  # noqa: F401 - registers the uvicorn loggers, as `make dev` does before configuring

from llm_gateway.observability import logger
from local.stack import json_uvicorn_logs


def test_uvicorn_errors_and_tracebacks_go_through_the_json_logger():
    json_uvicorn_logs()
    uvicorn_error = logging.getLogger("uvicorn.error")
    assert not uvicorn_error.handlers and uvicorn_error.propagate
    (handler,) = logging.getLogger("uvicorn").handlers
    assert handler is logger.registered_handler  # the app's handler and JSON formatter
    # Read what the handler writes (its stream was bound when the app's logger was built).
    out = io.StringIO()
    previous = handler.setStream(out)
    try:
        try:
            raise RuntimeError("boom in a route")
        except RuntimeError:
            uvicorn_error.exception("Exception in ASGI application")
        uvicorn_error.info("not at the configured level")
    finally:
        handler.setStream(previous)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    (line,) = lines  # the INFO line is below uvicorn's configured level
    assert line["message"] == "Exception in ASGI application" and line["level"] == "ERROR" and line["service"]
    assert "RuntimeError: boom in a route" in line["exception"]
