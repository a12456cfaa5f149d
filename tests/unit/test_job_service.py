"""JobService.submit and the job worker over the shared in-memory fakes: every request validated before
anything is written or enqueued; an Idempotency-Key replay returns the same jobs, a different body under
the same key is a conflict; the worker fails a job at once on a permanent error and leaves it for
redelivery on a retryable one (GatewayError.permanent decides)."""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from llm_gateway import errors
from llm_gateway.chat.service import ChatService
from llm_gateway.deadline import Deadline
from llm_gateway.errors import GatewayError, IdempotencyConflict, InvalidRequest, NotFound, QueueUnavailable
from llm_gateway.jobs.messages import JobMessage
from llm_gateway.jobs.service import JobService
from llm_gateway.jobs.store import FAILED, QUEUED, SUCCEEDED
from llm_gateway.jobs.worker import JobMetrics, JobWorker, RetryLater
from llm_gateway.providers.base import UpstreamHTTPError
from llm_gateway.settings import Settings
from llm_gateway.upstream.aliases import Deployment, ModelAlias, Routing
from llm_gateway.upstream.retry import RetryBudget, RetryPolicy
from llm_gateway.upstream.router import Router
from tests.fakes import (
    FakeQueue,
    InMemoryConversationStore,
    InMemoryJobStore,
    ScriptedProvider,
    in_memory_idempotency,
)

TENANT = "t1"
QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/jobs.fifo"


class Jobs:
    def __init__(self, script: list[Any] | None = None) -> None:
        self.provider = ScriptedProvider("d1", script)
        policy = RetryPolicy(max_attempts=1, backoff_base=0.01, backoff_max=0.01, budget=RetryBudget(1.0, 100.0))
        router = Router({"d1": self.provider}, policy, connect_timeout=1, read_timeout=5)
        deployment = Deployment(name="d1", model="m", base_url="http://x.test/v1")
        routing = Routing({"default": ModelAlias(name="default", deployments=[deployment])})
        self.settings = Settings(job_busy_wait_seconds=0)
        self.conversations = InMemoryConversationStore()
        self.chat = ChatService(self.conversations, routing, router, self.settings)
        self.store = InMemoryJobStore()
        self.queue = FakeQueue()
        self.service = JobService(
            self.settings, self.store, self.conversations, self.chat.validate, lambda: self.queue, QUEUE_URL
        )

    def submit(self, body: Any, key: str | None = None, tenant: str = TENANT) -> Any:
        return self.service.submit(tenant, body, key)

    def nothing_written(self) -> bool:
        return self.store.writes == 0 and self.store.keys == {} and self.queue.sent == []


def chat(text: str = "Hi", **extra: Any) -> dict[str, Any]:
    return {"model": "default", "messages": [{"role": "user", "content": text}], **extra}


# ---- JobService.submit ---------------------------------------------------------------------


def test_a_submitted_job_is_stored_queued_and_enqueued_once():
    j = Jobs()
    submission = j.submit(chat())
    [job] = submission.jobs
    assert job["status"] == QUEUED and not submission.replayed
    assert j.store.get(TENANT, job["id"]).status == QUEUED
    [entry] = j.queue.sent
    assert entry["MessageDeduplicationId"] == job["id"] and json.loads(entry["MessageBody"])["job_id"] == job["id"]


BAD_BODIES = {
    "not an object": ([chat()], InvalidRequest, None),
    "an unknown field": ({"requests": [chat()], "extra": 1}, InvalidRequest, "extra"),
    "an empty batch": ({"requests": []}, InvalidRequest, "requests"),
    "a stream": (chat(stream=True), InvalidRequest, "stream"),
    "an unknown model": (chat(model="nope"), NotFound, "model"),
    "a bad request late in a batch": (
        {"requests": [chat("a"), chat("b"), chat("c", temperature=9)]},
        InvalidRequest,
        "requests[2].temperature",
    ),
    "an unknown model late in a batch": (
        {"requests": [chat("a"), chat("b", model="nope")]},
        NotFound,
        "requests[1].model",
    ),
    "another tenant's conversation": (chat(conversation_id="OTHER"), NotFound, "conversation_id"),
}


@pytest.mark.parametrize("with_key", [False, True], ids=["no-key", "idempotency-key"])
@pytest.mark.parametrize("body, error, param", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_bad_submission_writes_nothing_and_enqueues_nothing(body, error, param, with_key):
    j = Jobs()
    if isinstance(body, dict) and body.get("conversation_id") == "OTHER":
        body = {**body, "conversation_id": j.conversations.create("someone-else").id}
    writes = j.conversations.writes
    with pytest.raises(error) as raised:
        j.submit(body, "key-1" if with_key else None)
    assert raised.value.param == param
    assert j.nothing_written() and j.conversations.writes == writes


def test_a_bad_idempotency_key_is_refused_before_anything_is_written():
    j = Jobs()
    with pytest.raises(InvalidRequest) as raised:
        j.submit(chat(), "has a space")
    assert raised.value.param == "Idempotency-Key" and j.nothing_written()


@pytest.mark.parametrize("body", [chat(), {"requests": [chat("a"), chat("b")]}], ids=["one", "batch"])
def test_an_idempotency_key_replay_returns_the_same_jobs_and_enqueues_nothing_more(body):
    j = Jobs()
    first = j.submit(body, "key-1")
    sent = list(j.queue.sent)
    again = j.submit(json.loads(json.dumps(body)), "key-1")  # an equal body, not the same object
    assert again.replayed and not first.replayed
    assert [job["id"] for job in again.jobs] == [job["id"] for job in first.jobs]
    assert again.jobs == first.jobs
    assert j.queue.sent == sent
    assert len(j.store.jobs) == len(first.jobs)


def test_a_replay_shows_the_jobs_as_they_are_now():
    j = Jobs()
    [job] = j.submit(chat(), "key-1").jobs
    j.store.fail(j.store.get(TENANT, job["id"]), {"message": "m", "type": "t", "code": "c", "param": None})
    [replayed] = j.submit(chat(), "key-1").jobs
    assert replayed["id"] == job["id"] and replayed["status"] == FAILED


@pytest.mark.parametrize(
    "second",
    [chat("something else"), {"requests": [chat(), chat()]}],
    ids=["different body", "different job count"],
)
def test_the_same_idempotency_key_with_a_different_body_is_a_conflict_and_writes_nothing(second):
    j = Jobs()
    j.submit(chat(), "key-1")
    writes, sent, jobs = j.store.writes, list(j.queue.sent), dict(j.store.jobs)
    with pytest.raises(IdempotencyConflict):
        j.submit(second, "key-1")
    assert j.store.writes == writes and j.queue.sent == sent and j.store.jobs == jobs


def test_the_same_idempotency_key_of_another_tenant_is_not_a_replay():
    j = Jobs()
    [mine] = j.submit(chat(), "key-1").jobs
    theirs = j.submit(chat(), "key-1", tenant="t2")
    assert not theirs.replayed and theirs.jobs[0]["id"] != mine["id"]


def test_a_queue_outage_without_a_key_marks_the_unsent_jobs_failed():
    j = Jobs()
    j.queue.refuse = OSError("connection reset")
    with pytest.raises(QueueUnavailable):
        j.submit(chat())
    [job] = j.store.jobs.values()
    assert job.status == FAILED and job.error["code"] == "enqueue_failed"


# ---- the worker's failure classification -----------------------------------------------------


class RaisingChat:
    """A chat turn that fails with ``error`` (the worker only calls ``complete``)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    def complete(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        raise self.error


def record(message: JobMessage, receive_count: int = 1) -> SQSRecord:
    return SQSRecord(
        {
            "messageId": f"m-{message.job_id}-{receive_count}",
            "body": message.body(),
            "attributes": {
                "ApproximateReceiveCount": str(receive_count),
                "SentTimestamp": "0",
                "MessageGroupId": message.group_id(),
            },
            "messageAttributes": {},
            "eventSource": "aws:sqs",
        }
    )


class LambdaContext:
    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def job_worker(chat: Any, store: InMemoryJobStore, settings: Settings) -> JobWorker:
    worker = JobWorker(chat, store, settings, in_memory_idempotency())
    worker.idempotency.register_lambda_context(LambdaContext())
    return worker


class Worker:
    def __init__(self, chat: Any, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.store = InMemoryJobStore()
        self.worker = job_worker(chat, self.store, self.settings)

    def run(self, job_id: str = "job_" + "1" * 32, receive_count: int = 1) -> tuple[Any, Any]:
        """Process one record; (the record's outcome or the exception it raised, the job after it)."""
        message = JobMessage(job_id=job_id, tenant_id=TENANT, request=chat(), submitted_at=1)
        try:
            outcome: Any = self.worker.process_record(record(message, receive_count), Deadline.after(10), JobMetrics())
        except RetryLater as exc:
            outcome = exc
        return outcome, self.store.get(TENANT, job_id)


def gateway_errors() -> list[GatewayError]:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, GatewayError)]
    return [c("it failed") for c in sorted(classes, key=lambda c: c.__name__)]


@pytest.mark.parametrize("error", gateway_errors(), ids=lambda e: type(e).__name__)
def test_the_worker_fails_a_job_at_once_on_a_permanent_error_and_retries_a_retryable_one(error):
    w = Worker(RaisingChat(error))
    outcome, job = w.run()
    if error.permanent:
        assert outcome == {"status": "failed"}
        assert job.status == FAILED and job.error["code"] == errors.to_http(error).body["error"]["code"]
    else:
        assert isinstance(outcome, RetryLater)  # the record fails: SQS redelivers it
        assert job.status == QUEUED and job.last_error["code"] == errors.to_http(error).body["error"]["code"]
        assert job.error is None


def test_one_raise_can_say_a_retryable_class_is_permanent():
    outcome, job = Worker(RaisingChat(errors.UpstreamError("bad reply", permanent=True))).run()
    assert outcome == {"status": "failed"} and job.status == FAILED


def test_an_unexpected_exception_is_retryable_and_says_nothing_of_itself():
    outcome, job = Worker(RaisingChat(KeyError("secret detail"))).run()
    assert isinstance(outcome, RetryLater) and job.status == QUEUED
    assert job.last_error["code"] == "internal_error" and "secret" not in json.dumps(job.last_error)


def test_a_retryable_failure_on_the_last_delivery_fails_the_job_and_still_fails_the_record():
    w = Worker(RaisingChat(errors.UpstreamUnavailable("down")))
    outcome, job = w.run(receive_count=w.settings.jobs_max_receive_count)
    assert isinstance(outcome, RetryLater)  # so SQS moves the message to the DLQ
    assert job.status == FAILED and job.error["message"].startswith("Gave up after")


@pytest.mark.parametrize(
    "upstream, status",
    [(UpstreamHTTPError(400, "bad request"), FAILED), (UpstreamHTTPError(503, "busy"), QUEUED)],
    ids=["upstream-400-permanent", "upstream-503-retryable"],
)
def test_upstream_failures_through_a_real_chat_turn_are_classified_by_the_error_they_become(upstream, status):
    j = Jobs([upstream])
    outcome, job = Worker(j.chat).run()
    assert job.status == status and len(j.provider.bodies) == 1
    assert (outcome == {"status": "failed"}) == (status == FAILED)


def test_a_redelivered_job_is_acknowledged_without_a_second_call():
    j = Jobs(["done"])
    w = Worker(j.chat)
    outcome, job = w.run()
    assert outcome == {"status": "succeeded"} and job.status == SUCCEEDED
    assert job.result["choices"][0]["message"]["content"] == "done"
    # past the idempotency record (a new container, the record expired), the job's status answers
    w.worker = job_worker(j.chat, w.store, w.settings)
    for worker in (w, w):
        outcome, job = worker.run(receive_count=2)
        assert outcome == {"status": SUCCEEDED} and job.status == SUCCEEDED
    assert len(j.provider.bodies) == 1
