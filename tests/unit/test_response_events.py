"""Persisted stream events (responses/event_log.py) and replayed ones (responses/replay.py), over fakes."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from llm_gateway.errors import NotFound
from llm_gateway.responses.event_log import EventFollower, EventLogConflict, EventWriter, StoredEvents
from llm_gateway.responses.replay import stored_events
from tests.fakes import InMemoryEventLog
from tests.unit.test_responses import Setup

EVENTS = TypeAdapter(ResponseStreamEvent)


def deltas(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"type": "response.output_text.delta", "sequence_number": i, "delta": f"w{i} ", "item_id": "msg_1"}
        for i in range(start, start + n)
    ]


def completed(seq: int) -> dict[str, Any]:
    return {"type": "response.completed", "sequence_number": seq, "response": {"status": "completed"}}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_fast_stream_costs_one_write_per_batch_of_ten_and_the_last_batch_is_terminal():
    log = InMemoryEventLog()
    writer = EventWriter(log, "t1", "resp_1", batch_size=10, flush_seconds=0.5, clock=Clock())
    for event in deltas(199):
        writer.add([event])
    writer.add([completed(199)])
    assert writer.events == 200 and writer.writes == log.writes == 20
    batches = [log.batches[("t1", "resp_1")][k] for k in sorted(log.batches[("t1", "resp_1")])]
    assert [b.first for b in batches] == list(range(0, 200, 10))
    assert all(len(b.events) == 10 for b in batches)
    assert [b.terminal for b in batches] == [False] * 19 + [True]
    writer.close()  # closing twice writes nothing more
    assert log.writes == 20


def test_a_slow_stream_flushes_buffered_events_after_flush_seconds():
    log, clock = InMemoryEventLog(), Clock()
    writer = EventWriter(log, "t1", "resp_1", batch_size=10, flush_seconds=0.5, clock=clock)
    writer.add(deltas(3))
    assert log.writes == 0
    clock.now = 0.6
    writer.add(deltas(1, start=3))
    assert log.writes == 1 and log.batches[("t1", "resp_1")][0].events == deltas(4)


def test_events_out_of_order_are_refused_and_a_second_producer_conflicts():
    log = InMemoryEventLog()
    writer = EventWriter(log, "t1", "resp_1", batch_size=2)
    with pytest.raises(ValueError, match="out of order"):
        writer.add(deltas(1, start=5))
    writer.add(deltas(2))
    other = EventWriter(log, "t1", "resp_1", batch_size=2)
    with pytest.raises(EventLogConflict):
        other.add(deltas(2))


def follower(log: InMemoryEventLog, after: int, final: Any = None, clock: Any = None) -> EventFollower:
    return EventFollower(log, "t1", "resp_1", after, final or (lambda: None), clock=clock or Clock())


def test_a_follower_starting_inside_a_batch_gets_every_later_event_once_in_order_then_follows_live():
    log = InMemoryEventLog()
    writer = EventWriter(log, "t1", "resp_1", batch_size=10, clock=Clock())
    writer.add(deltas(57))  # batches 0-9 … 40-49 written; 50-56 buffered
    reader = follower(log, 45)
    got = reader.poll()
    assert [e["sequence_number"] for e in got] == list(range(46, 50))
    assert reader.poll() == [] and not reader.done
    writer.add(deltas(63, start=57))  # up to 119
    writer.add([completed(120)])
    while not reader.done:
        got += reader.poll()
    assert [e["sequence_number"] for e in got] == list(range(46, 121))
    assert got[-1]["type"] == "response.completed"
    assert reader.poll() == []


def test_a_follower_ahead_of_the_producer_waits_for_its_event():
    log = InMemoryEventLog()
    writer = EventWriter(log, "t1", "resp_1", batch_size=10, clock=Clock())
    writer.add(deltas(20))
    reader = follower(log, 34)
    assert reader.poll() == []
    writer.add(deltas(20, start=20))
    assert [e["sequence_number"] for e in reader.poll()] == list(range(35, 40))


def test_a_response_that_ends_without_a_terminal_batch_ends_its_followers():
    log, clock = InMemoryEventLog(), Clock()
    writer = EventWriter(log, "t1", "resp_1", batch_size=10, clock=clock)
    writer.add(deltas(10))
    ended: list[dict[str, Any]] = []
    reader = follower(log, -1, final=lambda: ended[0] if ended else None, clock=clock)
    assert len(reader.poll()) == 10
    clock.now = 5.0
    assert reader.poll() == [] and not reader.done
    ended.append({"object": "response", "status": "cancelled"})
    clock.now = 10.0
    assert reader.poll() == [] and reader.done


def test_a_background_response_whose_events_expired_replays_its_stored_sequence():
    log, clock = InMemoryEventLog(), Clock()
    setup = Setup(["alpha beta"])
    response = setup.create(input="x")
    reader = follower(log, 3, final=lambda: response, clock=clock)
    clock.now = 5.0
    events = reader.poll()
    assert reader.done and [e["sequence_number"] for e in events] == list(range(4, 9))
    assert events[-1]["type"] == "response.completed"


def test_the_stored_sequence_of_a_response_matches_its_stream_event_for_event():
    setup = Setup(["alpha beta gamma", "alpha beta gamma"])
    streamed = setup.stream(input="x")
    final = streamed[-1]["response"]
    replayed = stored_events(final)
    for event in replayed:
        EVENTS.validate_python(event)

    def shape(events: list[dict[str, Any]]) -> list[str]:
        kinds = [e["type"] for e in events]
        return [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]  # deltas collapse to one

    assert shape(replayed) == shape(streamed)
    assert [e["sequence_number"] for e in replayed] == list(range(len(replayed)))
    text = "".join(e["delta"] for e in replayed if e["type"] == "response.output_text.delta")
    assert text == "alpha beta gamma"
    assert replayed[-1]["response"] == final
    assert {e.get("item_id") for e in replayed if "item_id" in e} == {final["output"][0]["id"]}


def test_the_stored_sequence_of_a_function_call_response():
    setup = Setup([{"message": {"content": None, "tool_calls": [_call()]}, "finish_reason": "tool_calls"}])
    response = setup.create(input="x", tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}])
    replayed = stored_events(response)
    for event in replayed:
        EVENTS.validate_python(event)
    done = next(e for e in replayed if e["type"] == "response.function_call_arguments.done")
    assert done["arguments"] == '{"a": 1}'


def _call() -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}


def test_replay_of_a_stored_foreground_response_and_of_an_unknown_one():
    setup = Setup(["hello there"])
    setup.service.events = InMemoryEventLog()
    response = setup.create(input="x")
    replay = setup.service.replay("t1", response["id"], 2)
    assert isinstance(replay, StoredEvents)
    events = replay.poll()
    assert events[0]["sequence_number"] == 3 and replay.done and replay.poll() == []
    with pytest.raises(NotFound):
        setup.service.replay("t1", "resp_unknown", None)
    with pytest.raises(NotFound):
        setup.service.replay("t2", response["id"], None)  # another tenant's id is unknown
