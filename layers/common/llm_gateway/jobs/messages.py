"""The jobs queue message, version 1: its model, its JSON Schema and its parser.

``{"version": 1, "job_id", "tenant_id", "request", "submitted_at"?, "source"?}`` on the FIFO
queue (``schemas/job-message.v1.json`` is the public contract), with ``MessageGroupId`` = the
conversation id (or the job id) and ``MessageDeduplicationId`` = the job id. Direct producers send
the same message; the worker creates the job item if the API did not.
"""

from __future__ import annotations

import json
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from llm_gateway.aws.dynamo import ID_RE as JOB_ID_RE
from llm_gateway.aws.dynamo import TENANT_RE
from llm_gateway.chat.models import ChatCompletionRequest, validation_reason

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).parent / "schemas" / "job-message.v1.json"


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex


class JobMessage(BaseModel):
    """Version 1 of the queue message (the JSON Schema in ``schemas/`` is the public contract)."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    kind: Literal["chat.completion", "response"] | None = None  # None: a chat completion job
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


def response_message(body: str) -> JobMessage | None:
    """The message of a background response (``kind: "response"``), validated against the schema;
    None for any other message (a chat job, or one the chat parser will refuse)."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("kind") != "response":
        return None
    error = next(iter(_schema_validator().iter_errors(data)), None)
    job_id, tenant_id = data.get("job_id"), data.get("tenant_id")
    ids = {
        "job_id": job_id if isinstance(job_id, str) and JOB_ID_RE.match(job_id) else None,
        "tenant_id": tenant_id if isinstance(tenant_id, str) and TENANT_RE.match(tenant_id) else None,
    }
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise InvalidJobMessage(f"schema violation at {where}: {error.validator}", **ids)
    try:
        return JobMessage.model_validate(data)
    except ValidationError as exc:
        raise InvalidJobMessage(f"invalid message: {validation_reason(exc.errors())[0]}", **ids) from exc


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
