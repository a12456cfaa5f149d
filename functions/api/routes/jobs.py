"""Async jobs: a chat request or a batch of them, run through SQS."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Request
from fastapi.responses import JSONResponse

import openapi
from deps import CallerDep, ServicesDep
from llm_gateway.chat.models import ChatCompletionRequest
from llm_gateway.errors import (
    ConfigurationError,
    ConversationBusy,
    IdempotencyConflict,
    NotCancellable,
    NotFound,
    QueueUnavailable,
)
from llm_gateway.jobs.shapes import JobBatchRequest, JobList, JobObject

router = APIRouter(tags=["jobs"])


SUBMIT_ERRORS = (NotFound, ConversationBusy, IdempotencyConflict, ConfigurationError, QueueUnavailable)


@router.post(
    "/v1/jobs",
    status_code=202,
    response_model=None,
    responses={
        **openapi.body(JobObject | JobList, "Accepted: the job, or the batch's jobs in order", 202),
        **openapi.errors(*SUBMIT_ERRORS),
    },
    openapi_extra=openapi.request_body(ChatCompletionRequest, JobBatchRequest),
)
def create_jobs(
    request: Request,
    who: CallerDep,
    services: ServicesDep,
    body: Annotated[dict[str, Any], Body()],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """A chat completion request (optionally with ``conversation_id``), or ``{"requests": [...]}``
    (up to 100), run asynchronously. Answers 202 with the job, or the list of jobs in order."""
    submission = services.jobs.submit(who.tenant, body, idempotency_key, key_id=who.key_id)
    if not submission.replayed:
        request.state.metrics.add("JobsQueued", len(submission.jobs))
    content = {"object": "list", "data": submission.jobs} if submission.batch else submission.jobs[0]
    headers = {"Idempotent-Replayed": "true"} if submission.replayed else None
    return JSONResponse(content, status_code=202, headers=headers)


@router.get("/v1/jobs/{job_id}", response_model=None, responses={**openapi.body(JobObject), **openapi.errors(NotFound)})
def get_job(job_id: str, who: CallerDep, services: ServicesDep) -> dict[str, Any]:
    return services.jobs.get(who.tenant, job_id)


@router.post(
    "/v1/jobs/{job_id}/cancel",
    response_model=None,
    responses={**openapi.body(JobObject, "The job, now cancelled"), **openapi.errors(NotFound, NotCancellable)},
)
def cancel_job(job_id: str, who: CallerDep, services: ServicesDep) -> dict[str, Any]:
    """Cancel a job: a queued one is ``cancelled`` and never runs; a running one stops at its next
    checkpoint (before an upstream attempt, or as its reply arrives) with its upstream call closed,
    and stores nothing. A job that already finished is a 409 (``job_not_cancellable``)."""
    return services.jobs.cancel(who.tenant, job_id)
