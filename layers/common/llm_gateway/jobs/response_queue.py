"""The jobs path for background responses (``responses.background.BackgroundQueue``).

The same queue, message schema (``kind: "response"``), Idempotency-Key items and rules as
``POST /v1/jobs``: a key names one submission for 24 h; the same key with another body is a 422.
The job id of a background response is its response id (also the MessageDeduplicationId); its
state lives on the stored response itself, so no job item is written.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from llm_gateway.conversations.store import now_ms
from llm_gateway.errors import (
    ConfigurationError,
    IdempotencyConflict,
    InvalidRequest,
    PayloadTooLarge,
    QueueUnavailable,
)
from llm_gateway.jobs.messages import JobMessage
from llm_gateway.jobs.store import JobStore, canonical_json
from llm_gateway.settings import Settings

_IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


class ResponseJobQueue:
    def __init__(self, settings: Settings, store: JobStore, sqs: Callable[[], Any], queue_url: str | None) -> None:
        self.settings = settings
        self.store = store
        self.sqs = sqs
        self.queue_url = queue_url

    def claim(self, tenant: str, key: str, body: dict[str, Any], response_id: str) -> tuple[str, bool, int] | None:
        """Claim ``key`` for this response: None; or, when it was claimed before with this body,
        (that response's id, whether it was enqueued, the claim's age in ms)."""
        if not _IDEMPOTENCY_KEY_RE.match(key):
            raise InvalidRequest("'Idempotency-Key' must be 1-255 visible ASCII characters.", param="Idempotency-Key")
        # namespaced: a key used for a job and then for a response is a different body (422)
        body_hash = hashlib.sha256(canonical_json({"response": body}).encode()).hexdigest()
        record = self.store.claim_key(tenant, key, body_hash, [response_id], self.settings.idempotency_key_ttl_seconds)
        if record is None:
            return None
        if record.body_hash != body_hash or len(record.job_ids) != 1:
            raise IdempotencyConflict(
                "This Idempotency-Key was used with a different request body in the last 24 hours."
            )
        return record.job_ids[0], record.enqueued, now_ms() - record.created_at

    def send(
        self, tenant: str, response_id: str, body: dict[str, Any], group_id: str, key_id: str | None = None
    ) -> None:
        if not self.queue_url:
            raise ConfigurationError("Background responses need the jobs queue (JOBS_QUEUE_URL is empty).")
        message = JobMessage(
            kind="response",
            job_id=response_id,
            tenant_id=tenant,
            key_id=key_id,
            request=body,
            submitted_at=now_ms(),
            source="api",
        ).body()
        limit = self.settings.job_max_message_bytes
        if len(message.encode()) > limit:
            raise PayloadTooLarge(
                f"The background response is {len(message.encode())} bytes as a queue message; "
                f"the limit is {limit} bytes."
            )
        try:
            self.sqs().send_message(
                QueueUrl=self.queue_url,
                MessageBody=message,
                MessageGroupId=group_id,
                MessageDeduplicationId=response_id,
            )
        except (ClientError, OSError) as exc:
            raise QueueUnavailable(
                "The jobs queue is unavailable; the background response was not queued.", retry_after=1.0
            ) from exc

    def sent(self, tenant: str, key: str) -> None:
        self.store.mark_enqueued(tenant, key)
