"""What /openapi.json promises (bearer scheme, OpenAI-shaped errors, no unsent 422, standard bounds),
/docs without a CDN, the Models API, HEAD /health and CORS."""

from __future__ import annotations

import re
from typing import Any

import openai.types
from starlette.testclient import TestClient

from app import create_app
from llm_gateway.errors import ERROR_TABLE
from tests.integration.conftest import make_gateway


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in schema["paths"].items() for method, op in ops.items()]


def walk(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found += walk(value)
    elif isinstance(node, list):
        for value in node:
            found += walk(value)
    return found


def test_openapi_lists_a_bearer_scheme_and_every_authenticated_operation_uses_it(gateway):
    schema = gateway.client.get("/openapi.json").json()
    scheme = schema["components"]["securitySchemes"]["HTTPBearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for method, path, op in operations(schema):
        params = {p["name"].lower() for p in op.get("parameters", [])}
        assert "authorization" not in params, (method, path)  # auth is the scheme, not a header parameter
        if path == "/health":
            assert "security" not in op
        else:
            assert op["security"] == [{"HTTPBearer": []}], (method, path)
            assert "401" in op["responses"], (method, path)


def test_every_error_response_is_openai_shaped_and_no_unsent_422(gateway):
    schema = gateway.client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components and "ValidationError" not in components
    assert set(components["ErrorResponse"]["required"]) == {"error"}
    assert set(components["ErrorObject"]["required"]) == {"message", "type", "param", "code"}
    sent = {status for status, _ in ERROR_TABLE.values()}
    documented: set[int] = set()
    for method, path, op in operations(schema):
        for status, response in op["responses"].items():
            code = int(status)
            if code < 400:
                continue
            documented.add(code)
            assert code in sent, (method, path, status)
            assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
        if (method, path) not in (("post", "/v1/jobs"), ("post", "/v1/responses")):  # IdempotencyConflict: the 422
            assert "422" not in op["responses"], (method, path)
    assert {400, 401, 404, 409, 413, 422, 429, 500, 502, 503, 504} <= documented
    chat = schema["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert chat["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatCompletion"}
    assert "text/event-stream" in chat


def test_every_success_response_is_typed(gateway):
    schema = gateway.client.get("/openapi.json").json()
    untyped = set()
    for method, path, op in operations(schema):
        ok = [r for status, r in op["responses"].items() if status.startswith("2")]
        assert len(ok) == 1, (method, path)
        if method == "head":
            assert "content" not in ok[0]
            continue
        body = ok[0]["content"]["application/json"]["schema"]
        if not (body.get("$ref") or body.get("anyOf") or body.get("oneOf")):
            untyped.add((method, path))
    assert untyped == set()


def test_bounds_are_standard_json_schema(gateway):
    schema = gateway.client.get("/openapi.json").json()
    keywords = {key for node in walk(schema) for key in node}
    assert {"minimum", "maximum"} <= keywords
    assert not keywords & {"ge", "le", "gt", "lt", "exclusiveMinimum", "exclusiveMaximum"}
    temperature = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]["temperature"]
    assert {"minimum": 0, "maximum": 2}.items() <= next(b for b in temperature["anyOf"] if "minimum" in b).items()


def test_docs_work_offline_from_packaged_assets(gateway):
    html = gateway.client.get("/docs").text
    urls = re.findall(r'(?:href|src)="([^"]+)"', html)
    assert urls and not [u for u in urls if "://" in u or u.startswith("//")]  # nothing from another host
    assert "cdn" not in html.lower() and '"validatorUrl": null' in html
    for url in urls:
        asset = gateway.client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 1000, url
    assert "SwaggerUIBundle" in gateway.client.get(next(u for u in urls if u.endswith(".js"))).text


def test_models_retrieve_is_openai_model_and_unknown_is_openai_404(gateway):
    r = gateway.get("/v1/models/default")
    assert r.status_code == 200
    model = openai.types.Model.model_validate(r.json())
    assert (model.id, model.object, model.owned_by) == ("default", "model", "llm-gateway")
    listed = [m["id"] for m in gateway.get("/v1/models").json()["data"]]
    assert all(gateway.get(f"/v1/models/{name}").json()["id"] == name for name in listed)
    missing = gateway.get("/v1/models/no-such-model")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert gateway.client.get("/v1/models/default").status_code == 401


def test_head_health_is_bodiless_and_unauthenticated(gateway):
    r = gateway.client.head("/health")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["x-request-id"]


PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}


def test_cors_is_off_by_default(gateway):
    r = gateway.client.get("/v1/models", headers={**gateway.headers(), "Origin": "https://app.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    preflight = gateway.client.options("/v1/chat/completions", headers={"Origin": "https://app.example", **PREFLIGHT})
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_only_the_configured_origins(aws):
    gw = make_gateway(aws, cors_allow_origins="https://app.example, https://other.example")
    preflight = gw.client.options("/v1/chat/completions", headers={"Origin": "https://app.example", **PREFLIGHT})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    r = gw.client.get("/v1/models", headers={**gw.headers(), "Origin": "https://other.example"})
    assert r.headers["access-control-allow-origin"] == "https://other.example"
    assert "x-request-id" in r.headers["access-control-expose-headers"]
    stranger = gw.client.get("/v1/models", headers={**gw.headers(), "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in stranger.headers


def test_create_app_with_services_reads_no_global_settings(aws, monkeypatch):
    gw = make_gateway(aws, max_body_bytes=2048)

    def no_global_settings() -> None:
        raise AssertionError("create_app read the global settings")

    monkeypatch.setattr("app.get_settings", no_global_settings)
    client = TestClient(create_app(gw.services))
    assert client.post("/v1/chat/completions", content=b"x" * 4096, headers=gw.headers()).status_code == 413
