"""/openapi.json is the contract: an OpenAPI fuzzer (schemathesis, in-process over ASGI) sends every
operation generated requests, with the gateway over moto and a `responses`-mocked upstream, and
checks that no answer is a 5xx, every status is documented and every body matches its schema."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, cast

import pytest
import responses
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from app import create_app
from deps import get_services
from llm_gateway.runtime import Services
from llm_gateway.security.api_keys import ApiKeyStore
from llm_gateway.settings import Settings
from tests.conftest import new_aws
from tests.integration.conftest import TENANT_KEY, UPSTREAM, make_gateway

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
AUTH = {"Authorization": f"Bearer {TENANT_KEY}"}
STATE: dict[str, Any] = {}  # the module's gateway and mocked upstream
ADMIN_KEY = "sk-gw-fuzz-admin"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def upstream_reply(request: Any) -> tuple[int, dict[str, str], str]:
    """An OpenAI-compatible upstream: a completion, or its SSE stream when asked for one."""
    body = json.loads(request.body)
    created, model = 1, body.get("model", "m")
    if body.get("stream"):
        chunk = {"id": "chatcmpl-fuzz", "object": "chat.completion.chunk", "created": created, "model": model}
        events = [
            {
                **chunk,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"}, "finish_reason": None}],
            },
            {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {**chunk, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
        ]
        text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return 200, {"content-type": "text/event-stream"}, text
    reply = {
        "id": "chatcmpl-fuzz",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    return 200, {"content-type": "application/json"}, json.dumps(reply)


# The app under test: its services are a dependency, bound per test to a gateway over moto.
APP = create_app(lambda: cast(Services, None), Settings())
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def services(moto_server: Any) -> Iterator[None]:
    """One gateway over moto for every operation (provisioning per operation would dominate)."""
    aws = new_aws(moto_server)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_passthru("http://127.0.0.1")
        mock.add_callback(responses.POST, f"{UPSTREAM}/chat/completions", callback=upstream_reply)
        gateway = make_gateway(aws)
        gateway.post("/v1/conversations", {"metadata": {"k": "v"}})  # something for the list to show
        ApiKeyStore(aws.res.table_name, client=aws.client("dynamodb")).create("ops", "fuzz", key=ADMIN_KEY, admin=True)
        APP.dependency_overrides[get_services] = lambda: gateway.services
        STATE.update(gateway=gateway, upstream=mock)
        try:
            yield
        finally:
            APP.dependency_overrides.clear()


def test_the_fuzzer_sees_every_operation() -> None:
    operations = {(op.method.upper(), op.path) for op in (r.ok() for r in schema.get_all_operations())}
    documented = {(method.upper(), path) for path, ops in APP.openapi()["paths"].items() for method in ops}
    assert operations == documented
    assert {("POST", "/v1/chat/completions"), ("GET", "/v1/models/{model}"), ("HEAD", "/health")} <= operations


@schema.parametrize()
@settings(
    max_examples=6,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_operation_answers_as_documented(case: Any) -> None:
    case.call_and_validate(headers=AUTH, checks=CHECKS)
    if case.operation.path.startswith("/v1/admin/"):  # a tenant key gets the 403; an admin key, the bodies
        case.call_and_validate(headers=ADMIN_AUTH, checks=CHECKS)
    case.call_and_validate(headers={"Authorization": "Bearer sk-not-a-key"}, checks=CHECKS)  # the 401 too


# Explicit cases the generator would not think of (issue 13): lone surrogates in each kind of text
# field, a stateless request over the message count, malformed trust headers. Each answers as
# documented (a 400, or the header ignored), never a 5xx, with no upstream call and no write.
LONE = "x\ud800y"
USER = {"role": "user", "content": "hi"}
EXPLICIT: dict[str, tuple[str, str, Any, dict[str, str], int]] = {
    "surrogate in content": (
        "POST",
        "/v1/chat/completions",
        {"model": "default", "messages": [{"role": "user", "content": LONE}]},
        {},
        400,
    ),
    "surrogate in system": (
        "POST",
        "/v1/chat/completions",
        {"model": "default", "messages": [{"role": "system", "content": LONE}, USER]},
        {},
        400,
    ),
    "surrogate in job": (
        "POST",
        "/v1/jobs",
        {"model": "default", "messages": [{"role": "user", "content": LONE}]},
        {},
        400,
    ),
    "surrogate in responses input": ("POST", "/v1/responses", {"model": "default", "input": LONE}, {}, 400),
    "surrogate in instructions": (
        "POST",
        "/v1/responses",
        {"model": "default", "input": "hi", "instructions": LONE},
        {},
        400,
    ),
    "surrogate in items": (
        "POST",
        "/v1/conversations",
        {"items": [{"type": "message", "role": "user", "content": LONE}]},
        {},
        400,
    ),
    "surrogate in metadata": ("POST", "/v1/conversations", {"metadata": {"k": LONE}}, {}, 400),
    "30000 stateless messages": (
        "POST",
        "/v1/chat/completions",
        {"model": "default", "messages": [USER] * 30_000},
        {},
        400,
    ),
    "30000 input items": ("POST", "/v1/responses", {"model": "default", "input": [USER] * 30_000}, {}, 400),
    "overlong request id": ("GET", "/v1/models", None, {"x-request-id": "r" * 5000}, 200),
    "request id with spaces": ("GET", "/v1/models", None, {"x-request-id": "a b; c=d"}, 200),
    "non-string adapter requestId": (
        "GET",
        "/v1/models",
        None,
        {"x-amzn-request-context": '{"requestId": {"a": [1]}}'},
        200,
    ),
    "malformed adapter context": ("GET", "/v1/models", None, {"x-amzn-request-context": "{not json"}, 200),
    "forged adapter deadline": ("GET", "/v1/models", None, {"x-amzn-lambda-context": '{"deadline": "soon"}'}, 200),
}


@pytest.mark.parametrize("name", list(EXPLICIT), ids=list(EXPLICIT))
def test_explicit_bad_input_answers_as_documented(name: str) -> None:
    from tests.integration.conftest import DYNAMODB_WRITES, count_calls, table_snapshot

    method, path, body, headers, status = EXPLICIT[name]
    gateway, upstream = STATE["gateway"], STATE["upstream"]
    client, table = gateway.services.conversations.client, gateway.aws.res.table_name
    before, calls = table_snapshot(client, table, usage=False), len(upstream.calls)
    writes = count_calls(client, DYNAMODB_WRITES)
    operation = schema[path][method]
    # sent as bytes: the JSON escape "\ud800" is what a hostile client sends (no encoder makes it)
    raw = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
    case = (
        operation.Case(headers=headers, body=raw, media_type="application/json")
        if raw
        else operation.Case(headers=headers)
    )
    response = case.call_and_validate(headers=AUTH, checks=CHECKS)
    assert response.status_code == status, response.text[:300]
    if status == 400:
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert len(upstream.calls) == calls
    assert writes.total() == 0
    assert table_snapshot(client, table, usage=False) == before
    (request_id,) = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)  # nothing the client sent is echoed
