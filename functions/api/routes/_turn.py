"""The HTTP side of one turn, shared by Chat Completions and Responses: deadline, report, metrics, headers."""

from collections.abc import Callable
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from deps import Caller, Services
from llm_gateway.deadline import Deadline, bounded
from llm_gateway.reports import StreamReport, TurnReport
from middleware import deadline_for
from sse import DEPLOYMENT_HEADER

Run = Callable[[str, Deadline, TurnReport], Any]


def run_turn(
    request: Request,
    response: Response,
    who: Caller,
    services: Services,
    *,
    stream: Run | None,
    complete: Run,
    wrap: Callable[[Any, TurnReport, Any], Response],
) -> Any:
    """Run `stream` (when given) or `complete`; a stream is wrapped in its SSE response by `wrap`."""
    state, settings = request.state, services.settings
    if stream is not None:
        # No 29 s buffered-integration limit for a stream: the stream deadline (and the Lambda's).
        deadline = deadline_for(state.headers, settings.stream_deadline_seconds, settings.deadline_margin_seconds)
        report = TurnReport(stream=StreamReport(state.started), key_id=who.key_id)
        try:
            with bounded(deadline):  # up to the first chunk; the stream's steps enter it again (ChatStream)
                events = stream(who.tenant, deadline, report)
        except BaseException:
            state.metrics.turn(report)  # failed before the first byte: an ordinary JSON error follows
            raise
        return wrap(events, report, state.metrics)
    deadline = deadline_for(state.headers, settings.request_deadline_seconds, settings.deadline_margin_seconds)
    report = TurnReport(key_id=who.key_id)
    try:
        with bounded(deadline):  # every wait of the turn (stores, KMS, upstream body) within its deadline
            result = complete(who.tenant, deadline, report)
        response.headers[DEPLOYMENT_HEADER] = report.deployment or ""
        response.headers.update(report.rate_headers)
        return json_response(result, response)
    finally:
        state.metrics.turn(report)


def json_response(body: dict[str, Any], response: Response) -> JSONResponse:
    """A reply we built ourselves, serialised once (``json.dumps``; FastAPI would first walk it with
    ``jsonable_encoder``), with the headers the route set on ``response`` (FastAPI adds them only to
    replies it builds)."""
    reply = JSONResponse(body, status_code=response.status_code or 200)
    reply.raw_headers.extend(response.headers.raw)
    return reply
