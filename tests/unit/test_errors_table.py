"""Domain errors to HTTP, in one table, in OpenAI's error shape."""

from __future__ import annotations

import inspect

import pytest

from llm_gateway import errors
from llm_gateway.errors import ERROR_TABLE, GatewayError, internal_error, to_http

# class -> (status, type, code, permanent): every GatewayError subclass of the module, checked below.
EXPECTED = {
    errors.InvalidRequest: (400, "invalid_request_error", "invalid_request", True),
    errors.ContextLengthExceeded: (400, "invalid_request_error", "context_length_exceeded", True),
    errors.UpstreamRejected: (400, "invalid_request_error", "upstream_invalid_request", True),
    errors.AuthenticationFailed: (401, "authentication_error", "invalid_api_key", True),
    errors.PermissionDenied: (403, "permission_error", "permission_denied", True),
    errors.ModelNotAllowed: (403, "permission_error", "model_not_allowed", True),
    errors.NotFound: (404, "invalid_request_error", "not_found", True),
    errors.MethodNotAllowed: (405, "invalid_request_error", "method_not_allowed", True),
    errors.ConversationBusy: (409, "conflict_error", "conversation_busy", False),
    errors.NotCancellable: (409, "conflict_error", "already_finished", True),
    errors.Cancelled: (409, "conflict_error", "cancelled", True),
    errors.PayloadTooLarge: (413, "invalid_request_error", "request_too_large", True),
    errors.IdempotencyConflict: (422, "invalid_request_error", "idempotency_key_reused", True),
    errors.RateLimited: (429, "rate_limit_error", "rate_limit_exceeded", False),
    errors.QuotaExhausted: (429, "insufficient_quota", "insufficient_quota", True),
    errors.ProviderKeyUnavailable: (500, "server_error", "provider_key_unavailable", False),
    errors.ConfigurationError: (500, "server_error", "configuration_error", False),
    errors.DeadLettered: (500, "server_error", "dead_lettered", False),
    errors.JobResultTooLarge: (500, "server_error", "result_too_large", True),
    errors.UpstreamError: (502, "upstream_error", "upstream_error", False),
    errors.ReplyTooLargeToStore: (502, "upstream_error", "reply_too_large_to_store", False),
    errors.UpstreamUnavailable: (503, "service_unavailable", "upstream_unavailable", False),
    errors.QueueUnavailable: (503, "service_unavailable", "queue_unavailable", False),
    errors.ShuttingDown: (503, "service_unavailable", "server_shutting_down", False),
    errors.StoreUnavailable: (503, "service_unavailable", "store_unavailable", False),
    errors.UpstreamTimeout: (504, "timeout_error", "upstream_timeout", False),
}


def test_the_expectations_cover_every_error_class_in_the_module():
    defined = {cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, GatewayError)}
    assert defined - {GatewayError} == set(EXPECTED)


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_each_error_maps_to_its_status_type_and_code(cls):
    status, type_, code, permanent = EXPECTED[cls]
    exc = cls("Something went wrong.", param="messages")
    http = to_http(exc)
    assert http.status == status
    assert http.body == {
        "error": {"message": "Something went wrong.", "type": type_, "param": "messages", "code": code}
    }
    assert exc.permanent is permanent and exc.retryable is not permanent
    assert http.headers == ({"x-should-retry": "false"} if permanent else {})


def test_one_raise_may_say_its_error_is_permanent():
    """A spend-limit 429 cannot succeed on retry: the job worker fails it at once, SDKs do not retry."""
    exc = errors.RateLimited("Upstream quota exhausted.", code="insufficient_quota", retry_after=5, permanent=True)
    assert exc.permanent and not errors.RateLimited("slow down").permanent
    assert to_http(exc).headers == {"x-should-retry": "false", "Retry-After": "5"}


def test_every_error_class_in_the_module_has_a_specific_entry():
    """A new error class must be added to the table (directly or through a parent), never
    fall through to the catch-all 500."""
    for _, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, GatewayError) and cls is not GatewayError:
            resolved = next(c for c in cls.__mro__ if c in ERROR_TABLE)
            assert resolved is not GatewayError, cls.__name__


def test_subclasses_resolve_through_the_mro():
    class StillTooLarge(errors.PayloadTooLarge):
        pass

    assert to_http(StillTooLarge("big")).status == 413
    assert to_http(GatewayError("?")).status == 500


@pytest.mark.parametrize(("seconds", "header"), [(0.2, "1"), (1.0, "1"), (2.6, "3"), (30, "30")])
def test_retry_after_becomes_a_whole_seconds_header_of_at_least_1(seconds, header):
    http = to_http(errors.RateLimited("slow down", retry_after=seconds))
    assert http.status == 429 and http.headers == {"Retry-After": header}


def test_code_can_be_overridden_and_internal_error_says_nothing():
    assert to_http(errors.NotFound("x", code="model_not_found")).body["error"]["code"] == "model_not_found"
    http = internal_error()
    assert http.status == 500
    assert http.body == {
        "error": {"message": "Internal server error.", "type": "server_error", "param": None, "code": "internal_error"}
    }


def test_store_unavailable_says_when_to_retry():
    from llm_gateway.aws.bounded import unavailable

    http = to_http(unavailable("dynamodb"))
    assert http.status == 503 and http.headers["Retry-After"] == "1"
    assert "x-should-retry" not in http.headers
