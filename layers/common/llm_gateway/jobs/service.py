"""Job submission: validate every request, claim the Idempotency-Key, write the jobs, enqueue them.

Submission validates every request (model, sizes, conversation ownership, message size) before
it writes anything, so a bad body is a 4xx with nothing stored and nothing enqueued.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from llm_gateway.chat.models import ChatCompletionRequest, validation_reason
from llm_gateway.conversations.records import ConversationStore
from llm_gateway.deadline import now_ms
from llm_gateway.errors import (
    ConfigurationError,
    GatewayError,
    IdempotencyConflict,
    InvalidRequest,
    NotCancellable,
    NotFound,
    PayloadTooLarge,
    QueueUnavailable,
    StoreUnavailable,
    to_http,
)
from llm_gateway.jobs.messages import JobMessage, new_job_id
from llm_gateway.jobs.store import QUEUED, Job, JobStore, canonical_json
from llm_gateway.settings import Settings

if TYPE_CHECKING:  # boto3's stub types (mypy_boto3_*): annotations only
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

_IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
SQS_BATCH_ENTRIES = 10


@dataclass
class Submission:
    jobs: list[dict[str, Any]]  # public job views, in request order
    batch: bool
    replayed: bool = False


@dataclass
class _Prepared:
    raw: dict[str, Any]
    request: ChatCompletionRequest
    job_id: str = ""
    message: JobMessage | None = None
    body: str = ""


@dataclass
class JobService:
    settings: Settings
    store: JobStore
    conversations: ConversationStore
    validate: Callable[[ChatCompletionRequest], Any]  # ChatService.validate: alias, sizes, turn limits
    sqs: Callable[[], SQSClient]  # the SQS client, built on first use (keeps it off the cold-start path)
    queue_url: str | None = None

    # ---- reads ----------------------------------------------------------------------
    def get(self, tenant: str, job_id: str) -> dict[str, Any]:
        job = self.store.get(tenant, job_id)
        if job is None:
            raise NotFound(f"No job found with id '{job_id[:64]}'.", param="job_id")
        return job.public()

    def cancel(self, tenant: str, job_id: str) -> dict[str, Any]:
        """A queued job never runs; a running one stops at its next checkpoint and stores nothing."""
        job, cancelled = self.store.cancel(tenant, job_id)
        if job is None:
            raise NotFound(f"No job found with id '{job_id[:64]}'.", param="job_id")
        if not cancelled:
            raise NotCancellable(
                f"The job is already {job.status}: only a queued or running job can be cancelled.",
                code="job_not_cancellable",
            )
        return job.public()

    # ---- submit ---------------------------------------------------------------------
    def submit(
        self, tenant: str, body: Any, idempotency_key: str | None = None, key_id: str | None = None
    ) -> Submission:
        """Validate, claim the key, write the jobs, enqueue them; ``key_id`` (the submitting API key)
        rides in each message so the worker applies that key's limits too."""
        if idempotency_key is not None and not _IDEMPOTENCY_KEY_RE.match(idempotency_key):
            raise InvalidRequest("'Idempotency-Key' must be 1-255 visible ASCII characters.", param="Idempotency-Key")
        if not self.queue_url:
            raise ConfigurationError("Jobs are not configured (JOBS_QUEUE_URL is empty).")
        batch, prepared = self._parse(body)
        self._check(tenant, prepared, batch)

        replay = None
        if idempotency_key is not None:
            body_hash = hashlib.sha256(canonical_json(body).encode()).hexdigest()
            ids = [new_job_id() for _ in prepared]
            replay = self.store.claim_key(
                tenant, idempotency_key, body_hash, ids, self.settings.idempotency_key_ttl_seconds
            )
            if replay is not None:
                if replay.body_hash != body_hash or len(replay.job_ids) != len(prepared):
                    raise IdempotencyConflict(
                        "This Idempotency-Key was used with a different request body in the last 24 hours."
                    )
                ids = replay.job_ids
        else:
            ids = [new_job_id() for _ in prepared]

        now = now_ms()
        for item, job_id in zip(prepared, ids, strict=True):
            item.job_id = job_id
            item.message = JobMessage(
                job_id=job_id, tenant_id=tenant, key_id=key_id, request=item.raw, submitted_at=now, source="api"
            )
            item.body = item.message.body()
        self._check_message_sizes(prepared, batch)

        jobs = [
            Job(
                id=p.job_id,
                tenant=tenant,
                status=QUEUED,
                created_at=now,
                updated_at=now,
                model=p.request.model,
                conversation_id=p.request.conversation_id,
            )
            for p in prepared
        ]
        if replay is not None:
            # Same key, same body: the same jobs. If the first submission never finished enqueueing
            # (it crashed, or the queue refused), finish it now: job items are created only if absent
            # and SQS drops re-sent messages by MessageDeduplicationId = job id (the worker skips
            # finished jobs beyond the 5-minute dedup window).
            if not replay.enqueued and now - replay.created_at > 5_000:
                self.store.create_all(jobs)
                self._enqueue(prepared, jobs, mark_failed=False)
                self.store.mark_enqueued(tenant, idempotency_key or "")
            existing = self.store.get_many(tenant, ids)
            views = [(existing.get(j.id) or j).public() for j in jobs]
            return Submission(views, batch, replayed=True)

        self.store.create_all(jobs)
        self._enqueue(prepared, jobs, mark_failed=idempotency_key is None)
        if idempotency_key is not None:
            self.store.mark_enqueued(tenant, idempotency_key)
        return Submission([j.public() for j in jobs], batch)

    def _parse(self, body: Any) -> tuple[bool, list[_Prepared]]:
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        batch = "requests" in body
        if batch:
            extra = sorted(set(body) - {"requests"})
            if extra:
                raise InvalidRequest(f"Unrecognized parameter: '{extra[0]}'.", param=extra[0])
            raws = body["requests"]
            limit = self.settings.jobs_max_batch
            if not isinstance(raws, list) or not 1 <= len(raws) <= limit:
                raise InvalidRequest(
                    f"'requests' must be a list of 1 to {limit} chat completion requests.", param="requests"
                )
        else:
            raws = [body]
        prepared = []
        for index, raw in enumerate(raws):
            prefix = f"requests[{index}]" if batch else ""
            if not isinstance(raw, dict):
                raise InvalidRequest(f"'{prefix}' must be a JSON object.", param=prefix)
            try:
                request = ChatCompletionRequest.model_validate(raw)
            except ValidationError as exc:
                message, param = validation_reason(exc.errors(), prefix)
                raise InvalidRequest(message, param=param) from exc
            if request.stream:
                param = f"{prefix}.stream" if prefix else "stream"
                raise InvalidRequest("Jobs do not stream; send 'stream': false or leave it out.", param=param)
            prepared.append(_Prepared(raw, request))
        return batch, prepared

    def _check(self, tenant: str, prepared: list[_Prepared], batch: bool) -> None:
        checked: set[str] = set()
        for index, item in enumerate(prepared):
            try:
                self.validate(item.request)
                conversation_id = item.request.conversation_id
                if conversation_id and conversation_id not in checked:
                    self.conversations.get(tenant, conversation_id)  # NotFound for another tenant's id
                    checked.add(conversation_id)
            except GatewayError as exc:
                if batch:
                    exc.param = f"requests[{index}]" + (f".{exc.param}" if exc.param else "")
                    exc.message = f"requests[{index}]: {exc.message}"
                raise

    def _check_message_sizes(self, prepared: list[_Prepared], batch: bool) -> None:
        limit = self.settings.job_max_message_bytes
        for index, item in enumerate(prepared):
            size = len(item.body.encode())
            if size > limit:
                where = f"requests[{index}]" if batch else None
                raise PayloadTooLarge(
                    f"{where + ': ' if where else ''}the job is {size} bytes as a queue "
                    f"message; the limit is {limit} bytes.",
                    param=where,
                )

    def _enqueue(self, prepared: list[_Prepared], jobs: list[Job], *, mark_failed: bool) -> None:
        """Send one FIFO message per job, in order, batched by 10 entries / the size limit."""
        sqs = self.sqs()
        queue_url = self.queue_url
        assert queue_url, "submit() refuses to run without a queue"
        limit = self.settings.job_max_message_bytes
        chunks: list[list[int]] = []
        size = 0
        for index, item in enumerate(prepared):
            length = len(item.body.encode())
            if not chunks or len(chunks[-1]) == SQS_BATCH_ENTRIES or size + length > limit:
                chunks.append([])
                size = 0
            chunks[-1].append(index)
            size += length
        sent = 0
        try:
            for chunk in chunks:
                entries: list[SendMessageBatchRequestEntryTypeDef] = [
                    {
                        "Id": str(i),
                        "MessageBody": prepared[i].body,
                        "MessageGroupId": prepared[i].message.group_id(),  # type: ignore[union-attr]
                        "MessageDeduplicationId": prepared[i].job_id,
                    }
                    for i in chunk
                ]
                resp = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
                failed = sorted(int(f["Id"]) for f in resp.get("Failed", []))
                if failed:
                    sent = failed[0]
                    raise QueueUnavailable("The jobs queue refused a message; retry later.")
                sent = chunk[-1] + 1
        except (ClientError, QueueUnavailable, StoreUnavailable, OSError) as exc:  # StoreUnavailable: no answer in time
            from llm_gateway.observability import logger

            logger.error("enqueue failed", extra={"sent": sent, "jobs": len(jobs), "error_type": type(exc).__name__})
            if mark_failed:  # no key to resume with: unsent jobs must not sit 'queued' forever
                error = to_http(QueueUnavailable("The job could not be enqueued.", code="enqueue_failed")).body
                for job in jobs[sent:]:
                    self.store.fail(job, error["error"])
            hint = "" if mark_failed else " Retry with the same Idempotency-Key to finish the submission."
            raise QueueUnavailable(
                f"The jobs queue is unavailable; {sent} of {len(jobs)} job(s) were queued." + hint, retry_after=1.0
            ) from exc
