"""Nothing strands: the dead-letter consumer, and the redrive that brings parked jobs back.

```
JobsQueue ──(maxReceiveCount 4)──> JobsDeadLetterQueue ──> DeadLetterFunction ──> JobsParkedQueue
                                                            marks the job failed    (14 days, alarmed)
bin/llm-gateway-admin jobs redrive:  JobsParkedQueue ──> JobsQueue   (SQS StartMessageMoveTask)
```

* **The consumer** (``DeadLetterConsumer``, subscribed to the DLQ with ``ReportBatchItemFailures``)
  marks the job of every dead-lettered message ``failed`` with a clear ``dead_lettered`` error, so
  ``GET /v1/jobs/{id}`` never shows ``queued``/``running`` for a job SQS gave up on (a worker
  killed on every delivery never got to say so itself). A job the worker already failed on its
  last delivery keeps that error. Either way the job is flagged ``dead_lettered``: that flag, and
  only it, lets a redriven message run a failed job again.
* **Background responses** (``kind: "response"``) keep their state on the stored response: the
  consumer marks it ``failed`` (``BackgroundResponses.abandon``, error ``server_error``) unless it
  already ended, so ``GET /v1/responses/{id}`` never shows it queued or in progress for ever. A
  redriven response message does not run it again (a failed response is final).
* **Parking.** The consumer then sends the message on to ``JobsParkedQueue`` and acknowledges it.
  Consuming the DLQ and keeping its messages there for a redrive cannot both hold — a consumer
  deletes what it handled, and on a FIFO queue a message it left in flight would block every
  later message of its conversation — so the messages wait, untouched, one queue further. The
  parked queue is the DLQ's own dead-letter queue (its ``RedrivePolicy``), which makes it a
  valid ``StartMessageMoveTask`` source and catches a message the consumer keeps failing on.
* **Redrive** (:func:`redrive`): ``StartMessageMoveTask`` from the parked queue to the jobs queue.
  Where the endpoint does not implement it (moto, for ``make dev`` and the tests), the same call
  moves the messages itself: receive, send to the destination, delete — batches of 10, the body,
  group id and a fresh deduplication id (the parked message's id) kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from botocore.exceptions import ClientError

from llm_gateway.errors import ConfigurationError, DeadLettered, error_object
from llm_gateway.jobs.batch import GroupedFifoProcessor
from llm_gateway.jobs.messages import InvalidJobMessage, parse_job_message, response_message
from llm_gateway.jobs.store import JobStore
from llm_gateway.observability import logger


def job_ref(body: str) -> tuple[str, str] | None:
    """(tenant, job id) of a queue message, when it names them validly."""
    try:
        message, _ = parse_job_message(body)
    except InvalidJobMessage as exc:
        return (exc.tenant_id, exc.job_id) if exc.tenant_id and exc.job_id else None
    return message.tenant_id, message.job_id


def response_ref(body: str) -> tuple[str, str] | None:
    """(tenant, response id) of a background response's message (``kind: "response"``); else None."""
    try:
        message = response_message(body)
    except InvalidJobMessage as exc:
        return None if not (exc.tenant_id and exc.job_id) else (exc.tenant_id, exc.job_id)
    return None if message is None else (message.tenant_id, message.job_id)


def dead_letter_reason(max_receives: int) -> str:
    return (
        f"The worker failed on each of its {max_receives} deliveries without reporting a result "
        "(for example it was killed at its timeout), and the message was moved to the dead-letter queue."
    )


def dead_letter_error(max_receives: int) -> dict[str, Any]:
    return error_object(
        DeadLettered(
            f"The job was not completed: the worker failed on each of its {max_receives} deliveries "
            "without reporting a result (for example it was killed at its timeout), and the message "
            "was moved to the dead-letter queue. An operator can retry it with "
            "`llm-gateway-admin jobs redrive`."
        )
    )


@dataclass
class DeadLetterConsumer:
    jobs: JobStore
    sqs: Callable[[], Any]
    parked_queue_url: str | None
    max_receives: int
    # BackgroundResponses.abandon: (tenant, response id, reason) -> whether it was marked failed
    abandon_response: Callable[[str, str, str], bool] | None = None

    def handle(self, event: dict, context: Any) -> PartialItemFailureResponse:
        # The records of one message group in order (a failure hands the rest of its group back).
        processor = GroupedFifoProcessor(max_workers=4)
        return process_partial_response(event=event, record_handler=self.record, processor=processor, context=context)

    def record(self, record: Any) -> dict:
        if not self.parked_queue_url:
            raise ConfigurationError("JOBS_PARKED_QUEUE_URL is not set: dead letters cannot be parked.")
        ref = response_ref(record.body) if self.abandon_response is not None else None
        if ref is not None and self.abandon_response is not None:
            # a background response keeps its state on the stored response, not a job item
            abandoned = self.abandon_response(*ref, dead_letter_reason(self.max_receives))
            outcome = "response_failed" if abandoned else "response_already_ended"
        else:
            ref = job_ref(record.body)
            outcome = "no_job"
            if ref is not None:
                outcome = self.jobs.dead_letter(*ref, dead_letter_error(self.max_receives))
        attrs = record.attributes
        self.sqs().send_message(
            QueueUrl=self.parked_queue_url,
            MessageBody=record.body,
            MessageGroupId=attrs.message_group_id or (ref[1] if ref else "dead-letters"),
            MessageDeduplicationId=record.message_id,  # one parked copy per dead letter, however often seen
        )
        logger.warning(
            "dead-lettered job message parked",
            extra={"message_id": record.message_id, "job_id": ref[1] if ref else None, "outcome": outcome},
        )
        return {"outcome": outcome}


# ---- redrive -----------------------------------------------------------------------------------

UNSUPPORTED = ("InvalidAction", "UnknownOperationException", "UnsupportedOperation", "NotImplemented")


@dataclass(frozen=True)
class Redrive:
    method: str  # "StartMessageMoveTask", or "receive+send+delete" where the endpoint lacks it
    task_handle: str | None = None  # the SQS move task (it runs asynchronously)
    moved: int | None = None  # messages moved, when moved here


def _arn(sqs: Any, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _unsupported(err: ClientError) -> bool:
    error = err.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", "")).lower()
    if any(c in code for c in UNSUPPORTED) or "not implemented" in message or "not been implemented" in message:
        return True
    # moto's server answers an action it lacks with a bare HTML 500 (botocore's code "500"); SQS
    # itself always answers with a named error (InternalError, ...), which is raised as it is.
    return code == "500" and "<html" in message


def redrive(sqs: Any, source_url: str, destination_url: str, *, per_second: int | None = None) -> Redrive:
    """Move the parked messages back to the jobs queue (see the module docstring)."""
    params: dict[str, Any] = {"SourceArn": _arn(sqs, source_url), "DestinationArn": _arn(sqs, destination_url)}
    if per_second:
        params["MaxNumberOfMessagesPerSecond"] = per_second
    try:
        return Redrive("StartMessageMoveTask", task_handle=sqs.start_message_move_task(**params)["TaskHandle"])
    except ClientError as err:
        if not _unsupported(err):
            raise
    return Redrive("receive+send+delete", moved=move_messages(sqs, source_url, destination_url))


def move_messages(sqs: Any, source_url: str, destination_url: str) -> int:
    """Receive, send, delete until the source is empty: what a move task does, by hand."""
    moved = 0
    while True:
        messages = sqs.receive_message(
            QueueUrl=source_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=30,
            MessageSystemAttributeNames=["MessageGroupId"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return moved
        entries = []
        for i, m in enumerate(messages):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": m["Body"], "MessageDeduplicationId": m["MessageId"]}
            group = (m.get("Attributes") or {}).get("MessageGroupId")
            if group:
                entry["MessageGroupId"] = group
            if m.get("MessageAttributes"):
                entry["MessageAttributes"] = m["MessageAttributes"]
            entries.append(entry)
        resp = sqs.send_message_batch(QueueUrl=destination_url, Entries=entries)
        sent = {int(e["Id"]) for e in resp.get("Successful", [])}
        if not sent:
            raise RuntimeError("the destination queue refused every message; nothing was moved")
        sqs.delete_message_batch(
            QueueUrl=source_url,
            Entries=[{"Id": str(i), "ReceiptHandle": messages[i]["ReceiptHandle"]} for i in sorted(sent)],
        )
        moved += len(sent)


def build_consumer(services: Any) -> DeadLetterConsumer:
    settings = services.settings
    return DeadLetterConsumer(
        services.jobs.store,
        services.jobs.sqs,
        settings.jobs_parked_queue_url,
        settings.jobs_max_receive_count,
        services.background.abandon,
    )
