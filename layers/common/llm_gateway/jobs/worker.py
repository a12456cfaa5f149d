"""The jobs worker: one SQS FIFO batch in, one ``batchItemFailures`` response out.

Per record:

1. **Validate** the message (``schemas/job-message.v{1,2}.json`` + the Chat Completions model).
   Invalid → if it names a job that exists, that job is marked ``failed`` and the record is
   acknowledged; otherwise the record fails (redelivered until the redrive policy moves it to
   the DLQ) and the reason is logged. Never dropped silently.
2. **Idempotency on tenant + job id** (Powertools, DynamoDB persistence on our table, one
   partition per job, the
   Lambda context registered so an attempt that timed out expires and can be retried). A
   duplicate delivery while an attempt runs fails the record (redelivered later); after the job
   completed it is acknowledged without work. Beneath it, two more guards: a finished job is
   never re-run (its status is checked and every transition is conditional), and a conversation
   turn commits with ``turn_id = job id``, so a redelivered job can never store a second reply.
3. **Run** the chat turn. Permanent failures (invalid request, upstream 400, unknown
   conversation, spend limit) → job ``failed``, record acknowledged. Retryable failures (upstream
   5xx/429/timeouts, a conversation leased by an HTTP turn after a short wait, anything
   unexpected) → job back to ``queued`` with ``last_error``, record failed for redelivery after
   the redrive delay (:mod:`llm_gateway.jobs.redelivery`: ChangeMessageVisibility, full jitter on
   the receive count; before that, up to ``JOB_MAX_ATTEMPTS`` upstream attempts in this
   delivery); on the receive that reaches ``maxReceiveCount`` the job is marked ``failed`` instead and the record
   still fails, so SQS moves it to the DLQ on its next receive. A poison message thus always
   ends with its job ``failed`` *and* the message in the DLQ.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from tenacity import Retrying, retry_if_exception_type, stop_before_delay, wait_exponential

from llm_gateway.chat.models import ChatCompletionRequest
from llm_gateway.chat.service import ChatService
from llm_gateway.deadline import Deadline, bounded
from llm_gateway.errors import ConversationBusy, GatewayError, InvalidRequest, error_object
from llm_gateway.jobs.batch import GroupedFifoProcessor
from llm_gateway.jobs.cancel import CancelWatch
from llm_gateway.jobs.messages import InvalidJobMessage, JobMessage, parse_job_message, response_message
from llm_gateway.jobs.redelivery import Redelivery
from llm_gateway.jobs.store import TERMINAL, Job, JobStore
from llm_gateway.observability import RequestMetrics, logger
from llm_gateway.reports import TurnReport
from llm_gateway.settings import Settings

IDEMPOTENCY_PREFIX = "IDEMPOTENCY#"  # + "jobs#<hash of tenant, job>": one partition per job
IDEMPOTENCY_SK = "JOB"
# runs a background response once (responses.background.BackgroundResponses.run, wired by build_worker)
BackgroundRun = Callable[..., str]


class RetryLater(Exception):
    """Leave the record for redelivery; the job was requeued (or, on the last receive, failed)."""


class JobMetrics:
    """One EMF blob per invocation, fed by concurrent records."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics = RequestMetrics("worker")
        self.oldest_age_ms = 0.0

    def count(self, name: str, value: float = 1) -> None:
        with self._lock:
            self._metrics.add(name, value)

    def age(self, sent_ms: int | None) -> None:
        if sent_ms:
            with self._lock:
                self.oldest_age_ms = max(self.oldest_age_ms, time.time() * 1000 - sent_ms)

    def turn(self, report: TurnReport) -> None:
        with self._lock:
            self._metrics.turn(report, model_dimension=False)

    def flush(self) -> None:
        with self._lock:
            self._metrics.add("OldestMessageAge", round(self.oldest_age_ms, 1), "Milliseconds")
            self._metrics.flush()


def error_of(exc: BaseException) -> dict[str, Any]:
    """The OpenAI-shaped error for a job record. Unexpected exceptions say nothing of themselves."""
    if isinstance(exc, GatewayError):
        return error_object(exc)
    return error_object(GatewayError("The job failed with an internal error.", code="internal_error"))


class PerJobPersistence(DynamoDBPersistenceLayer):
    """Powertools' DynamoDB persistence on our table, each record in its own partition:
    ``PK = IDEMPOTENCY#jobs#<hash of [tenant, job]>``, ``SK = JOB`` (Powertools' composite-key mode
    would put every record under one static partition key: a hot partition for a job flood)."""

    def _get_key(self, idempotency_key: str) -> dict:
        return {self.key_attr: {"S": IDEMPOTENCY_PREFIX + idempotency_key}, "SK": {"S": IDEMPOTENCY_SK}}

    def _item_to_data_record(self, item: dict[str, Any]) -> Any:
        record = super()._item_to_data_record(item)
        record.idempotency_key = record.idempotency_key.removeprefix(IDEMPOTENCY_PREFIX)
        return record


def persistence_layer(settings: Settings, client: Any) -> DynamoDBPersistenceLayer:
    return PerJobPersistence(table_name=settings.table_name, key_attr="PK", expiry_attr="ttl", boto3_client=client)


class JobWorker:
    background: BackgroundRun | None = None  # background responses (``kind: "response"`` messages)

    def __init__(
        self,
        chat: ChatService,
        jobs: JobStore,
        settings: Settings,
        persistence: BasePersistenceLayer,  # DynamoDB in Lambda (persistence_layer); in memory in unit tests
        redelivery: Redelivery | None = None,
    ) -> None:
        self.chat = chat
        self.jobs = jobs
        self.settings = settings
        self.redelivery = redelivery
        self.idempotency = IdempotencyConfig(
            event_key_jmespath="[tenant_id, job_id]",  # job ids are unique per tenant only
            raise_on_no_idempotency_key=True,
            expires_after_seconds=settings.worker_idempotency_ttl_seconds,
        )
        self._run_idempotent = idempotent_function(
            data_keyword_argument="job_ref",
            persistence_store=persistence,
            config=self.idempotency,
            key_prefix="jobs",
        )(self._run)
        self._run_response_idempotent = idempotent_function(
            data_keyword_argument="job_ref",
            persistence_store=persistence,
            config=self.idempotency,
            key_prefix="jobs",  # IAM: IDEMPOTENCY#jobs#*; a response id never equals a job id (resp_ / job_)
        )(self._run_response)

    # ---- the batch ----------------------------------------------------------------
    def handle(self, event: dict, context: Any) -> PartialItemFailureResponse:
        self.idempotency.register_lambda_context(context)
        remaining = context.get_remaining_time_in_millis() / 1000 - self.settings.deadline_margin_seconds
        deadline = Deadline.after(max(0.0, min(remaining, self.settings.job_deadline_seconds)))
        metrics = JobMetrics()
        processor = GroupedFifoProcessor(max_workers=self.settings.worker_concurrency)

        def record_handler(record: Any) -> dict:
            return self.process_record(record, deadline, metrics)

        records = event.get("Records") or []
        if self.redelivery is not None:
            self.redelivery.on_receipt(records, context.get_remaining_time_in_millis() / 1000)
        try:
            response = process_partial_response(
                event=event, record_handler=record_handler, processor=processor, context=context
            )
            if self.redelivery is not None and response.get("batchItemFailures"):
                failed = [str(f["itemIdentifier"]) for f in response["batchItemFailures"]]
                delays = self.redelivery.on_failure(records, failed)
                logger.info("records back to the queue after a delay", extra={"delays": sorted(delays.values())})
            return response
        finally:
            metrics.flush()
            self._drain_usage(context)

    def _drain_usage(self, context: Any) -> None:
        """Lambda freezes the container once the batch is answered: this batch's usage writes first."""
        if self.chat.quotas is not None:
            left = context.get_remaining_time_in_millis() / 1000 - self.settings.deadline_margin_seconds
            self.chat.quotas.drain(max(0.1, left))

    # ---- one record -----------------------------------------------------------------
    def process_record(self, record: Any, deadline: Deadline, metrics: JobMetrics) -> dict:
        attrs = record.attributes
        receive_count = int(attrs.approximate_receive_count or 1)
        metrics.age(int(attrs.sent_timestamp) if attrs.sent_timestamp else None)
        log = {"message_id": record.message_id, "receive_count": receive_count}
        if self.background is not None:
            try:
                background = response_message(record.body)
            except InvalidJobMessage as exc:
                return self._invalid(exc, log, metrics)
            if background is not None:
                return self._response_record(
                    background, receive_count, deadline, metrics, {**log, "job_id": background.job_id}
                )
        try:
            message, request = parse_job_message(record.body)
        except InvalidJobMessage as exc:
            return self._invalid(exc, log, metrics)
        log["job_id"] = message.job_id
        if request.conversation_id and attrs.message_group_id not in (None, request.conversation_id):
            logger.warning("job message group is not its conversation: ordering is not guaranteed", extra=log)
        try:
            return self._run_idempotent(
                job_ref={"tenant_id": message.tenant_id, "job_id": message.job_id},
                message=message,
                request=request,
                receive_count=receive_count,
                deadline=deadline,
                metrics=metrics,
            )
        except IdempotencyAlreadyInProgressError:
            logger.info("job already in progress elsewhere; leaving the record for redelivery", extra=log)
            metrics.count("JobsRetried")
            raise

    def _response_record(
        self, message: JobMessage, receive_count: int, deadline: Deadline, metrics: JobMetrics, log: dict
    ) -> dict:
        try:
            return self._run_response_idempotent(
                job_ref={"tenant_id": message.tenant_id, "job_id": message.job_id},
                message=message,
                receive_count=receive_count,
                deadline=deadline,
                metrics=metrics,
            )
        except IdempotencyAlreadyInProgressError:
            logger.info("background response already running elsewhere; leaving it for redelivery", extra=log)
            metrics.count("JobsRetried")
            raise

    def _run_response(
        self, job_ref: dict, message: JobMessage, receive_count: int, deadline: Deadline, metrics: JobMetrics
    ) -> dict:
        """One delivery of a background response: the run owns its status (on the stored response)."""
        assert self.background is not None
        log = {"job_id": message.job_id, "receive_count": receive_count, "kind": "response"}
        report = TurnReport(key_id=message.key_id)  # the submitting key's limits apply (version 2)
        last = receive_count >= self.settings.jobs_max_receive_count
        try:
            with bounded(deadline):  # the run's store, KMS and upstream waits within its deadline
                status = self.background(
                    message.tenant_id, message.job_id, message.request, deadline, report, last_attempt=last
                )
        except Exception as exc:
            metrics.turn(report)
            metrics.count("JobsRetried")
            if not isinstance(exc, GatewayError):
                logger.exception("background response attempt failed unexpectedly", extra=log)
            else:
                logger.warning("background response attempt failed; leaving it for redelivery", extra=log)
            raise RetryLater(error_of(exc).get("code") or "retry") from exc
        metrics.turn(report)
        metrics.count("JobsFailed" if status == "failed" else "JobsSucceeded")
        logger.info("background response ran", extra={**log, "status": status})
        return {"status": status}

    def _invalid(self, exc: InvalidJobMessage, log: dict, metrics: JobMetrics) -> dict:
        metrics.count("InvalidMessages")
        job = self.jobs.get(exc.tenant_id, exc.job_id) if exc.tenant_id and exc.job_id else None
        if job is not None and job.status not in TERMINAL:
            self.jobs.fail(
                job,
                error_object(InvalidRequest(f"The job message is invalid: {exc.reason}.", code="invalid_job_message")),
            )
            metrics.count("JobsFailed")
            logger.error(
                "invalid job message; job marked failed", extra={**log, "job_id": job.id, "reason": exc.reason}
            )
            return {"status": "failed"}
        logger.error(
            "invalid job message names no known job; leaving it for the dead-letter queue",
            extra={**log, "reason": exc.reason},
        )
        raise RetryLater(exc.reason) from exc

    def _run(
        self,
        job_ref: dict,
        message: JobMessage,
        request: ChatCompletionRequest,
        receive_count: int,
        deadline: Deadline,
        metrics: JobMetrics,
    ) -> dict:
        log = {"job_id": message.job_id, "receive_count": receive_count}
        started, running = self.jobs.begin(message, request)
        if not running:
            logger.info("job already finished; acknowledging the duplicate", extra={**log, "status": started.status})
            return {"status": started.status}
        report = TurnReport(key_id=message.key_id)  # the submitting key's limits apply (version 2)
        watch = CancelWatch(
            lambda: self.jobs.status(message.tenant_id, message.job_id), self.settings.job_cancel_poll_seconds
        )
        with watch:
            try:
                with bounded(deadline):  # the job's store, KMS and upstream waits within its deadline
                    result = self._complete(message, request, deadline, report, watch.cancelled)
            except Exception as exc:
                metrics.turn(report)
                if watch.cancelled():  # (Cancelled is raised only then)
                    return self._cancelled(metrics, log)
                return self._failed(started, exc, receive_count, metrics, log)
        metrics.turn(report)
        if self.jobs.succeed(started, result) is None:  # cancelled as the reply was being stored
            return self._cancelled(metrics, log)
        metrics.count("JobsSucceeded")
        logger.info("job succeeded", extra={**log, "attempts": started.attempts})
        return {"status": "succeeded"}

    @staticmethod
    def _cancelled(metrics: JobMetrics, log: dict) -> dict:
        metrics.count("JobsCancelled")
        logger.info("job cancelled while it ran; nothing stored", extra=log)
        return {"status": "cancelled"}

    def _complete(
        self,
        message: JobMessage,
        request: ChatCompletionRequest,
        deadline: Deadline,
        report: TurnReport,
        cancelled: Callable[[], bool],
    ) -> dict:
        if not request.conversation_id:
            return self.chat.complete(message.tenant_id, request, deadline, report, cancelled=cancelled)
        # An HTTP turn holds the conversation's lease for at most its deadline: wait a little for it
        # before handing the job back to SQS (whose redelivery waits a whole visibility timeout).
        retrying = Retrying(
            retry=retry_if_exception_type(ConversationBusy),
            # stop_before_delay: no sleep may end past the wait budget (nor so the deadline).
            stop=stop_before_delay(max(0.0, min(self.settings.job_busy_wait_seconds, deadline.remaining() - 1))),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            reraise=True,
        )
        return retrying(
            self.chat.complete,
            message.tenant_id,
            request,
            deadline,
            report,
            turn_id=message.job_id,
            cancelled=cancelled,
        )

    def _failed(self, job: Job, exc: Exception, receive_count: int, metrics: JobMetrics, log: dict) -> dict:
        error = error_of(exc)
        log = {**log, "error_type": type(exc).__name__, "code": error.get("code"), "attempts": job.attempts}
        if isinstance(exc, GatewayError) and exc.permanent:
            self.jobs.fail(job, error)
            metrics.count("JobsFailed")
            logger.warning("job failed permanently", extra=log)
            return {"status": "failed"}
        if not isinstance(exc, GatewayError):
            logger.exception("job attempt failed unexpectedly", extra=log)
        if receive_count >= self.settings.jobs_max_receive_count:
            error = {**error, "message": f"Gave up after {receive_count} deliveries: {error['message']}"}
            self.jobs.fail(job, error)
            metrics.count("JobsFailed")
            logger.error("job exhausted its deliveries; marked failed, message goes to the DLQ", extra=log)
        else:
            self.jobs.requeue(job, error)
            metrics.count("JobsRetried")
            logger.warning("job attempt failed; leaving it for redelivery", extra=log)
        raise RetryLater(error.get("code") or "retry") from exc


def patient_chat(chat: ChatService, max_attempts: int) -> ChatService:
    """The chat service with a router that tries ``max_attempts`` times per turn (the same
    deployments, cooldowns, backoff, Retry-After cap and retry budget as HTTP requests)."""
    jobs_router = copy.copy(chat.router)  # the same providers, cooldowns and options
    jobs_router.policy = chat.router.policy.with_attempts(max_attempts)
    return ChatService(chat.store, chat.routing, jobs_router, chat.settings, chat.quotas)


def build_worker(services: Any) -> JobWorker:
    settings = services.settings
    persistence = persistence_layer(settings, services.conversations.client)
    redelivery = Redelivery(
        services.jobs.sqs,
        settings.job_redrive_base_seconds,
        settings.job_redrive_max_seconds,
        queue_urls=(settings.jobs_queue_url,),
    )
    chat = patient_chat(services.chat, settings.job_max_attempts)
    worker = JobWorker(chat, services.jobs.store, settings, persistence, redelivery)
    worker.background = services.background.with_chat(chat).run
    return worker
