"""The Responses API's wire shapes as /openapi.json documents them (the service builds the bodies:
``translate.response_object`` holds every field the openai SDK's ``Response`` type knows)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _OpenShape(BaseModel):
    model_config = ConfigDict(extra="allow")


class ResponseObject(_OpenShape):
    """OpenAI's Response object (the fields every SDK reads; the rest as OpenAI documents them)."""

    id: str
    object: Literal["response"]
    created_at: int
    status: str
    model: str
    output: list[dict[str, Any]]
    error: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None


class ResponseStreamEvent(_OpenShape):
    """One typed event of a streamed response (``event: <type>``; ``data`` holds this)."""

    type: str
    sequence_number: int


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response.deleted"]
    deleted: bool


class ResponseInputItems(BaseModel):
    object: Literal["list"]
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool
