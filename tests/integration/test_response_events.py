"""Persisted stream events on DynamoDB (moto) and ``GET /v1/responses/{id}?stream=true&starting_after=N``."""

from __future__ import annotations

import json
import threading
import time

import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from llm_gateway.responses.event_log import DynamoEventLog, EventFollower, EventWriter
from llm_gateway.responses.store import StoredResponse
from tests.integration.conftest import OTHER_KEY, count_calls

pytestmark = pytest.mark.integration

EVENTS = TypeAdapter(ResponseStreamEvent)


def sse_events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def delta(seq: int, text: str) -> dict:
    return {
        "type": "response.output_text.delta",
        "sequence_number": seq,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": text,
        "logprobs": [],
    }


def test_200_events_cost_20_writes_and_a_reader_from_50_gets_51_to_199_once_in_order(gateway):
    client, table = gateway.services.conversations.client, gateway.aws.res.table_name
    log = DynamoEventLog(table, client)
    writes = count_calls(client, ("PutItem",))
    writer = EventWriter(log, "tenant-a", "resp_x", batch_size=10)
    for seq in range(199):
        writer.add([delta(seq, f"w{seq} ")])
    writer.add([{"type": "response.completed", "sequence_number": 199, "response": {}}])
    assert writes.attempted == {"PutItem": 20}

    reads = count_calls(client, ("Query",))
    reader = EventFollower(log, "tenant-a", "resp_x", 50, lambda: None)
    got = reader.poll()
    assert reader.done and [e["sequence_number"] for e in got] == list(range(51, 200))
    assert reads.attempted == {"Query": 2}  # the batches from 51 on, and the batch holding 51
    assert EventFollower(log, "tenant-b", "resp_x", -1, lambda: None).poll() == []  # tenant-scoped


def put_background(gateway, status: str = "in_progress") -> str:
    rid = "resp_bg_" + str(time.monotonic_ns())
    response = {"id": rid, "object": "response", "status": status, "background": True, "output": []}
    gateway.services.responses.store.put(
        StoredResponse("tenant-a", rid, int(time.time()), response, input_items=[], messages=[])
    )
    return rid


def test_get_stream_replays_the_persisted_events_then_follows_live_ones_to_the_terminal_one(gateway):
    rid = put_background(gateway)
    log = gateway.services.responses.events
    writer = EventWriter(log, "tenant-a", rid, batch_size=10, flush_seconds=0.05)
    for seq in range(30):
        writer.add([delta(seq, f"w{seq} ")])

    def produce() -> None:
        time.sleep(0.3)  # the reader is following by now
        for seq in range(30, 60):
            writer.add([delta(seq, f"w{seq} ")])
            time.sleep(0.005)
        writer.add([{"type": "response.completed", "sequence_number": 60, "response": {"id": rid}}])

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        resp = gateway.get(f"/v1/responses/{rid}", params={"stream": "true", "starting_after": 14})
    finally:
        producer.join()
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    assert [e["sequence_number"] for e in events] == list(range(15, 61))
    assert events[-1]["type"] == "response.completed"
    assert resp.text.startswith("event: response.output_text.delta\n")


def test_get_stream_of_a_foreground_response_replays_its_stored_sequence_with_the_sdk_types(gateway):
    created = gateway.post("/v1/responses", {"model": "default", "input": "Hi"}).json()
    resp = gateway.get(f"/v1/responses/{created['id']}", params={"stream": "true"})
    raw = sse_events(resp.text)
    events = [EVENTS.validate_python(e) for e in raw]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed" and raw[-1]["response"] == created
    later = sse_events(gateway.get(f"/v1/responses/{created['id']}?stream=true&starting_after=4").text)
    assert [e["sequence_number"] for e in later] == list(range(5, len(events)))


def test_get_stream_errors_are_json_before_anything_is_streamed(gateway):
    created = gateway.post("/v1/responses", {"model": "default", "input": "Hi"}).json()
    unknown = gateway.get("/v1/responses/resp_nope", params={"stream": "true"})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "response_id"
    other = gateway.get(f"/v1/responses/{created['id']}", key=OTHER_KEY, params={"stream": "true"})
    assert other.status_code == 404
    for params in ({"starting_after": 3}, {"stream": "true", "starting_after": -1}):
        bad = gateway.get(f"/v1/responses/{created['id']}", params=params)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "starting_after", bad.text


def test_an_idle_follower_sends_keep_alive_comments_until_events_arrive(gateway, monkeypatch):
    from routes.responses import ReplayStreamResponse

    monkeypatch.setattr(ReplayStreamResponse, "KEEPALIVE_SECONDS", 0.1)
    rid = put_background(gateway)
    writer = EventWriter(gateway.services.responses.events, "tenant-a", rid, batch_size=10)
    writer.next = 2  # events 0 and 1 are the stored response's own

    def produce() -> None:
        time.sleep(0.6)
        writer.add([{"type": "response.completed", "sequence_number": 2, "response": {"id": rid}}])

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        resp = gateway.get(f"/v1/responses/{rid}", params={"stream": "true"})
    finally:
        producer.join()
    assert ": keep-alive\n\n" in resp.text
    assert [e["type"] for e in sse_events(resp.text)] == ["response.created", "response.queued", "response.completed"]
