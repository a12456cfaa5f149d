"""Request context: request id and correlation id, deadline scope, body size limit, access log, metrics flush."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llm_gateway.deadline import Deadline, bounded
from llm_gateway.errors import GatewayError, PayloadTooLarge, to_http
from llm_gateway.observability import RequestMetrics, logger, request_log_keys

# A request id we take from a header: what API Gateway, load balancers and tracing tools send
# (uuids, "Root=1-..." trace ids), bounded; anything else (CRLF, spaces, overlong) is ignored.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:=+/@-]{1,128}")
ADAPTER_HEADER_PREFIX = "x-amzn-"


def valid_request_id(value: object) -> str | None:
    return value if isinstance(value, str) and REQUEST_ID.fullmatch(value) else None


def request_id_from(headers: dict[str, str]) -> str:
    """API Gateway's request id (from the Web Adapter's request context), else the client's
    ``x-request-id``, else a fresh one; a malformed or overlong id is ignored, never echoed."""
    context = headers.get("x-amzn-request-context")  # set by the Lambda Web Adapter
    if context:
        try:
            found = valid_request_id(json.loads(context).get("requestId"))
        except (ValueError, AttributeError, RecursionError):
            found = None
        if found:
            return found
    return valid_request_id(headers.get("x-request-id")) or uuid.uuid4().hex


def trusted_headers(headers: dict[str, str], adapter: bool) -> dict[str, str]:
    """The request's headers as the app may believe them: ``x-amzn-*`` only when the Lambda Web
    Adapter set them (``adapter``; it replaces any a client sent), else they are dropped."""
    if adapter:
        return headers
    return {k: v for k, v in headers.items() if not k.startswith(ADAPTER_HEADER_PREFIX)}


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

    A pure ASGI middleware, so streamed responses pass through unbuffered. Routes find the
    request id, metrics, headers and start time on ``request.state``.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        trust_adapter_headers: bool = False,
        deadline_seconds: float = 28.0,
        deadline_margin: float = 0.5,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.trust_adapter_headers = trust_adapter_headers
        self.deadline_seconds = deadline_seconds  # every request's AWS calls are bounded by it (aws.bounded)
        self.deadline_margin = deadline_margin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = trusted_headers(
            {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}, self.trust_adapter_headers
        )
        request_id = request_id_from(headers)
        metrics = RequestMetrics(scope["path"] if scope["path"] in ("/health",) else "api")
        scope.setdefault("state", {}).update(request_id=request_id, metrics=metrics, headers=headers, started=started)
        request_log_keys(correlation_id=request_id)  # this request's lines only (a context variable)
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            declared = int(headers.get("content-length") or 0)
        except ValueError:
            declared = 0
        received = {"bytes": 0}

        async def receive_limited() -> Message:
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
                # The request's deadline scope: its AWS calls (auth, stores) are bounded by the time left;
                # a turn or a stream step enters its own deadline inside it.
                with bounded(deadline_for(headers, self.deadline_seconds, self.deadline_margin)):
                    await self.app(scope, receive_limited, send_wrapper)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            route: Any = scope.get("route")
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
    async def _reply(send: Send, exc: GatewayError) -> None:
        error = to_http(exc)
        body = json.dumps(error.body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
