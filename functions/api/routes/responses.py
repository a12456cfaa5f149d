"""OpenAI Responses: create (JSON or typed SSE events), retrieve (or replay its events), delete, input items."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

import openapi
from deps import CallerDep, ServicesDep
from llm_gateway.deadline import Deadline, Scope, bounded
from llm_gateway.errors import (
    ConfigurationError,
    IdempotencyConflict,
    InvalidRequest,
    NotCancellable,
    NotFound,
    QueueUnavailable,
)
from llm_gateway.observability import logger
from llm_gateway.reports import TurnReport
from llm_gateway.responses.event_log import EventFollower, StoredEvents
from llm_gateway.responses.events import ResponseEventStream
from llm_gateway.responses.models import CreateResponse
from llm_gateway.responses.shapes import ResponseDeleted, ResponseInputItems, ResponseObject, ResponseStreamEvent
from middleware import deadline_for
from pump import Step
from routes._turn import run_turn
from sse import ChatStreamResponse

router = APIRouter(tags=["responses"])
ROUTE = "responses"  # the metrics/log route of every request here


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # one encoder for every event


def sse_frame(event: dict[str, Any]) -> bytes:
    """One typed event: ``event: <type>`` + ``data: <json>`` (Responses streams end without [DONE])."""
    data = _ENCODE(event)
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


class ResponseStreamResponse(ChatStreamResponse):
    """SSE for a streamed response: the chat stream's lifecycle (first event from the route's thread,
    the rest from one pump thread, abort and close on disconnect, metrics) with Responses events
    instead of chat chunks."""

    def __init__(self, stream: ResponseEventStream, report: TurnReport, metrics: Any) -> None:
        self.events = stream
        super().__init__(stream.chat, report, metrics)
        self.headers["x-response-id"] = stream.response_id

    def _opening(self) -> Step:
        """``response.created``, ``response.in_progress`` and the first chunk's events (here already), sent together."""
        data, last = self._step()
        if last:
            return data, last
        more, last = self._step()
        return data + more, last

    def _step(self) -> Step:
        try:
            events = self.events.next_events()
        except Exception as exc:  # noqa: BLE001 - ends the stream with response.failed
            logger.exception("response stream failed", extra={"error_type": type(exc).__name__})
            return b"".join(sse_frame(e) for e in self.events.fail_internal()), True
        if events and events[-1]["type"] == "response.failed":
            outcome = self.stream.stats.outcome
            logger.warning("response stream failed after the first byte", extra={"outcome": outcome})
        return b"".join(sse_frame(e) for e in events or ()), self.events.done


class ReplayStreamResponse(StreamingResponse):
    """SSE of a stored response's events (``GET …?stream=true``): what is persisted after the
    client's ``starting_after``, then new batches as they are written, until the terminal one.
    Reads run in a worker thread; between empty polls the event loop sleeps, so an idle follower
    holds no thread. While nothing new arrives (a queued response) an SSE comment line is sent every
    KEEPALIVE_SECONDS, so proxies do not cut an idle stream (SDKs skip comments). Ends at the stream
    deadline (the client resumes from its last event)."""

    KEEPALIVE_SECONDS = 15.0

    def __init__(self, events: EventFollower | StoredEvents, deadline: Deadline, response_id: str) -> None:
        self.events = events
        self.deadline = deadline
        self.scope = Scope(deadline)  # its store reads are bounded by the stream's deadline, not the request's
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "x-response-id": response_id}
        super().__init__(self._events(), media_type="text/event-stream", headers=headers)

    async def _events(self) -> AsyncIterator[bytes]:
        quiet_since = time.monotonic()
        while not self.events.done and not self.deadline.expired():
            batch = await anyio.to_thread.run_sync(self._poll, abandon_on_cancel=True)
            for event in batch:
                yield sse_frame(event)
            if batch:
                quiet_since = time.monotonic()
            elif not self.events.done:
                if time.monotonic() - quiet_since >= self.KEEPALIVE_SECONDS:
                    quiet_since = time.monotonic()
                    yield b": keep-alive\n\n"
                await anyio.sleep(self.events.poll_seconds)

    def _poll(self) -> Any:
        with bounded(self.scope):
            return self.events.poll()


CREATED: openapi.Responses = {
    200: {
        "model": ResponseObject,
        "description": "The response; with `stream: true`, its typed server-sent events (no `[DONE]`).",
        "content": openapi.event_stream(ResponseStreamEvent, done=False),
    }
}


BACKGROUND_ERRORS = (IdempotencyConflict, ConfigurationError, QueueUnavailable)


@router.post(
    "/v1/responses",
    response_model=None,
    responses={**CREATED, **openapi.errors(*openapi.TURN_ERRORS, *BACKGROUND_ERRORS)},
)
def create_response(
    body: CreateResponse,
    request: Request,
    response: Response,
    who: CallerDep,
    services: ServicesDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, Any] | Response:
    """With ``background: true`` the response is queued and answered at once (``status: queued``;
    with ``stream: true``, its events as they are produced); ``Idempotency-Key`` as for /v1/jobs."""
    request.state.metrics.route(ROUTE)
    if body.background:
        queued, replayed = services.background.submit(who.tenant, body, idempotency_key, key_id=who.key_id)
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
        if not body.stream:
            return queued
        settings = services.settings
        events = services.responses.replay(who.tenant, queued["id"], None)
        deadline = deadline_for(
            request.state.headers, settings.stream_deadline_seconds, settings.deadline_margin_seconds
        )
        return ReplayStreamResponse(events, deadline, queued["id"])
    return run_turn(
        request,
        response,
        who,
        services,
        stream=(lambda tenant, deadline, report: services.responses.stream(tenant, body, deadline, report))
        if body.stream
        else None,
        complete=lambda tenant, deadline, report: services.responses.create(tenant, body, deadline, report),
        wrap=ResponseStreamResponse,
    )


RETRIEVED: openapi.Responses = {
    200: {
        "model": ResponseObject,
        "description": "The response; with `stream=true`, its typed server-sent events after `starting_after` "
        "(a background response's are followed live until it ends).",
        "content": openapi.event_stream(ResponseStreamEvent, done=False),
    }
}


@router.get("/v1/responses/{response_id}", response_model=None, responses={**RETRIEVED, **openapi.errors(NotFound)})
def retrieve_response(
    response_id: str,
    request: Request,
    who: CallerDep,
    services: ServicesDep,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=0, le=1_000_000_000)] = None,
    include_obfuscation: bool | None = None,  # we never add obfuscation padding: accepted, ignored
) -> dict[str, Any] | Response:
    request.state.metrics.route(ROUTE)
    if not stream:
        if starting_after is not None:
            raise InvalidRequest("'starting_after' needs 'stream=true'.", param="starting_after")
        return services.responses.get(who.tenant, response_id)
    settings = services.settings
    events = services.responses.replay(who.tenant, response_id, starting_after)
    deadline = deadline_for(request.state.headers, settings.stream_deadline_seconds, settings.deadline_margin_seconds)
    return ReplayStreamResponse(events, deadline, response_id)


@router.post(
    "/v1/responses/{response_id}/cancel",
    response_model=None,
    responses={**openapi.body(ResponseObject), **openapi.errors(NotFound, NotCancellable)},
)
def cancel_response(response_id: str, request: Request, who: CallerDep, services: ServicesDep) -> dict[str, Any]:
    """Cancel a background response: a queued one never runs, a running one stops at its next
    checkpoint; a cancelled one is returned as it is; a finished one is a 409."""
    request.state.metrics.route(ROUTE)
    return services.background.cancel(who.tenant, response_id)


@router.delete(
    "/v1/responses/{response_id}",
    response_model=None,
    responses={**openapi.body(ResponseDeleted), **openapi.errors(NotFound)},
)
def delete_response(response_id: str, request: Request, who: CallerDep, services: ServicesDep) -> dict[str, Any]:
    request.state.metrics.route(ROUTE)
    return services.responses.delete(who.tenant, response_id)


@router.get(
    "/v1/responses/{response_id}/input_items",
    response_model=None,
    responses={**openapi.body(ResponseInputItems), **openapi.errors(NotFound)},
)
def list_input_items(
    response_id: str,
    request: Request,
    who: CallerDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: Annotated[str | None, Query(max_length=128)] = None,
) -> dict[str, Any]:
    request.state.metrics.route(ROUTE)
    return services.responses.input_items(who.tenant, response_id, limit=limit, order=order, after=after)
