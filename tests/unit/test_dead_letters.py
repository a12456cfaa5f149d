"""The dead-letter consumer on fakes: a chat job's message marks its job failed; a background
response's message marks the stored response failed (through ``abandon``) and writes no job item.
Either way the message is parked once."""

from __future__ import annotations

from typing import Any

from llm_gateway.jobs.dead_letters import DeadLetterConsumer
from llm_gateway.jobs.messages import JobMessage
from llm_gateway.jobs.store import FAILED, QUEUED, Job
from tests.fakes import InMemoryJobStore

PARKED = "https://sqs.local/parked.fifo"


class ParkedQueue:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        self.sent.append(kwargs)
        return {"MessageId": f"m{len(self.sent)}"}


def event(body: str, message_id: str = "msg-1", group: str = "g1") -> dict[str, Any]:
    record = {
        "messageId": message_id,
        "receiptHandle": "rh",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "MessageGroupId": group, "SentTimestamp": "0"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:dlq.fifo",
        "awsRegion": "us-east-1",
    }
    return {"Records": [record]}


def consumer(jobs: InMemoryJobStore, queue: ParkedQueue, abandoned: list) -> DeadLetterConsumer:
    def abandon(tenant: str, response_id: str, reason: str) -> bool:
        abandoned.append((tenant, response_id, reason))
        return True

    return DeadLetterConsumer(jobs, lambda: queue, PARKED, 4, abandon)


def test_a_dead_lettered_background_response_is_abandoned_not_written_as_a_job() -> None:
    jobs, queue, abandoned = InMemoryJobStore(), ParkedQueue(), []
    body = JobMessage(kind="response", job_id="resp_" + "a" * 32, tenant_id="acme", request={"input": "x"}).body()
    out = consumer(jobs, queue, abandoned).handle(event(body), None)
    assert out == {"batchItemFailures": []}
    ((tenant, response_id, reason),) = abandoned
    assert (tenant, response_id) == ("acme", "resp_" + "a" * 32) and "4 deliveries" in reason
    assert jobs.jobs == {} and jobs.writes == 0
    assert [m["MessageBody"] for m in queue.sent] == [body] and queue.sent[0]["MessageDeduplicationId"] == "msg-1"


def test_a_dead_lettered_chat_job_is_failed_and_nothing_is_abandoned() -> None:
    jobs, queue, abandoned = InMemoryJobStore(), ParkedQueue(), []
    job_id = "job_" + "b" * 32
    jobs.create_all([Job(job_id, "acme", QUEUED, 1, 1)])
    body = JobMessage(job_id=job_id, tenant_id="acme", request={"model": "default", "messages": []}).body()
    out = consumer(jobs, queue, abandoned).handle(event(body), None)
    assert out == {"batchItemFailures": []}
    assert abandoned == []
    job = jobs.get("acme", job_id)
    assert job.status == FAILED and job.error["code"] == "dead_lettered"
    assert [m["MessageBody"] for m in queue.sent] == [body]
