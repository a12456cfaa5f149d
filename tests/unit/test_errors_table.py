"""Domain errors to HTTP, in one table, in OpenAI's error shape."""

from __future__ import annotations

import inspect

import pytest

from llm_gateway import errors
from llm_gateway.errors import ERROR_TABLE, GatewayError, internal_error, to_http

EXPECTED = {
    errors.InvalidRequest: (400, "invalid_request_error", "invalid_request"),
    errors.ContextLengthExceeded: (400, "invalid_request_error", "context_length_exceeded"),
    errors.UpstreamRejected: (400, "invalid_request_error", "upstream_invalid_request"),
    errors.AuthenticationFailed: (401, "authentication_error", "invalid_api_key"),
    errors.NotFound: (404, "invalid_request_error", "not_found"),
    errors.ConversationBusy: (409, "conflict_error", "conversation_busy"),
    errors.PayloadTooLarge: (413, "invalid_request_error", "request_too_large"),
    errors.IdempotencyConflict: (422, "invalid_request_error", "idempotency_key_reused"),
    errors.RateLimited: (429, "rate_limit_error", "rate_limit_exceeded"),
    errors.ProviderKeyUnavailable: (500, "server_error", "provider_key_unavailable"),
    errors.ConfigurationError: (500, "server_error", "configuration_error"),
    errors.UpstreamError: (502, "upstream_error", "upstream_error"),
    errors.UpstreamUnavailable: (503, "service_unavailable", "upstream_unavailable"),
    errors.UpstreamTimeout: (504, "timeout_error", "upstream_timeout"),
}


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_each_error_maps_to_its_status_type_and_code(cls):
    status, type_, code = EXPECTED[cls]
    http = to_http(cls("Something went wrong.", param="messages"))
    assert http.status == status
    assert http.body == {
        "error": {"message": "Something went wrong.", "type": type_, "param": "messages", "code": code}
    }
    assert http.headers == {}


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
