"""Chat Completions: one turn, JSON or SSE."""

from typing import Any

from fastapi import APIRouter, Request, Response

import openapi
from deps import CallerDep, ServicesDep
from llm_gateway.chat.models import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from routes._turn import run_turn
from sse import ChatStreamResponse

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
    return run_turn(
        request,
        response,
        who,
        services,
        stream=(lambda tenant, deadline, report: services.chat.stream(tenant, body, deadline, report))
        if body.stream
        else None,
        complete=lambda tenant, deadline, report: services.chat.complete(tenant, body, deadline, report),
        wrap=ChatStreamResponse,
    )
