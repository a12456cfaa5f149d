"""The HTTP API: one FastAPI app for every route, thin over ``llm_gateway``.

In AWS it runs under the Lambda Web Adapter (``run.sh``); locally under uvicorn.
Routes translate HTTP into service calls and back; every error leaves through
``llm_gateway.errors.to_http`` in OpenAI's shape.
"""

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Annotated, Any

import anyio
from fastapi import Body, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llm_gateway.chat.models import ChatCompletionRequest, CreateConversation, validation_reason
from llm_gateway.chat.service import TurnReport
from llm_gateway.chat.streaming import ChatStream, StreamReport
from llm_gateway.deadline import Deadline
from llm_gateway.errors import (
    GatewayError,
    InvalidRequest,
    PayloadTooLarge,
    error_body,
    internal_error,
    to_http,
)
from llm_gateway.observability import RequestMetrics, logger
from llm_gateway.runtime import Services, build_services
from llm_gateway.security.api_keys import Caller
from llm_gateway.settings import get_settings

VERSION = "0.1.0"
DEPLOYMENT_HEADER = "x-llm-gateway-deployment"  # which deployment of the alias answered


@lru_cache(maxsize=1)
def default_services() -> Services:
    return build_services(get_settings())


def request_id_from(headers: dict[str, str]) -> str:
    context = headers.get("x-amzn-request-context")  # set by the Lambda Web Adapter
    if context:
        try:
            return json.loads(context)["requestId"]
        except (ValueError, KeyError, TypeError):
            pass
    return headers.get("x-request-id") or uuid.uuid4().hex


def deadline_for(headers: dict[str, str], seconds: float, margin: float) -> Deadline:
    """The configured request deadline, cut short by the Lambda's own deadline when known."""
    context = headers.get("x-amzn-lambda-context")
    if context:
        try:
            lambda_deadline_ms = int(json.loads(context)["deadline"])
            seconds = min(seconds, lambda_deadline_ms / 1000 - time.time() - margin)
        except (ValueError, KeyError, TypeError):
            pass
    return Deadline.after(max(0.0, seconds))


class GatewayMiddleware:
    """Request id and correlation id, body size limit, access log and metrics flush.

    A pure ASGI middleware, so streamed responses pass through unbuffered.
    """

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = request_id_from(headers)
        metrics = RequestMetrics(scope["path"] if scope["path"] in ("/health",) else "api")
        scope.setdefault("state", {}).update(request_id=request_id, metrics=metrics, headers=headers, started=started)
        logger.set_correlation_id(request_id)
        status = {"code": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            declared = int(headers.get("content-length") or 0)
        except ValueError:
            declared = 0
        received = {"bytes": 0}

        async def receive_limited() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                received["bytes"] += len(message.get("body", b""))
                if received["bytes"] > self.max_body_bytes:
                    raise PayloadTooLarge(self._too_large())
            return message

        try:
            if declared > self.max_body_bytes:
                await self._reply(send_wrapper, PayloadTooLarge(self._too_large()))
            else:
                await self.app(scope, receive_limited, send_wrapper)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            route = scope.get("route")
            logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "route": getattr(route, "path", "unmatched"),
                    "status": status["code"],
                    "latency_ms": round(elapsed_ms, 2),
                },
            )
            metrics.add("Latency", elapsed_ms, "Milliseconds")
            metrics.add(f"Status{status['code'] // 100}xx", 1)
            metrics.flush()

    def _too_large(self) -> str:
        return f"Request body exceeds the {self.max_body_bytes}-byte limit."

    @staticmethod
    async def _reply(send: Callable, exc: GatewayError) -> None:
        error = to_http(exc)
        body = json.dumps(error.body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


SSE_DONE = b"data: [DONE]\n\n"


def sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class ChatStreamResponse(StreamingResponse):
    """SSE for a streamed turn: one event per chunk, then ``[DONE]`` — or, if the turn fails
    after the first byte, a final OpenAI-shaped error event and no ``[DONE]``.

    Each chunk is fetched in a worker thread and sent at once (no buffering). ``__call__``
    always ends the turn: when the client goes away Starlette cancels the body, and the
    cleanup here wakes the worker blocked on the upstream (``abort``), then closes the
    stream (upstream connection, lease) and records the turn's metrics — before the
    middleware flushes them.
    """

    def __init__(self, stream: ChatStream, report: TurnReport, metrics: RequestMetrics) -> None:
        self.stream = stream
        self.report = report
        self.metrics = metrics
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        if stream.conversation_id:
            headers["x-conversation-id"] = stream.conversation_id
        if report.deployment:
            headers[DEPLOYMENT_HEADER] = report.deployment
        super().__init__(self._events(), media_type="text/event-stream", headers=headers)

    async def _events(self):
        while True:
            try:
                chunk = await anyio.to_thread.run_sync(self.stream.next_chunk, abandon_on_cancel=True)
            except GatewayError as exc:
                logger.warning(
                    "stream failed after the first byte",
                    extra={"error_code": exc.code, "outcome": self.stream.stats.outcome},
                )
                yield sse_event(to_http(exc).body)
                return
            except Exception as exc:
                logger.exception("stream failed", extra={"error_type": type(exc).__name__})
                yield sse_event(internal_error().body)
                return
            if chunk is None:
                yield SSE_DONE
                return
            yield sse_event(chunk)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                self.stream.abort()  # no-op unless the stream is still running (client gone)
                await anyio.to_thread.run_sync(self.stream.close)
                stats = self.stream.stats
                logger.info(
                    "stream",
                    extra={
                        "outcome": stats.outcome,
                        "chunks": stats.chunks,
                        "ttft_ms": stats.first_token_ms,
                        "duration_ms": stats.duration_ms,
                    },
                )
                self.metrics.turn(self.report)


def error_response(exc: GatewayError) -> JSONResponse:
    error = to_http(exc)
    return JSONResponse(error.body, status_code=error.status, headers=error.headers)


def create_app(services: Callable[[], Services] = default_services) -> FastAPI:
    settings = get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Build (and so validate) the services at start-up: a bad routing configuration stops the
        # server here with a message naming the entry, instead of failing every request later.
        try:
            services()
        except GatewayError as exc:
            logger.error("configuration error at start-up", extra={"error": exc.message})
            raise
        yield

    app = FastAPI(
        title="llm-gateway",
        version=VERSION,
        summary="OpenAI-compatible LLM gateway with server-side conversations.",
        root_path=settings.api_root_path,
        lifespan=lifespan,
    )
    app.add_middleware(GatewayMiddleware, max_body_bytes=settings.max_body_bytes)

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_reason(exc.errors())
        return error_response(InvalidRequest(message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, GatewayError):  # e.g. the body limit, hit while FastAPI read the body
            return error_response(exc.__cause__)
        code = {404: "unknown_route", 405: "method_not_allowed"}.get(exc.status_code)
        message = "Unknown route." if exc.status_code == 404 else str(exc.detail)
        return JSONResponse(error_body(message, "invalid_request_error", code), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", extra={"error_type": type(exc).__name__})
        error = internal_error()
        return JSONResponse(error.body, status_code=error.status)

    def caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> Caller:
        return services().auth.authenticate(authorization)

    CallerDep = Annotated[Caller, Depends(caller)]

    @app.get("/health", tags=["meta"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": VERSION}

    @app.get("/v1/models", tags=["models"])
    def list_models(_: CallerDep) -> dict[str, Any]:
        aliases = services().routing.aliases
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "llm-gateway"} for name in aliases],
        }

    @app.post("/v1/chat/completions", tags=["chat"], response_model=None)
    def chat_completions(
        body: ChatCompletionRequest, request: Request, response: Response, who: CallerDep
    ) -> dict[str, Any] | Response:
        svc = services()
        state = request.state
        if body.stream:
            return stream_chat(svc, body, state, who)
        deadline = deadline_for(
            state.headers, svc.settings.request_deadline_seconds, svc.settings.deadline_margin_seconds
        )
        report = TurnReport()
        try:
            result = svc.chat.complete(who.tenant, body, deadline, report)
            response.headers[DEPLOYMENT_HEADER] = report.deployment or ""
            return result
        finally:
            state.metrics.turn(report)

    def stream_chat(svc: Services, body: ChatCompletionRequest, state: Any, who: Caller) -> Response:
        # No 29 s buffered-integration limit for a stream: the stream deadline (and the Lambda's).
        deadline = deadline_for(
            state.headers, svc.settings.stream_deadline_seconds, svc.settings.deadline_margin_seconds
        )
        report = TurnReport(stream=StreamReport(state.started))
        try:
            stream = svc.chat.stream(who.tenant, body, deadline, report)
        except BaseException:
            state.metrics.turn(report)  # failed before the first byte: an ordinary JSON error follows
            raise
        return ChatStreamResponse(stream, report, state.metrics)

    @app.post("/v1/conversations", status_code=201, tags=["conversations"])
    def create_conversation(who: CallerDep, body: CreateConversation | None = None) -> dict[str, Any]:
        body = body or CreateConversation()
        svc = services()
        if body.model is not None:
            svc.routing.resolve(body.model)
        system_tokens = 0
        if body.system:
            svc.chat.check_system_size(body.system, "system")
            from llm_gateway.chat.tokens import count_message

            system_tokens = count_message({"role": "system", "content": body.system})
        conversation = svc.conversations.create(
            who.tenant, model=body.model, system=body.system, system_tokens=system_tokens, metadata=body.metadata
        )
        return conversation.public()

    @app.get("/v1/conversations", tags=["conversations"])
    def list_conversations(
        who: CallerDep,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        after: Annotated[str | None, Query(max_length=512)] = None,
    ) -> dict[str, Any]:
        conversations, cursor = services().conversations.list(who.tenant, limit=limit, after=after)
        return {
            "object": "list",
            "data": [c.public() for c in conversations],
            "has_more": cursor is not None,
            "next_cursor": cursor,
        }

    @app.get("/v1/conversations/{conversation_id}", tags=["conversations"])
    def get_conversation(
        conversation_id: str,
        who: CallerDep,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        after: Annotated[str | None, Query(max_length=64)] = None,
    ) -> dict[str, Any]:
        after_seq = None
        if after is not None:
            try:
                after_seq = int(after.removeprefix("msg_"))
            except ValueError:
                raise InvalidRequest("'after' must be a message id such as 'msg_41'.", param="after") from None
        store = services().conversations
        conversation = store.get(who.tenant, conversation_id)
        messages, has_more = store.messages(who.tenant, conversation_id, limit=limit, after=after_seq)
        data = [m.public() for m in messages]
        out = conversation.public()
        out["messages"] = {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
        return out

    @app.delete("/v1/conversations/{conversation_id}", tags=["conversations"])
    def delete_conversation(conversation_id: str, who: CallerDep) -> dict[str, Any]:
        services().conversations.delete(who.tenant, conversation_id)
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    @app.post("/v1/jobs", status_code=202, tags=["jobs"])
    def create_jobs(
        request: Request,
        who: CallerDep,
        body: Annotated[dict[str, Any], Body()],
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> JSONResponse:
        """A chat completion request (optionally with ``conversation_id``), or ``{"requests": [...]}``
        (up to 100), run asynchronously. Answers 202 with the job, or the list of jobs in order."""
        submission = services().jobs.submit(who.tenant, body, idempotency_key)
        if not submission.replayed:
            request.state.metrics.add("JobsQueued", len(submission.jobs))
        content = {"object": "list", "data": submission.jobs} if submission.batch else submission.jobs[0]
        headers = {"Idempotent-Replayed": "true"} if submission.replayed else None
        return JSONResponse(content, status_code=202, headers=headers)

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: str, who: CallerDep) -> dict[str, Any]:
        return services().jobs.get(who.tenant, job_id)

    return app


app = create_app()
