"""OpenAI Responses: create (JSON or typed SSE events), retrieve, delete, input items."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Query, Request, Response

import openapi
from deps import CallerDep, ServicesDep
from llm_gateway.errors import NotFound
from llm_gateway.observability import logger
from llm_gateway.reports import TurnReport
from llm_gateway.responses.events import ResponseEventStream
from llm_gateway.responses.models import CreateResponse
from llm_gateway.responses.shapes import ResponseDeleted, ResponseInputItems, ResponseObject, ResponseStreamEvent
from routes._turn import run_turn
from sse import ChatStreamResponse

router = APIRouter(tags=["responses"])
ROUTE = "responses"  # the metrics/log route of every request here


def sse_frame(event: dict[str, Any]) -> bytes:
    """One typed event: ``event: <type>`` + ``data: <json>`` (Responses streams end without [DONE])."""
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


class ResponseStreamResponse(ChatStreamResponse):
    """SSE for a streamed response: the chat stream's lifecycle (worker thread per step, abort and
    close on disconnect, metrics) with Responses events instead of chat chunks."""

    def __init__(self, stream: ResponseEventStream, report: TurnReport, metrics: Any) -> None:
        self.events = stream
        super().__init__(stream.chat, report, metrics)
        self.headers["x-response-id"] = stream.response_id

    async def _events(self) -> AsyncIterator[bytes]:
        while True:
            try:
                events = await anyio.to_thread.run_sync(self.events.next_events, abandon_on_cancel=True)
            except Exception as exc:
                logger.exception("response stream failed", extra={"error_type": type(exc).__name__})
                events = self.events.fail_internal()
                for event in events:
                    yield sse_frame(event)
                return
            if events is None:
                return
            if events and events[-1]["type"] == "response.failed":
                outcome = self.stream.stats.outcome
                logger.warning("response stream failed after the first byte", extra={"outcome": outcome})
            for event in events:
                yield sse_frame(event)


CREATED: openapi.Responses = {
    200: {
        "model": ResponseObject,
        "description": "The response; with `stream: true`, its typed server-sent events (no `[DONE]`).",
        "content": openapi.event_stream(ResponseStreamEvent, done=False),
    }
}


@router.post("/v1/responses", response_model=None, responses={**CREATED, **openapi.errors(*openapi.TURN_ERRORS)})
def create_response(
    body: CreateResponse, request: Request, response: Response, who: CallerDep, services: ServicesDep
) -> dict[str, Any] | Response:
    request.state.metrics.route(ROUTE)
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


@router.get(
    "/v1/responses/{response_id}",
    response_model=None,
    responses={**openapi.body(ResponseObject), **openapi.errors(NotFound)},
)
def retrieve_response(response_id: str, request: Request, who: CallerDep, services: ServicesDep) -> dict[str, Any]:
    request.state.metrics.route(ROUTE)
    return services.responses.get(who.tenant, response_id)


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
