"""An SQS poller that feeds a Lambda handler the way the SQS event source mapping does.

``make dev`` (and the tests and benchmarks) run the worker without AWS: this module receives
from the (moto) queue and invokes the handler with a real SQS event, then acts on the answer as
Lambda does with ``FunctionResponseTypes: [ReportBatchItemFailures]``:

* records are built from ``ReceiveMessage`` exactly as Lambda shapes them: ``messageId``,
  ``receiptHandle``, ``body``, every system attribute (``ApproximateReceiveCount``,
  ``SentTimestamp``, ``SenderId``, ``ApproximateFirstReceiveTimestamp``, and on FIFO queues
  ``MessageGroupId``, ``MessageDeduplicationId``, ``SequenceNumber``), ``messageAttributes`` in
  Lambda's camel-case shape, ``md5OfBody``, ``eventSource``, ``eventSourceARN``, ``awsRegion``;
* the handler gets a Lambda-like context (``get_remaining_time_in_millis`` counts down from the
  function timeout, so Powertools idempotency and our deadlines behave as in AWS);
* only successes are deleted: the ids in ``batchItemFailures`` stay. A handler that raises, or
  answers with an unknown / empty ``itemIdentifier``, fails the whole batch (Lambda's rules);
  ``None``, ``{}`` or an empty list mean complete success;
* nothing else touches a failed message: it becomes visible again when its visibility timeout
  runs out — the queue's, ``visibility_timeout`` to override it locally, or whatever the handler
  set with ``ChangeMessageVisibility`` (the jobs worker's redrive delay; moto honours it as SQS
  does, and the poller never resets it) — its receive count grows, and the queue's redrive
  policy moves it to the DLQ after ``maxReceiveCount`` receives.

Not emulated: killing the handler at the function timeout, and Lambda's concurrent pollers (one
batch at a time here; FIFO ordering holds either way).

    poller = SqsPoller(sqs, queue_url, worker.handler, visibility_timeout=5).start()
    ...
    poller.stop()
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("local.poller")

_SYSTEM_EXIT = (KeyboardInterrupt, SystemExit, GeneratorExit)


class LambdaContext:
    """The parts of ``awslambdaric``'s context object that handlers and Powertools read."""

    def __init__(
        self,
        function_name: str,
        timeout_seconds: float,
        region: str = "us-east-1",
        memory_limit_in_mb: int = 256,
        account: str = "123456789012",
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account}:function:{function_name}"
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def lambda_record(message: dict, queue_arn: str, region: str) -> dict:
    """One ReceiveMessage message as a Lambda SQS event record."""
    attributes = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        attributes[name] = {
            "stringValue": value.get("StringValue"),
            "binaryValue": value.get("BinaryValue"),
            "stringListValues": value.get("StringListValues", []),
            "binaryListValues": value.get("BinaryListValues", []),
            "dataType": value.get("DataType"),
        }
    record = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": attributes,
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def failed_ids(response: Any, batch_ids: set[str]) -> set[str]:
    """The message ids Lambda would leave on the queue for a handler's answer."""
    if response is None:
        return set()
    if not isinstance(response, dict):
        return set(batch_ids)
    failures = response.get("batchItemFailures")
    if not failures:
        return set()
    if not isinstance(failures, list):
        return set(batch_ids)
    out = set()
    for failure in failures:
        ident = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not ident or ident not in batch_ids:
            return set(batch_ids)  # Lambda: a malformed answer fails the whole batch
        out.add(ident)
    return out


@dataclass
class BatchOutcome:
    """What one invocation did."""

    records: list[dict] = field(default_factory=list)
    response: Any = None
    error: BaseException | None = None
    failed: list[str] = field(default_factory=list)  # message ids left on the queue, batch order
    deleted: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.records


class SqsPoller:
    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        handler: Callable[[dict, Any], Any],
        *,
        batch_size: int = 10,
        wait_seconds: int = 1,
        visibility_timeout: int | None = None,
        function_timeout: float = 120.0,
        function_name: str = "WorkerFunction",
        region: str | None = None,
    ) -> None:
        if not 1 <= batch_size <= 10:
            raise ValueError("batch_size must be 1..10 (SQS ReceiveMessage limit)")
        self.sqs = sqs
        self.queue_url = queue_url
        self.handler = handler
        self.batch_size = batch_size
        self.wait_seconds = wait_seconds
        self.visibility_timeout = visibility_timeout
        self.function_timeout = function_timeout
        self.function_name = function_name
        self.region = region or getattr(getattr(sqs, "meta", None), "region_name", None) or "us-east-1"
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.invocations = 0
        self.deleted = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- one batch ------------------------------------------------------------------
    def receive(self, wait_seconds: int | None = None) -> list[dict]:
        params: dict[str, Any] = {
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": self.batch_size,
            "WaitTimeSeconds": self.wait_seconds if wait_seconds is None else wait_seconds,
            "MessageSystemAttributeNames": ["All"],
            "AttributeNames": ["All"],
            "MessageAttributeNames": ["All"],
        }
        if self.visibility_timeout is not None:
            params["VisibilityTimeout"] = self.visibility_timeout
        return self.sqs.receive_message(**params).get("Messages", [])

    def invoke(self, messages: list[dict]) -> BatchOutcome:
        """Invoke the handler with these received messages and settle them as Lambda would."""
        outcome = BatchOutcome(records=[lambda_record(m, self.queue_arn, self.region) for m in messages])
        if not messages:
            return outcome
        ids = [r["messageId"] for r in outcome.records]
        context = LambdaContext(self.function_name, self.function_timeout, self.region)
        self.invocations += 1
        try:
            outcome.response = self.handler({"Records": outcome.records}, context)
            failed = failed_ids(outcome.response, set(ids))
        except _SYSTEM_EXIT:
            raise
        except BaseException as exc:  # the invocation failed (or the "process" died): retry it all
            log.warning("worker invocation failed: %s", type(exc).__name__)
            outcome.error = exc
            failed = set(ids)
        outcome.failed = [i for i in ids if i in failed]
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            resp = self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
            gone = {int(e["Id"]) for e in resp.get("Successful", [])}
            for entry in resp.get("Failed", []):
                log.warning("delete failed (message will be redelivered): %s", entry.get("Code"))
            outcome.deleted += [m["MessageId"] for i, m in enumerate(chunk) if i in gone]
        self.deleted += len(outcome.deleted)
        self.failures += len(outcome.failed)
        return outcome

    def poll_once(self, wait_seconds: int | None = None) -> BatchOutcome:
        return self.invoke(self.receive(wait_seconds))

    # ---- background -------------------------------------------------------------------
    def start(self) -> SqsPoller:
        if self._thread is not None:
            raise RuntimeError("poller already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="sqs-poller", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self.poll_once()
                backoff = 0.1
            except Exception as exc:  # the queue endpoint went away (stack stopping) or a transient error
                if self._stop.is_set():
                    break
                log.warning("poll failed: %s", type(exc).__name__)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the batch in flight (at most one long poll + one invocation)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.wait_seconds + self.function_timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> SqsPoller:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
