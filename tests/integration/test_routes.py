"""The HTTP contract's route table: the API description is served, and unknown routes or
methods answer in OpenAI's error shape (SDKs raise NotFoundError / a typed APIStatusError)."""

from __future__ import annotations

import pytest


def test_openapi_and_docs_describe_every_contract_route(gateway):
    r = gateway.client.get("/openapi.json")  # no key needed to read the description
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert {
        "/v1/chat/completions": {"post"},
        "/v1/responses": {"post"},
        "/v1/responses/{response_id}": {"get", "delete"},
        "/v1/responses/{response_id}/input_items": {"get"},
        "/v1/responses/{response_id}/cancel": {"post"},
        "/v1/conversations": {"get", "post"},
        "/v1/conversations/{conversation_id}": {"get", "post", "delete"},
        "/v1/conversations/{conversation_id}/items": {"get", "post"},
        "/v1/conversations/{conversation_id}/items/{item_id}": {"get", "delete"},
        "/v1/jobs": {"post"},
        "/v1/jobs/{job_id}": {"get"},
        "/v1/jobs/{job_id}/cancel": {"post"},
        "/v1/models": {"get"},
        "/v1/usage": {"get"},
        "/v1/admin/keys": {"get", "post"},
        "/v1/admin/keys/{key_id}": {"delete"},
        "/v1/admin/tenants/{tenant}/limits": {"get", "put"},
        "/v1/admin/usage": {"get"},
        "/v1/models/{model}": {"get"},
        "/health": {"get", "head"},
    } == {path: set(methods) for path, methods in paths.items()}
    docs = gateway.client.get("/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    assert "/openapi.json" in docs.text


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("get", "/v1/nothing-here", 404, "unknown_route"),
        ("post", "/v2/chat/completions", 404, "unknown_route"),
        ("get", "/v1/chat/completions", 405, "method_not_allowed"),
        ("delete", "/v1/models", 405, "method_not_allowed"),
        ("put", "/v1/conversations", 405, "method_not_allowed"),
    ],
)
def test_unknown_routes_and_methods_answer_in_openai_error_shape(gateway, method, path, status, code):
    r = gateway.client.request(method.upper(), path, headers=gateway.headers())
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "error": {"message": r.json()["error"]["message"], "type": "invalid_request_error", "param": None, "code": code}
    }
    assert r.json()["error"]["message"]
