"""Log keys are per request and per invocation, never process-wide (observability.py)."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import uuid

import pytest

from llm_gateway.observability import logger, per_invocation_logging, request_log_keys
from local.poller import LambdaContext


@pytest.fixture
def log_lines():
    handler = logger.registered_handler
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        handler.setStream(previous)


def test_concurrent_requests_each_log_their_own_correlation_id(log_lines):
    ids = [uuid.uuid4().hex for _ in range(16)]

    async def request(request_id: str) -> None:
        request_log_keys(correlation_id=request_id)
        await asyncio.sleep(0.01)  # every request has set its id before any logs
        logger.info("in the task", extra={"expect": request_id})
        await asyncio.to_thread(logger.info, "in a worker thread", extra={"expect": request_id})

    async def serve() -> None:
        await asyncio.gather(*(asyncio.create_task(request(i)) for i in ids))

    asyncio.run(serve())
    lines = log_lines()
    assert len(lines) == 32
    assert all(line["correlation_id"] == line["expect"] for line in lines)
    assert sorted({line["correlation_id"] for line in lines}) == sorted(ids)


def test_worker_context_keys_stay_with_the_invocation(log_lines):
    inside = threading.Event()
    api_logged = threading.Event()

    @per_invocation_logging
    def handler(event, context):
        logger.info("worker line")
        inside.set()
        api_logged.wait(5)  # an API line is written while the invocation is still running
        logger.info("worker line, later")
        return {}

    context = LambdaContext("WorkerFunction", 30)
    worker = threading.Thread(target=handler, args=({"Records": []}, context))
    worker.start()
    assert inside.wait(5)
    logger.info("api line")
    api_logged.set()
    worker.join(5)
    logger.info("after the invocation")

    lines = {line["message"]: line for line in log_lines()}
    for message in ("worker line", "worker line, later"):
        assert lines[message]["function_name"] == "WorkerFunction"
        assert lines[message]["function_request_id"] == context.aws_request_id
        assert lines[message]["correlation_id"] == context.aws_request_id
        assert "cold_start" in lines[message]
    for message in ("api line", "after the invocation"):
        assert "function_name" not in lines[message] and "correlation_id" not in lines[message]
