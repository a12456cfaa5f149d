"""Background responses (responses/background.py) over fakes: submit, run, cancel, failures."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from llm_gateway.chat.service import TurnReport
from llm_gateway.deadline import Deadline
from llm_gateway.errors import GatewayError, IdempotencyConflict, InvalidRequest, NotCancellable, QueueUnavailable
from llm_gateway.providers.base import UpstreamHTTPError
from llm_gateway.responses.background import BackgroundResponses
from llm_gateway.responses.models import CreateResponse
from tests.fakes import InMemoryBackgroundQueue, InMemoryEventLog
from tests.unit.test_responses import Setup

EVENTS = TypeAdapter(ResponseStreamEvent)


class Background(Setup):
    def __init__(self, script: list[Any] | None = None, queue: InMemoryBackgroundQueue | None = None) -> None:
        super().__init__(script)
        self.log = InMemoryEventLog()
        self.service.events = self.log
        self.queue = queue or InMemoryBackgroundQueue()
        self.background = BackgroundResponses(self.service, self.log, self.queue)

    def submit(self, key: str | None = None, **body: Any) -> dict[str, Any]:
        request = CreateResponse.model_validate({"model": "default", "background": True, **body})
        return self.background.submit("t1", request, key)[0]

    def run(self, response_id: str, *, last: bool = False) -> str:
        message = next(m for m in self.queue.messages if m["id"] == response_id)
        return self.background.run(
            "t1", response_id, message["body"], Deadline.after(10), TurnReport(), last_attempt=last
        )

    def events(self, response_id: str, after: int | None = None) -> list[dict[str, Any]]:
        replay = self.service.replay("t1", response_id, after)
        out: list[dict[str, Any]] = []
        while not replay.done:
            out += replay.poll()
            if not out:
                replay._checked = -10.0  # type: ignore[union-attr]  # idle: look at the status now
        return out


def test_submit_stores_it_queued_and_enqueues_one_message_with_no_upstream_call_and_no_event_write():
    b = Background(["Hello background world"])
    queued = b.submit(input="hi")
    Response.model_validate(queued)
    assert queued["status"] == "queued" and queued["background"] is True and queued["output"] == []
    assert b.provider.bodies == [] and b.log.writes == 0
    assert b.queue.messages == [
        {"tenant": "t1", "id": queued["id"], "body": b.queue.messages[0]["body"], "group": queued["id"]}
    ]
    assert b.queue.messages[0]["body"]["input"] == "hi"
    assert b.service.get("t1", queued["id"]) == queued


def test_a_run_completes_with_the_foreground_output_and_persists_its_events_in_batches():
    b = Background(
        [
            "one two three four five six seven eight nine ten eleven",
            "one two three four five six seven eight nine ten eleven",
        ]
    )
    foreground = b.create(input="x")
    queued = b.submit(input="x")
    assert b.run(queued["id"]) == "completed"
    done = b.service.get("t1", queued["id"])
    assert done["status"] == "completed" and done["background"] is True
    assert [p["text"] for i in done["output"] for p in i["content"]] == [
        p["text"] for i in foreground["output"] for p in i["content"]
    ]
    events = b.events(queued["id"])
    for event in events:
        EVENTS.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:3]] == ["response.created", "response.queued", "response.in_progress"]
    assert events[0]["response"]["status"] == "queued" and events[-1]["response"] == done
    assert len(events) == 9 + 11 and b.log.writes == 2  # 20 events: batches 2-9 and 10-19 (0-1 derived)
    assert b.run(queued["id"]) == "completed"  # a redelivery after completion does nothing
    assert len(b.provider.bodies) == 2


def test_a_cancelled_queued_response_never_runs():
    b = Background(["never"])
    queued = b.submit(input="x")
    cancelled = b.background.cancel("t1", queued["id"])
    assert cancelled["status"] == "cancelled"
    assert b.background.cancel("t1", queued["id"]) == cancelled
    assert b.run(queued["id"]) == "cancelled"
    assert b.provider.bodies == [] and b.log.writes == 0
    assert [e["type"] for e in b.events(queued["id"])] == ["response.created", "response.queued"]


def test_a_running_response_cancelled_stops_at_the_next_batch_and_stores_nothing_completed():
    b = Background([" ".join(f"w{i}" for i in range(50))])
    queued = b.submit(input="x")
    append = b.log.append

    def cancel_after_first_batch(tenant: str, response_id: str, batch: Any) -> None:
        append(tenant, response_id, batch)
        if b.log.writes == 1:
            b.background.cancel("t1", queued["id"])

    b.log.append = cancel_after_first_batch  # type: ignore[method-assign]
    assert b.run(queued["id"]) == "cancelled"
    stored = b.service.get("t1", queued["id"])
    assert stored["status"] == "cancelled" and stored["output"] == []
    events = b.events(queued["id"])
    assert events[-1]["sequence_number"] < 30 and events[-1]["type"] == "response.output_text.delta"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_cancel_of_a_finished_response_is_409_and_of_a_foreground_one_400():
    b = Background(["a", "b"])
    queued = b.submit(input="x")
    b.run(queued["id"])
    with pytest.raises(NotCancellable):
        b.background.cancel("t1", queued["id"])
    foreground = b.create(input="y")
    with pytest.raises(InvalidRequest):
        b.background.cancel("t1", foreground["id"])


def test_a_permanent_upstream_refusal_fails_it_with_a_response_failed_event():
    b = Background([UpstreamHTTPError(400, "bad")])
    queued = b.submit(input="x")
    assert b.run(queued["id"]) == "failed"
    stored = b.service.get("t1", queued["id"])
    Response.model_validate(stored)
    assert stored["status"] == "failed" and stored["error"]["code"] == "server_error"
    assert stored["error"]["type"] == "invalid_request_error"  # the upstream's refusal, as a synchronous 400 says
    events = b.events(queued["id"])
    assert [e["type"] for e in events] == ["response.created", "response.queued", "response.failed"]
    assert events[-1]["response"] == stored


def test_a_retryable_failure_is_raised_for_redelivery_and_fails_it_on_the_last_delivery():
    b = Background([UpstreamHTTPError(503, "down"), UpstreamHTTPError(503, "down"), "fine"])
    queued = b.submit(input="x")
    with pytest.raises(GatewayError) as info:
        b.run(queued["id"])
    assert info.value.retryable
    assert b.service.get("t1", queued["id"])["status"] == "in_progress" and b.log.writes == 0
    assert b.run(queued["id"], last=True) == "failed"
    failed = b.service.get("t1", queued["id"])
    Response.model_validate(failed)
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert failed["error"]["type"] == "service_unavailable"


def test_a_stream_cut_after_events_were_persisted_fails_it_for_good():
    b = Background([{"text": " ".join(f"w{i}" for i in range(30)), "cut": 20}])
    queued = b.submit(input="x")
    assert b.run(queued["id"]) == "failed"
    events = b.events(queued["id"])
    assert events[-1]["type"] == "response.failed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert b.service.get("t1", queued["id"])["status"] == "failed"


def test_a_delivery_that_finds_its_events_written_by_a_crashed_one_fails_it():
    b = Background([" ".join(f"w{i}" for i in range(30)), " ".join(f"w{i}" for i in range(30))])
    queued = b.submit(input="x")
    crash = b.log.append
    calls = []

    def crash_after_two(tenant: str, response_id: str, batch: Any) -> None:
        crash(tenant, response_id, batch)
        calls.append(batch.first)
        if len(calls) == 2:
            raise SystemExit("worker killed")

    b.log.append = crash_after_two  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        b.run(queued["id"])
    b.log.append = crash  # type: ignore[method-assign]
    assert b.run(queued["id"]) == "failed"  # its events 2.. exist: the stream cannot be produced again
    assert b.service.get("t1", queued["id"])["status"] == "failed"


def test_idempotency_key_replays_the_same_response_and_a_new_body_is_a_conflict():
    b = Background()
    first = b.submit("k1", input="x")
    assert b.submit("k1", input="x")["id"] == first["id"]
    assert len(b.queue.messages) == 1
    with pytest.raises(IdempotencyConflict):
        b.submit("k1", input="other")


def test_a_queue_refusal_without_a_key_fails_the_response_and_is_a_503():
    b = Background(queue=InMemoryBackgroundQueue(fail_sends=1))
    with pytest.raises(QueueUnavailable):
        b.submit(input="x")
    (record,) = b.store.items.values()
    assert record.response["status"] == "failed"


def test_background_with_store_false_is_a_400_naming_background():
    b = Background()
    with pytest.raises(InvalidRequest) as info:
        b.submit(input="x", store=False)
    assert info.value.param == "background" and b.queue.messages == []


def test_a_response_the_jobs_path_gave_up_on_is_failed_and_its_followers_end():
    b = Background(["x"])
    queued = b.submit(input="x")
    assert b.background.abandon("t1", queued["id"], "The worker gave up after 4 deliveries.")
    stored = b.service.get("t1", queued["id"])
    Response.model_validate(stored)  # its error is OpenAI's ResponseError: a code from the Responses list
    assert stored["status"] == "failed" and stored["error"]["code"] == "server_error"
    assert stored["error"]["message"] == "The worker gave up after 4 deliveries."
    events = b.events(queued["id"])  # no events persisted: the stored response's end follows the opening
    assert [e["type"] for e in events] == ["response.created", "response.queued", "response.failed"]
    assert [e["sequence_number"] for e in events] == [0, 1, 2] and events[-1]["response"] == stored
    assert not b.background.abandon("t1", queued["id"], "again")  # ended: left as it is
    assert b.run(queued["id"]) == "failed" and b.provider.bodies == []


def test_a_redelivery_after_a_crash_between_the_conversation_commit_and_the_response_write_adds_no_second_turn():
    from tests.fakes import InMemoryConversationStore

    b = Background(["first reply", "second reply"])
    conversations = InMemoryConversationStore()
    b.chat.store = conversations
    conversation = conversations.create("t1")
    queued = b.submit(input="x", conversation=conversation.id)
    put = b.store.put

    def crash_on_the_final_write(record: Any, *, replacing: tuple[str, ...] = ()) -> bool:
        if record.response.get("status") == "completed":
            raise SystemExit("worker killed")
        return put(record, replacing=replacing)

    b.store.put = crash_on_the_final_write  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        b.run(queued["id"])
    b.store.put = put  # type: ignore[method-assign]
    assert b.run(queued["id"]) == "completed"  # the redelivery finds the turn committed: its reply stands
    assert len(b.provider.bodies) == 1  # and nothing was called again
    stored = b.service.get("t1", queued["id"])
    Response.model_validate(stored)
    assert stored["status"] == "completed" and stored["error"] is None
    assert [p["text"] for i in stored["output"] for p in i["content"]] == ["first reply"]
    assert stored["usage"]["output_tokens"] > 0
    messages, _ = conversations.messages("t1", conversation.id, limit=100, after=None)
    assert [(m.body["role"], m.body.get("content")) for m in messages] == [("user", "x"), ("assistant", "first reply")]
    events = b.events(queued["id"])  # the crashed run persisted none (a short reply): all of them now
    for event in events:
        EVENTS.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:3]] == ["response.created", "response.queued", "response.in_progress"]
    assert events[-1]["type"] == "response.completed" and events[-1]["response"] == stored
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "first reply"
    assert b.run(queued["id"]) == "completed" and len(b.provider.bodies) == 1


def test_a_redelivery_after_the_commit_continues_the_events_the_crashed_run_persisted():
    from tests.fakes import InMemoryConversationStore

    words = " ".join(f"w{i}" for i in range(30))
    b = Background([words, "never called"])
    conversations = InMemoryConversationStore()
    b.chat.store = conversations
    conversation = conversations.create("t1")
    queued = b.submit(input="x", conversation=conversation.id)
    put = b.store.put

    def crash_on_the_final_write(record: Any, *, replacing: tuple[str, ...] = ()) -> bool:
        if record.response.get("status") == "completed":
            raise SystemExit("worker killed")
        return put(record, replacing=replacing)

    b.store.put = crash_on_the_final_write  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        b.run(queued["id"])
    b.store.put = put  # type: ignore[method-assign]
    batches = b.log.batches[("t1", queued["id"])]  # what a follower may have read before the redelivery
    logged = [e for first in sorted(batches) for e in batches[first].events]
    assert logged and logged[-1]["type"] != "response.completed"
    assert b.run(queued["id"]) == "completed" and len(b.provider.bodies) == 1
    stored = b.service.get("t1", queued["id"])
    assert [p["text"] for i in stored["output"] for p in i["content"]] == [words]
    events = b.events(queued["id"])
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[2:-1] == logged  # the persisted ones stand, then the final event
    assert events[-1]["type"] == "response.completed" and events[-1]["response"] == stored
    announced = [e["item"]["id"] for e in logged if e["type"] == "response.output_item.added"]
    assert announced == [i["id"] for i in stored["output"]]
    messages, _ = conversations.messages("t1", conversation.id, limit=100, after=None)
    assert [m.body["role"] for m in messages] == ["user", "assistant"]
