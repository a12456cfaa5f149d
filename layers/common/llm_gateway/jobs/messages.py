"""The jobs queue message, versions 1 and 2: its model, its JSON Schemas and its parser.

``{"version": 2, "job_id", "tenant_id", "key_id"?, "request", "submitted_at"?, "source"?}`` on the
FIFO queue (``schemas/job-message.v2.json`` is the public contract; version 1 is the same without
``key_id`` and is still read), with ``MessageGroupId`` = the conversation id (or the job id) and
``MessageDeduplicationId`` = the job id. ``POST /v1/jobs`` sends version 2 naming the submitting
key, so the worker applies that key's limits as well as the tenant's; a message without a key id
(any version 1 message) is limited per tenant only. Direct producers send either version; the
worker creates the job item if the API did not.
"""

from __future__ import annotations

import json
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, model_validator

from llm_gateway.aws.dynamo import ID_RE as JOB_ID_RE
from llm_gateway.aws.dynamo import TENANT_RE
from llm_gateway.chat.models import ChatCompletionRequest, validation_reason

SCHEMA_VERSION: Literal[2] = 2  # what the gateway sends
SCHEMA_VERSIONS = (1, 2)  # what the worker reads
SCHEMA_DIR = Path(__file__).parent / "schemas"


def schema_path(version: int) -> Path:
    return SCHEMA_DIR / f"job-message.v{version}.json"


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex


class JobMessage(BaseModel):
    """The queue message (the JSON Schemas in ``schemas/`` are the public contract)."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1, 2] = SCHEMA_VERSION
    kind: Literal["chat.completion", "response"] | None = None  # None: a chat completion job
    job_id: StrictStr = Field(pattern=JOB_ID_RE.pattern)
    tenant_id: StrictStr = Field(pattern=TENANT_RE.pattern)
    key_id: StrictStr | None = Field(None, pattern=JOB_ID_RE.pattern)  # version 2: the key whose limits apply
    request: dict[str, Any]
    submitted_at: StrictInt | None = None  # epoch ms
    source: StrictStr | None = Field(None, max_length=64)

    @model_validator(mode="after")
    def _key_needs_version_2(self) -> JobMessage:
        if self.key_id is not None and self.version < 2:
            raise ValueError("key_id needs message version 2")
        return self

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


@lru_cache(maxsize=len(SCHEMA_VERSIONS))
def _schema_validator(version: int) -> Any:
    import jsonschema  # worker only; kept off the API's import path

    schema = json.loads(schema_path(version).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _ids(data: Any) -> dict[str, str | None]:
    """The message's job and tenant ids when they are well-formed (for the failure's record)."""
    ids: dict[str, str | None] = {"job_id": None, "tenant_id": None}
    if isinstance(data, dict):
        for name in ids:
            value = data.get(name)
            pattern = JOB_ID_RE if name == "job_id" else TENANT_RE
            if isinstance(value, str) and pattern.match(value):
                ids[name] = value
    return ids


def _check_schema(data: Any, ids: dict[str, str | None]) -> None:
    """Validate against the message's version's schema; an unknown version is judged by the newest
    schema, whose ``version`` const names what is read."""
    version = data.get("version") if isinstance(data, dict) else None
    known = type(version) is int and version in SCHEMA_VERSIONS
    error = next(iter(_schema_validator(version if known else SCHEMA_VERSION).iter_errors(data)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise InvalidJobMessage(f"schema violation at {where}: {error.validator}", **ids)


def response_message(body: str) -> JobMessage | None:
    """The message of a background response (``kind: "response"``), validated against the schema;
    None for any other message (a chat job, or one the chat parser will refuse)."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("kind") != "response":
        return None
    ids = _ids(data)
    _check_schema(data, ids)
    try:
        return JobMessage.model_validate(data)
    except ValidationError as exc:
        raise InvalidJobMessage(f"invalid message: {validation_reason(exc.errors())[0]}", **ids) from exc


def parse_job_message(body: str) -> tuple[JobMessage, ChatCompletionRequest]:
    """Validate a queue message against its version's schema and the Chat Completions model.

    Raises :class:`InvalidJobMessage` with a reason that names the field (never its value).
    """
    try:
        data = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise InvalidJobMessage("message body is not JSON") from exc
    ids = _ids(data)
    _check_schema(data, ids)
    try:
        message = JobMessage.model_validate(data)
        request = ChatCompletionRequest.model_validate(message.request)
    except ValidationError as exc:
        raise InvalidJobMessage(f"invalid message: {validation_reason(exc.errors())[0]}", **ids) from exc
    return message, request
