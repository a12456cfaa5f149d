"""Job items and Idempotency-Key items on the gateway's table.

* **Job item**: ``PK = T#<tenant>#J#<job>``, ``SK = JOB`` — status (``queued`` → ``running`` →
  ``succeeded`` | ``failed``; a retryable failure puts it back to ``queued`` with ``last_error``;
  ``queued`` or ``running`` → ``cancelled`` by ``POST /v1/jobs/{id}/cancel``),
  attempts, the ``chat.completion`` result or an OpenAI-shaped error, timestamps, TTL. The request
  itself is *not* stored here: the queue message carries it.
* **Idempotency-Key item**: ``PK = T#<tenant>#IK#<sha256(key)>``, ``SK = IDEMPOTENCY`` — the
  body's hash, the job ids it created, whether every message was enqueued; valid 24 h.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from llm_gateway.aws.dynamo import (
    CONDITIONAL_CHECK_FAILED,
    TENANT_RE,
    TRANSACTION_CANCELED,
    batch_get,
    error_code,
    n,
    s,
)
from llm_gateway.aws.dynamo import ID_RE as JOB_ID_RE
from llm_gateway.chat.models import ChatCompletionRequest
from llm_gateway.deadline import now_ms
from llm_gateway.errors import JobResultTooLarge, error_object
from llm_gateway.jobs.idempotency_keys import IdempotencyKeyItems, IdempotencyRecord
from llm_gateway.jobs.messages import JobMessage

if TYPE_CHECKING:  # boto3's stub types (mypy_boto3_*): annotations only
    from mypy_boto3_dynamodb import DynamoDBClient

JOB_SK = "JOB"
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
MAX_RESULT_BYTES = 350_000  # a DynamoDB item holds 400 KB; keep room for the other attributes


def job_pk(tenant: str, job_id: str) -> str:
    return f"T#{tenant}#J#{job_id}"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Job:
    id: str
    tenant: str
    status: str
    created_at: int  # epoch ms
    updated_at: int
    model: str | None = None
    conversation_id: str | None = None
    attempts: int = 0
    started_at: int | None = None
    completed_at: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    last_error: dict[str, Any] | None = None
    source: str = "api"

    def public(self) -> dict[str, Any]:
        def sec(ms: int | None) -> int | None:
            return ms // 1000 if ms else None

        return {
            "id": self.id,
            "object": "chat.completion.job",
            "status": self.status,
            "model": self.model,
            "conversation_id": self.conversation_id,
            "created_at": sec(self.created_at),
            "started_at": sec(self.started_at),
            "completed_at": sec(self.completed_at),
            "attempts": self.attempts,
            "result": self.result,
            "error": self.error,
            "last_error": self.last_error if self.status not in TERMINAL else None,
        }


def _json_attr(item: dict, name: str) -> Any:
    attr = item.get(name)
    return json.loads(attr["S"]) if attr else None


class JobStore(Protocol):
    """What the job service and the worker need of job storage (the DynamoDB adapter below; an
    in-memory fake in ``tests/fakes.py``). Transitions apply only to a job still queued or running."""

    def get(self, tenant: str, job_id: str) -> Job | None: ...
    def get_many(self, tenant: str, job_ids: list[str]) -> dict[str, Job]: ...
    def create_all(self, jobs: list[Job]) -> None: ...
    def begin(self, message: JobMessage, request: ChatCompletionRequest) -> tuple[Job, bool]: ...
    def requeue(self, job: Job, error: dict[str, Any]) -> Job | None: ...
    def succeed(self, job: Job, result: dict[str, Any]) -> Job | None: ...
    def fail(self, job: Job, error: dict[str, Any], *, dead_lettered: bool = False) -> Job | None: ...
    def status(self, tenant: str, job_id: str) -> str | None: ...
    def cancel(self, tenant: str, job_id: str) -> tuple[Job | None, bool]: ...
    def dead_letter(self, tenant: str, job_id: str, error: dict[str, Any]) -> str: ...
    def claim_key(
        self, tenant: str, key: str, body_hash: str, job_ids: list[str], ttl_seconds: int
    ) -> IdempotencyRecord | None: ...
    def mark_enqueued(self, tenant: str, key: str) -> None: ...


class DynamoJobStore(IdempotencyKeyItems):
    """:class:`JobStore` on the gateway's table: job items and Idempotency-Key items (low-level client)."""

    def __init__(self, table_name: str, client: DynamoDBClient, *, ttl_days: int = 7) -> None:
        self.table = table_name
        self.client = client
        self.ttl_days = ttl_days

    def _key(self, tenant: str, job_id: str) -> dict:
        return {"PK": s(job_pk(tenant, job_id)), "SK": s(JOB_SK)}

    @staticmethod
    def _job(item: dict) -> Job:
        def num(name: str) -> int | None:
            return int(item[name]["N"]) if name in item else None

        return Job(
            id=item["job_id"]["S"],
            tenant=item["tenant"]["S"],
            status=item["status"]["S"],
            created_at=num("created_at") or 0,
            updated_at=num("updated_at") or 0,
            model=item.get("model", {}).get("S"),
            conversation_id=item.get("conversation_id", {}).get("S"),
            attempts=num("attempts") or 0,
            started_at=num("started_at"),
            completed_at=num("completed_at"),
            result=_json_attr(item, "result"),
            error=_json_attr(item, "error"),
            last_error=_json_attr(item, "last_error"),
            source=item.get("source", {}).get("S", "api"),
        )

    def item(self, job: Job) -> dict:
        item = {
            **self._key(job.tenant, job.id),
            "job_id": s(job.id),
            "tenant": s(job.tenant),
            "status": s(job.status),
            "attempts": n(job.attempts),
            "created_at": n(job.created_at),
            "updated_at": n(job.updated_at),
            "source": s(job.source),
        }
        if job.model:
            item["model"] = s(job.model)
        if job.conversation_id:
            item["conversation_id"] = s(job.conversation_id)
        if self.ttl_days:
            item["ttl"] = n(job.created_at // 1000 + self.ttl_days * 86400)
        return item

    # ---- reads --------------------------------------------------------------------
    def get(self, tenant: str, job_id: str) -> Job | None:
        if not JOB_ID_RE.match(job_id) or not TENANT_RE.match(tenant):
            return None
        resp = self.client.get_item(TableName=self.table, Key=self._key(tenant, job_id), ConsistentRead=True)
        return self._job(resp["Item"]) if "Item" in resp else None

    def get_many(self, tenant: str, job_ids: list[str]) -> dict[str, Job]:
        keys = [self._key(tenant, j) for j in job_ids]
        jobs = (self._job(item) for item in batch_get(self.client, self.table, keys, what="reading jobs"))
        return {job.id: job for job in jobs}

    # ---- creation -------------------------------------------------------------------
    def create_all(self, jobs: list[Job]) -> None:
        """Write new job items, each only if absent: one transaction per 100 (all or nothing)."""
        for start in range(0, len(jobs), 100):
            chunk = jobs[start : start + 100]
            items: list[Any] = [  # TransactWriteItemTypeDef, built as plain dicts
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": self.item(job),
                        "ConditionExpression": "attribute_not_exists(PK)",
                    }
                }
                for job in chunk
            ]
            try:
                self.client.transact_write_items(TransactItems=items)
            except ClientError as err:
                if error_code(err) != TRANSACTION_CANCELED:
                    raise
                for job in chunk:  # some exist already (a resumed submission): add only the missing
                    self.create(job)

    def create(self, job: Job) -> bool:
        try:
            self.client.put_item(
                TableName=self.table, Item=self.item(job), ConditionExpression="attribute_not_exists(PK)"
            )
            return True
        except ClientError as err:
            if error_code(err) == CONDITIONAL_CHECK_FAILED:
                return False
            raise

    # ---- transitions ----------------------------------------------------------------
    def begin(self, message: JobMessage, request: ChatCompletionRequest) -> tuple[Job, bool]:
        """Count an attempt and mark the job running, creating it when a direct producer sent the
        message (the API wrote none): one conditional write. Returns (job, started); ``started`` is
        False when the job had already ended (then ``job`` is as stored)."""
        now = now_ms()
        created = message.submitted_at or now
        sets = [
            "#status = :running",
            "attempts = if_not_exists(attempts, :zero) + :one",
            "started_at = if_not_exists(started_at, :now)",
            "updated_at = :now",
            "job_id = if_not_exists(job_id, :id)",
            "tenant = if_not_exists(tenant, :tenant)",
            "created_at = if_not_exists(created_at, :created)",
            "#source = if_not_exists(#source, :source)",
            "model = if_not_exists(model, :model)",
        ]
        values: dict[str, Any] = {
            ":running": s(RUNNING),
            ":queued": s(QUEUED),
            ":zero": n(0),
            ":one": n(1),
            ":now": n(now),
            ":id": s(message.job_id),
            ":tenant": s(message.tenant_id),
            ":created": n(created),
            ":source": s(message.source or "sqs"),
            ":model": s(request.model),
        }
        values.update({":failed": s(FAILED), ":true": {"BOOL": True}})
        names = {"#status": "status", "#source": "source", "#error": "error"}
        if request.conversation_id:
            sets.append("conversation_id = if_not_exists(conversation_id, :conv)")
            values[":conv"] = s(request.conversation_id)
        if self.ttl_days:
            sets.append("#ttl = if_not_exists(#ttl, :ttl)")
            values[":ttl"] = n(created // 1000 + self.ttl_days * 86400)
            names["#ttl"] = "ttl"
        try:
            resp = self.client.update_item(
                TableName=self.table,
                Key=self._key(message.tenant_id, message.job_id),
                # A failed job runs again only when its message was dead-lettered and redriven.
                UpdateExpression="SET " + ", ".join(sets) + " REMOVE dead_lettered, #error, completed_at",
                ConditionExpression="attribute_not_exists(PK) OR #status IN (:queued, :running) "
                "OR (#status = :failed AND dead_lettered = :true)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as err:
            if error_code(err) != CONDITIONAL_CHECK_FAILED:
                raise
            old: Any = (
                err.response.get("Item")
                or self.client.get_item(
                    TableName=self.table, Key=self._key(message.tenant_id, message.job_id), ConsistentRead=True
                )["Item"]
            )
            return self._job(old), False
        return self._job(resp["Attributes"]), True

    def _update(self, job: Job, expression: str, condition: str, values: dict, names: dict | None = None) -> Job | None:
        params: dict[str, Any] = {
            "TableName": self.table,
            "Key": self._key(job.tenant, job.id),
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ReturnValues": "ALL_NEW",
            "ExpressionAttributeNames": {"#status": "status", **(names or {})},
        }
        try:
            return self._job(self.client.update_item(**params)["Attributes"])
        except ClientError as err:
            if error_code(err) == CONDITIONAL_CHECK_FAILED:
                return None
            raise

    def status(self, tenant: str, job_id: str) -> str | None:
        """The job's status alone (the worker's cancel watch reads it while the job runs)."""
        resp = self.client.get_item(
            TableName=self.table,
            Key=self._key(tenant, job_id),
            ProjectionExpression="#status",
            ExpressionAttributeNames={"#status": "status"},
            ConsistentRead=True,
        )
        return resp.get("Item", {}).get("status", {}).get("S")

    def cancel(self, tenant: str, job_id: str) -> tuple[Job | None, bool]:
        """``queued``/``running`` → ``cancelled``, in one conditional write. Returns (job, cancelled):
        (None, False) for no such job, (the job as stored, False) when it had already finished."""
        if not JOB_ID_RE.match(job_id) or not TENANT_RE.match(tenant):
            return None, False
        now = n(now_ms())
        try:
            resp = self.client.update_item(
                TableName=self.table,
                Key=self._key(tenant, job_id),
                UpdateExpression="SET #status = :cancelled, completed_at = :now, updated_at = :now REMOVE last_error",
                ConditionExpression="#status IN (:queued, :running)",  # false for a missing item too
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":cancelled": s(CANCELLED),
                    ":queued": s(QUEUED),
                    ":running": s(RUNNING),
                    ":now": now,
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as err:
            if error_code(err) != CONDITIONAL_CHECK_FAILED:
                raise
            item: Any = err.response.get("Item")
            return (self._job(item) if item else self.get(tenant, job_id)), False
        return self._job(resp["Attributes"]), True

    def dead_letter(self, tenant: str, job_id: str, error: dict[str, Any]) -> str:
        """SQS gave up on the job's message: a queued/running job is failed with ``error``, a job the
        worker already failed keeps its error; both are flagged ``dead_lettered`` (a redriven message
        may run them again). Returns "failed", "already_failed", or the status it had ("unknown")."""
        ref = Job(job_id, tenant, "", 0, 0)
        if self.fail(ref, error, dead_lettered=True) is not None:
            return "failed"
        flag = {":t": {"BOOL": True}, ":failed": s(FAILED)}
        if self._update(ref, "SET dead_lettered = :t", "#status = :failed", flag) is not None:
            return "already_failed"
        job = self.get(tenant, job_id)
        return job.status if job is not None else "unknown"

    def requeue(self, job: Job, error: dict[str, Any]) -> Job | None:
        """A retryable failure: back to queued, the error kept as ``last_error``."""
        return self._update(
            job,
            "SET #status = :queued, last_error = :err, updated_at = :now",
            "#status IN (:queued, :running)",
            {":queued": s(QUEUED), ":running": s(RUNNING), ":err": s(canonical_json(error)), ":now": n(now_ms())},
        )

    def succeed(self, job: Job, result: dict[str, Any]) -> Job | None:
        encoded = canonical_json(result)
        if len(encoded.encode()) > MAX_RESULT_BYTES:
            return self.fail(
                job, error_object(JobResultTooLarge("The completion is too large to store as a job result."))
            )
        return self._update(
            job,
            "SET #status = :done, #result = :result, completed_at = :now, updated_at = :now REMOVE last_error",
            "#status IN (:queued, :running)",
            {
                ":done": s(SUCCEEDED),
                ":result": s(encoded),
                ":now": n(now_ms()),
                ":queued": s(QUEUED),
                ":running": s(RUNNING),
            },
            {"#result": "result"},
        )

    def fail(self, job: Job, error: dict[str, Any], *, dead_lettered: bool = False) -> Job | None:
        flag = ", dead_lettered = :t" if dead_lettered else ""
        return self._update(
            job,
            f"SET #status = :failed, #error = :err, completed_at = :now, updated_at = :now{flag} REMOVE last_error",
            "#status IN (:queued, :running)",
            {
                ":failed": s(FAILED),
                ":err": s(canonical_json(error)),
                ":now": n(now_ms()),
                ":queued": s(QUEUED),
                ":running": s(RUNNING),
                **({":t": {"BOOL": True}} if dead_lettered else {}),
            },
            {"#error": "error"},
        )
