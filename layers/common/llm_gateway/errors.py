"""Domain errors in, HTTP out: the one table that maps them.

Domain code raises these exceptions; only :func:`to_http` knows statuses. Bodies use
OpenAI's error shape so the official SDKs raise their typed errors. Messages are
written by us and never carry prompts or key material.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


class GatewayError(Exception):
    """Base of every error the gateway reports to a client.

    ``permanent``: sending the same request again cannot succeed (a bad request, an unknown id,
    a spend limit). The class says it; one raise may say otherwise (``permanent=``). The job worker
    fails a job at once on a permanent error and leaves it for redelivery otherwise; the HTTP
    answer carries ``x-should-retry: false`` so SDKs do not retry it either.
    """

    default_code: str | None = None
    permanent: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
        permanent: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.retry_after = retry_after
        self.headers = dict(headers or {})  # extra response headers (x-ratelimit-*, x-should-retry)
        if permanent is not None:
            self.permanent = permanent

    @property
    def retryable(self) -> bool:
        return not self.permanent


class InvalidRequest(GatewayError):
    default_code = "invalid_request"
    permanent = True


class ContextLengthExceeded(InvalidRequest):
    default_code = "context_length_exceeded"


class AuthenticationFailed(GatewayError):
    default_code = "invalid_api_key"
    permanent = True


class NotFound(GatewayError):
    default_code = "not_found"
    permanent = True


class MethodNotAllowed(GatewayError):
    """The route exists but not with this HTTP method."""

    default_code = "method_not_allowed"
    permanent = True


class ConversationBusy(GatewayError):
    default_code = "conversation_busy"


class NotCancellable(GatewayError):
    """Cancelling what has already finished (a completed, failed or incomplete response; a finished job)."""

    default_code = "already_finished"
    permanent = True


class PayloadTooLarge(GatewayError):
    default_code = "request_too_large"
    permanent = True


class IdempotencyConflict(GatewayError):
    default_code = "idempotency_key_reused"
    permanent = True


class PermissionDenied(GatewayError):
    default_code = "permission_denied"
    permanent = True


class ModelNotAllowed(PermissionDenied):
    """The key or tenant may not use this model alias (403, documented in the README)."""

    default_code = "model_not_allowed"


class RateLimited(GatewayError):
    default_code = "rate_limit_exceeded"


class QuotaExhausted(RateLimited):
    """A spend or token budget is used up: no retry before the window ends can succeed."""

    default_code = "insufficient_quota"
    permanent = True

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers["x-should-retry"] = "false"


class UpstreamError(GatewayError):
    """The upstream answered with an error we cannot retry away (502)."""

    default_code = "upstream_error"


class ReplyTooLargeToStore(GatewayError):
    """A store cannot hold a reply this large (an item's 400 KB); nothing was stored. A 502 like the
    upstream's own failures: the request was fine, the reply it produced cannot be kept."""

    default_code = "reply_too_large_to_store"


class UpstreamRejected(GatewayError):
    """The upstream refused the request as invalid (its 400/404/422)."""

    default_code = "upstream_invalid_request"
    permanent = True


class UpstreamUnavailable(GatewayError):
    default_code = "upstream_unavailable"


class UpstreamTimeout(GatewayError):
    default_code = "upstream_timeout"


class ProviderKeyUnavailable(GatewayError):
    """A provider key could not be decrypted: fail closed, say nothing about the key."""

    default_code = "provider_key_unavailable"


class ConfigurationError(GatewayError):
    default_code = "configuration_error"


class QueueUnavailable(GatewayError):
    """The jobs queue did not accept a job; nothing the client sent was wrong."""

    default_code = "queue_unavailable"


class StoreUnavailable(GatewayError):
    """A backing AWS service (DynamoDB, KMS, SQS) did not answer within the request's time left.
    Nothing the client sent was wrong; a turn cut short by it stored nothing (its lease expires)."""

    default_code = "store_unavailable"


class JobResultTooLarge(GatewayError):
    """A job's completion is larger than a job item can hold; retrying cannot change that."""

    default_code = "result_too_large"
    permanent = True


class Cancelled(GatewayError):
    """The work was cancelled while it ran (a job's cancel checkpoint): nothing is stored as done."""

    default_code = "cancelled"
    permanent = True


class DeadLettered(GatewayError):
    """SQS gave up on a job's message (it reached the dead-letter queue); a redrive may succeed."""

    default_code = "dead_lettered"


class ShuttingDown(GatewayError):
    """The server is stopping: a stream in flight is ended rather than cut."""

    default_code = "server_shutting_down"


# exception class -> (HTTP status, OpenAI error type). Subclasses resolve through the MRO.
ERROR_TABLE: dict[type[GatewayError], tuple[int, str]] = {
    InvalidRequest: (400, "invalid_request_error"),
    UpstreamRejected: (400, "invalid_request_error"),
    AuthenticationFailed: (401, "authentication_error"),
    PermissionDenied: (403, "permission_error"),
    NotFound: (404, "invalid_request_error"),
    MethodNotAllowed: (405, "invalid_request_error"),
    ConversationBusy: (409, "conflict_error"),
    NotCancellable: (409, "conflict_error"),
    Cancelled: (409, "conflict_error"),
    PayloadTooLarge: (413, "invalid_request_error"),
    IdempotencyConflict: (422, "invalid_request_error"),
    QuotaExhausted: (429, "insufficient_quota"),
    RateLimited: (429, "rate_limit_error"),
    ProviderKeyUnavailable: (500, "server_error"),
    ConfigurationError: (500, "server_error"),
    JobResultTooLarge: (500, "server_error"),
    UpstreamError: (502, "upstream_error"),
    ReplyTooLargeToStore: (502, "upstream_error"),
    UpstreamUnavailable: (503, "service_unavailable"),
    QueueUnavailable: (503, "service_unavailable"),
    DeadLettered: (500, "server_error"),
    StoreUnavailable: (503, "service_unavailable"),
    ShuttingDown: (503, "service_unavailable"),
    UpstreamTimeout: (504, "timeout_error"),
    GatewayError: (500, "server_error"),
}


@dataclass(frozen=True)
class HttpError:
    status: int
    body: dict
    headers: dict[str, str]


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def to_http(exc: GatewayError) -> HttpError:
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            status, type_ = ERROR_TABLE[cls]
            break
    else:  # pragma: no cover - GatewayError is in the table
        status, type_ = 500, "server_error"
    headers = dict(exc.headers)
    if exc.permanent:
        headers.setdefault("x-should-retry", "false")
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return HttpError(status, error_body(exc.message, type_, exc.code, exc.param), headers)


def error_object(exc: GatewayError) -> dict:
    """The ``error`` object of ``exc``'s body, as a job record stores it."""
    return to_http(exc).body["error"]


def internal_error() -> HttpError:
    return HttpError(500, error_body("Internal server error.", "server_error", "internal_error"), {})


class ErrorObject(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error body: what every non-2xx answer of the gateway carries."""

    error: ErrorObject
