"""Async jobs: a chat request or a batch of them, run through SQS."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Request
from fastapi.responses import JSONResponse

from deps import CallerDep, ServicesDep

router = APIRouter(tags=["jobs"])


@router.post("/v1/jobs", status_code=202)
def create_jobs(
    request: Request,
    who: CallerDep,
    services: ServicesDep,
    body: Annotated[dict[str, Any], Body()],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """A chat completion request (optionally with ``conversation_id``), or ``{"requests": [...]}``
    (up to 100), run asynchronously. Answers 202 with the job, or the list of jobs in order."""
    submission = services.jobs.submit(who.tenant, body, idempotency_key)
    if not submission.replayed:
        request.state.metrics.add("JobsQueued", len(submission.jobs))
    content = {"object": "list", "data": submission.jobs} if submission.batch else submission.jobs[0]
    headers = {"Idempotent-Replayed": "true"} if submission.replayed else None
    return JSONResponse(content, status_code=202, headers=headers)


@router.get("/v1/jobs/{job_id}")
def get_job(job_id: str, who: CallerDep, services: ServicesDep) -> dict[str, Any]:
    return services.jobs.get(who.tenant, job_id)
