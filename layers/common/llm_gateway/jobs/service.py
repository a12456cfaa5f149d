"""Async chat jobs: the job record, the queue message, and submission.

* **Job item** (same table): ``PK = T#<tenant>#J#<job>``, ``SK = JOB`` — status
  (``queued`` → ``running`` → ``succeeded`` | ``failed``; a retryable failure puts it back to
  ``queued`` with ``last_error``), attempts, the ``chat.completion`` result or an OpenAI-shaped
  error, timestamps, TTL. The request itself is *not* stored here: the queue message carries it.
* **Idempotency-Key item**: ``PK = T#<tenant>#IK#<sha256(key)>``, ``SK = IDEMPOTENCY`` — the
  body's hash, the job ids it created, whether every message was enqueued; valid 24 h.
* **Queue message** (``schemas/job-message.v1.json``): ``{"version": 1, "job_id", "tenant_id",
  "request", "submitted_at"?, "source"?}`` on the FIFO queue with ``MessageGroupId`` = the
  conversation id (or the job id) and ``MessageDeduplicationId`` = the job id. Direct producers
  send the same message; the worker creates the job item if the API did not.

Submission validates every request (model, sizes, conversation ownership, message size) before
it writes anything, so a bad body is a 4xx with nothing stored and nothing enqueued.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from llm_gateway.chat.models import ChatCompletionRequest, validation_reason
from llm_gateway.conversations.store import ConversationStore, now_ms
from llm_gateway.errors import (
    GatewayError,
    IdempotencyConflict,
    InvalidRequest,
    PayloadTooLarge,
    QueueUnavailable,
    error_body,
    to_http,
)
from llm_gateway.settings import Settings

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).parent / "schemas" / "job-message.v1.json"
JOB_SK = "JOB"
IK_SK = "IDEMPOTENCY"
QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
TERMINAL = (SUCCEEDED, FAILED)
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
TENANT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
MAX_RESULT_BYTES = 350_000  # a DynamoDB item holds 400 KB; keep room for the other attributes
SQS_BATCH_ENTRIES = 10


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex


def job_pk(tenant: str, job_id: str) -> str:
    return f"T#{tenant}#J#{job_id}"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- the message


class JobMessage(BaseModel):
    """Version 1 of the queue message (the JSON Schema in ``schemas/`` is the public contract)."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    job_id: StrictStr = Field(pattern=JOB_ID_RE.pattern)
    tenant_id: StrictStr = Field(pattern=TENANT_RE.pattern)
    request: dict[str, Any]
    submitted_at: StrictInt | None = None  # epoch ms
    source: StrictStr | None = Field(None, max_length=64)

    def group_id(self) -> str:
        return self.request.get("conversation_id") or self.job_id

    def body(self) -> str:
        return json.dumps(self.model_dump(exclude_none=True), separators=(",", ":"), ensure_ascii=False)


class InvalidJobMessage(Exception):
    """A queue message that does not follow the schema. ``job_id``/``tenant_id`` when readable."""

    def __init__(self, reason: str, *, job_id: str | None = None, tenant_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.job_id = job_id
        self.tenant_id = tenant_id


@lru_cache(maxsize=1)
def _schema_validator() -> Any:
    import jsonschema  # worker only; kept off the API's import path

    schema = json.loads(SCHEMA_PATH.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def parse_job_message(body: str) -> tuple[JobMessage, ChatCompletionRequest]:
    """Validate a queue message against the v1 schema and the Chat Completions model.

    Raises :class:`InvalidJobMessage` with a reason that names the field (never its value).
    """
    try:
        data = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise InvalidJobMessage("message body is not JSON") from exc
    ids: dict[str, str | None] = {"job_id": None, "tenant_id": None}
    if isinstance(data, dict):
        for name in ids:
            value = data.get(name)
            pattern = JOB_ID_RE if name == "job_id" else TENANT_RE
            if isinstance(value, str) and pattern.match(value):
                ids[name] = value
    error = next(iter(_schema_validator().iter_errors(data)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise InvalidJobMessage(f"schema violation at {where}: {error.validator}", **ids)
    try:
        message = JobMessage.model_validate(data)
        request = ChatCompletionRequest.model_validate(message.request)
    except ValidationError as exc:
        raise InvalidJobMessage(f"invalid message: {validation_reason(exc.errors())[0]}", **ids) from exc
    return message, request


# --------------------------------------------------------------------------- the job record


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


def _s(value: str) -> dict:
    return {"S": value}


def _n(value: int | float) -> dict:
    return {"N": str(value)}


def _code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code", "")


def _json_attr(item: dict, name: str) -> Any:
    attr = item.get(name)
    return json.loads(attr["S"]) if attr else None


class JobStore:
    """Job items and Idempotency-Key items on the gateway's table (low-level client)."""

    def __init__(self, table_name: str, client: Any, *, ttl_days: int = 7) -> None:
        self.table = table_name
        self.client = client
        self.ttl_days = ttl_days

    def _key(self, tenant: str, job_id: str) -> dict:
        return {"PK": _s(job_pk(tenant, job_id)), "SK": _s(JOB_SK)}

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
            "job_id": _s(job.id),
            "tenant": _s(job.tenant),
            "status": _s(job.status),
            "attempts": _n(job.attempts),
            "created_at": _n(job.created_at),
            "updated_at": _n(job.updated_at),
            "source": _s(job.source),
        }
        if job.model:
            item["model"] = _s(job.model)
        if job.conversation_id:
            item["conversation_id"] = _s(job.conversation_id)
        if self.ttl_days:
            item["ttl"] = _n(job.created_at // 1000 + self.ttl_days * 86400)
        return item

    # ---- reads --------------------------------------------------------------------
    def get(self, tenant: str, job_id: str) -> Job | None:
        if not JOB_ID_RE.match(job_id) or not TENANT_RE.match(tenant):
            return None
        resp = self.client.get_item(TableName=self.table, Key=self._key(tenant, job_id), ConsistentRead=True)
        return self._job(resp["Item"]) if "Item" in resp else None

    def get_many(self, tenant: str, job_ids: list[str]) -> dict[str, Job]:
        found: dict[str, Job] = {}
        for start in range(0, len(job_ids), 100):
            keys = {
                self.table: {
                    "Keys": [self._key(tenant, j) for j in job_ids[start : start + 100]],
                    "ConsistentRead": True,
                }
            }
            while keys:
                resp = self.client.batch_get_item(RequestItems=keys)
                for item in resp["Responses"].get(self.table, []):
                    job = self._job(item)
                    found[job.id] = job
                keys = resp.get("UnprocessedKeys") or {}
        return found

    # ---- creation -------------------------------------------------------------------
    def create_all(self, jobs: list[Job]) -> None:
        """Write new job items, each only if absent: one transaction per 100 (all or nothing)."""
        for start in range(0, len(jobs), 100):
            chunk = jobs[start : start + 100]
            items = [
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
                if _code(err) != "TransactionCanceledException":
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
            if _code(err) == "ConditionalCheckFailedException":
                return False
            raise

    def ensure(self, message: JobMessage, request: ChatCompletionRequest) -> Job:
        """The job a message names; created from the message when a direct producer sent it."""
        job = self.get(message.tenant_id, message.job_id)
        if job is not None:
            return job
        now = now_ms()
        job = Job(
            id=message.job_id,
            tenant=message.tenant_id,
            status=QUEUED,
            created_at=message.submitted_at or now,
            updated_at=now,
            model=request.model,
            conversation_id=request.conversation_id,
            source=message.source or "sqs",
        )
        if self.create(job):
            return job
        existing = self.get(message.tenant_id, message.job_id)
        assert existing is not None
        return existing

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
            ":running": _s(RUNNING),
            ":queued": _s(QUEUED),
            ":zero": _n(0),
            ":one": _n(1),
            ":now": _n(now),
            ":id": _s(message.job_id),
            ":tenant": _s(message.tenant_id),
            ":created": _n(created),
            ":source": _s(message.source or "sqs"),
            ":model": _s(request.model),
        }
        names = {"#status": "status", "#source": "source"}
        if request.conversation_id:
            sets.append("conversation_id = if_not_exists(conversation_id, :conv)")
            values[":conv"] = _s(request.conversation_id)
        if self.ttl_days:
            sets.append("#ttl = if_not_exists(#ttl, :ttl)")
            values[":ttl"] = _n(created // 1000 + self.ttl_days * 86400)
            names["#ttl"] = "ttl"
        try:
            resp = self.client.update_item(
                TableName=self.table,
                Key=self._key(message.tenant_id, message.job_id),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="attribute_not_exists(PK) OR #status IN (:queued, :running)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as err:
            if _code(err) != "ConditionalCheckFailedException":
                raise
            old = (
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
            if _code(err) == "ConditionalCheckFailedException":
                return None
            raise

    def start(self, job: Job) -> Job | None:
        """Count an attempt and mark it running; None when the job already ended."""
        now = now_ms()
        return self._update(
            job,
            "SET #status = :running, attempts = attempts + :one, started_at = if_not_exists(started_at, :now), "
            "updated_at = :now",
            "attribute_exists(PK) AND #status IN (:queued, :running)",
            {":running": _s(RUNNING), ":queued": _s(QUEUED), ":one": _n(1), ":now": _n(now)},
        )

    def requeue(self, job: Job, error: dict[str, Any]) -> Job | None:
        """A retryable failure: back to queued, the error kept as ``last_error``."""
        return self._update(
            job,
            "SET #status = :queued, last_error = :err, updated_at = :now",
            "#status IN (:queued, :running)",
            {":queued": _s(QUEUED), ":running": _s(RUNNING), ":err": _s(canonical_json(error)), ":now": _n(now_ms())},
        )

    def succeed(self, job: Job, result: dict[str, Any]) -> Job | None:
        encoded = canonical_json(result)
        if len(encoded.encode()) > MAX_RESULT_BYTES:
            return self.fail(
                job,
                error_body("The completion is too large to store as a job result.", "server_error", "result_too_large")[
                    "error"
                ],
            )
        return self._update(
            job,
            "SET #status = :done, #result = :result, completed_at = :now, updated_at = :now REMOVE last_error",
            "#status IN (:queued, :running)",
            {
                ":done": _s(SUCCEEDED),
                ":result": _s(encoded),
                ":now": _n(now_ms()),
                ":queued": _s(QUEUED),
                ":running": _s(RUNNING),
            },
            {"#result": "result"},
        )

    def fail(self, job: Job, error: dict[str, Any]) -> Job | None:
        return self._update(
            job,
            "SET #status = :failed, #error = :err, completed_at = :now, updated_at = :now REMOVE last_error",
            "#status IN (:queued, :running)",
            {
                ":failed": _s(FAILED),
                ":err": _s(canonical_json(error)),
                ":now": _n(now_ms()),
                ":queued": _s(QUEUED),
                ":running": _s(RUNNING),
            },
            {"#error": "error"},
        )

    # ---- Idempotency-Key ----------------------------------------------------------------
    def _ik_key(self, tenant: str, key: str) -> dict:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return {"PK": _s(f"T#{tenant}#IK#{digest}"), "SK": _s(IK_SK)}

    def claim_key(
        self, tenant: str, key: str, body_hash: str, job_ids: list[str], ttl_seconds: int
    ) -> IdempotencyRecord | None:
        """Claim an Idempotency-Key for these jobs. None when claimed; the earlier record otherwise."""
        now = now_ms()
        item = {
            **self._ik_key(tenant, key),
            "body_hash": _s(body_hash),
            "job_ids": _s(json.dumps(job_ids)),
            "created_at": _n(now),
            "expires_at": _n(now + ttl_seconds * 1000),
            "enqueued": {"BOOL": False},
            "ttl": _n(now // 1000 + ttl_seconds),
        }
        try:
            self.client.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(PK) OR expires_at < :now",
                ExpressionAttributeValues={":now": _n(now)},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return None
        except ClientError as err:
            if _code(err) != "ConditionalCheckFailedException":
                raise
            old = err.response.get("Item")
            if not old:  # older botocore without the item: read it
                old = self.client.get_item(TableName=self.table, Key=self._ik_key(tenant, key), ConsistentRead=True)[
                    "Item"
                ]
            return IdempotencyRecord(
                old["body_hash"]["S"],
                json.loads(old["job_ids"]["S"]),
                int(old["created_at"]["N"]),
                old.get("enqueued", {}).get("BOOL", False),
            )

    def mark_enqueued(self, tenant: str, key: str) -> None:
        self.client.update_item(
            TableName=self.table,
            Key=self._ik_key(tenant, key),
            UpdateExpression="SET enqueued = :t",
            ExpressionAttributeValues={":t": {"BOOL": True}},
        )


@dataclass(frozen=True)
class IdempotencyRecord:
    body_hash: str
    job_ids: list[str]
    created_at: int
    enqueued: bool


# --------------------------------------------------------------------------- submission


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
    sqs: Callable[[], Any]  # the SQS client, built on first use (keeps it off the cold-start path)
    queue_url: str | None = None

    # ---- reads ----------------------------------------------------------------------
    def get(self, tenant: str, job_id: str) -> dict[str, Any]:
        from llm_gateway.errors import NotFound

        job = self.store.get(tenant, job_id)
        if job is None:
            raise NotFound(f"No job found with id '{job_id[:64]}'.", param="job_id")
        return job.public()

    # ---- submit ---------------------------------------------------------------------
    def submit(self, tenant: str, body: Any, idempotency_key: str | None = None) -> Submission:
        if idempotency_key is not None and not _IDEMPOTENCY_KEY_RE.match(idempotency_key):
            raise InvalidRequest("'Idempotency-Key' must be 1-255 visible ASCII characters.", param="Idempotency-Key")
        if not self.queue_url:
            from llm_gateway.errors import ConfigurationError

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
            item.message = JobMessage(job_id=job_id, tenant_id=tenant, request=item.raw, submitted_at=now, source="api")
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
                entries = [
                    {
                        "Id": str(i),
                        "MessageBody": prepared[i].body,
                        "MessageGroupId": prepared[i].message.group_id(),  # type: ignore[union-attr]
                        "MessageDeduplicationId": prepared[i].job_id,
                    }
                    for i in chunk
                ]
                resp = sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
                failed = sorted(int(f["Id"]) for f in resp.get("Failed", []))
                if failed:
                    sent = failed[0]
                    raise QueueUnavailable("The jobs queue refused a message; retry later.")
                sent = chunk[-1] + 1
        except (ClientError, QueueUnavailable, OSError) as exc:
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
