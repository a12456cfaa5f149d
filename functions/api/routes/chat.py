"""Chat Completions: one turn, JSON or SSE."""

from typing import Any

from fastapi import APIRouter, Request, Response

import openapi
from deps import CallerDep, ServicesDep
from llm_gateway.chat.models import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from llm_gateway.reports import StreamReport, TurnReport
from middleware import deadline_for
from sse import DEPLOYMENT_HEADER, ChatStreamResponse

router = APIRouter(tags=["chat"])


COMPLETION: openapi.Responses = {
    200: {
        "model": ChatCompletion,
        "description": "The completion; with `stream: true`, server-sent `chat.completion.chunk` events.",
        "content": openapi.event_stream(ChatCompletionChunk),
    }
}


@router.post(
    "/v1/chat/completions", response_model=None, responses={**COMPLETION, **openapi.errors(*openapi.TURN_ERRORS)}
)
def chat_completions(
    body: ChatCompletionRequest, request: Request, response: Response, who: CallerDep, services: ServicesDep
) -> dict[str, Any] | Response:
    state, settings = request.state, services.settings
    if body.stream:
        # No 29 s buffered-integration limit for a stream: the stream deadline (and the Lambda's).
        deadline = deadline_for(state.headers, settings.stream_deadline_seconds, settings.deadline_margin_seconds)
        report = TurnReport(stream=StreamReport(state.started), key_id=who.key_id)
        try:
            stream = services.chat.stream(who.tenant, body, deadline, report)
        except BaseException:
            state.metrics.turn(report)  # failed before the first byte: an ordinary JSON error follows
            raise
        return ChatStreamResponse(stream, report, state.metrics)
    deadline = deadline_for(state.headers, settings.request_deadline_seconds, settings.deadline_margin_seconds)
    report = TurnReport(key_id=who.key_id)
    try:
        result = services.chat.complete(who.tenant, body, deadline, report)
        response.headers[DEPLOYMENT_HEADER] = report.deployment or ""
        response.headers.update(report.rate_headers)
        return result
    finally:
        state.metrics.turn(report)
