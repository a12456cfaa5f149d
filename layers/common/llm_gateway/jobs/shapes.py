"""The jobs API's wire shapes, as documented in /openapi.json (``POST /v1/jobs``, ``GET /v1/jobs/{id}``,
``POST /v1/jobs/{id}/cancel``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from llm_gateway.chat.models import ChatCompletionRequest


class JobBatchRequest(BaseModel):
    """``{"requests": [...]}``: up to 100 chat requests run as one batch of jobs, in order."""

    requests: list[ChatCompletionRequest] = Field(min_length=1, max_length=100)


class JobObject(BaseModel):
    id: str
    object: Literal["chat.completion.job"]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    model: str | None
    conversation_id: str | None
    created_at: int | None
    started_at: int | None
    completed_at: int | None
    attempts: int
    result: dict[str, Any] | None = Field(description="The chat.completion, once the job succeeded.")
    error: dict[str, Any] | None = Field(description="OpenAI's error object, once the job failed.")
    last_error: dict[str, Any] | None = Field(description="The error of the last failed attempt, while retried.")


class JobList(BaseModel):
    object: Literal["list"]
    data: list[JobObject]
