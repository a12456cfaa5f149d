"""What ``/openapi.json`` says each route answers: its typed 2xx body and, from the one error table
(``llm_gateway.errors.ERROR_TABLE``), every error status it can send, in OpenAI's error shape.

FastAPI documents a 422 ``HTTPValidationError`` on every operation with parameters; the gateway
never sends it (validation errors are 400 in OpenAI's shape), so :func:`install` removes it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from llm_gateway.errors import (
    ERROR_TABLE,
    AuthenticationFailed,
    ConversationBusy,
    ErrorResponse,
    GatewayError,
    InvalidRequest,
    ModelNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ProviderKeyUnavailable,
    QuotaExhausted,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

Responses = dict[int | str, dict[str, Any]]
# Models that a route documents by hand (request_body, event_stream); install() adds them to the components.
_EXTRA_MODELS: list[type[BaseModel]] = []

# Every route can answer these: the body limit (middleware), an internal error.
PUBLIC_ERRORS: tuple[type[GatewayError], ...] = (PayloadTooLarge, GatewayError)
# ... and every route behind the bearer key, a 401 and a 400 for a bad parameter or body.
AUTHENTICATED_ERRORS: tuple[type[GatewayError], ...] = (*PUBLIC_ERRORS, AuthenticationFailed, InvalidRequest)
# What a chat turn can raise, whichever view runs it (Chat Completions, Responses).
TURN_ERRORS: tuple[type[GatewayError], ...] = (
    NotFound,
    ConversationBusy,
    ModelNotAllowed,
    RateLimited,
    QuotaExhausted,
    ProviderKeyUnavailable,
    UpstreamError,
    UpstreamUnavailable,
    UpstreamTimeout,
)
# What an admin route can raise (a non-admin key is a 403).
ADMIN_ERRORS: tuple[type[GatewayError], ...] = (PermissionDenied, NotFound)
ERROR_REF = "#/components/schemas/ErrorResponse"
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}


def status_of(error: type[GatewayError]) -> tuple[int, str]:
    for cls in error.__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    raise KeyError(error)  # pragma: no cover - GatewayError is in the table


def errors(*raised: type[GatewayError], public: bool = False) -> Responses:
    """The error responses of a route that raises ``raised`` (plus the ones every route can)."""
    by_status: dict[int, set[str]] = defaultdict(set)
    for error in (*(PUBLIC_ERRORS if public else AUTHENTICATED_ERRORS), *raised):
        status, type_ = status_of(error)
        by_status[status].add(f"{type_}" + (f" ({error.default_code})" if error.default_code else ""))
    out: Responses = {}
    for status in sorted(by_status):
        entry: dict[str, Any] = {"model": ErrorResponse, "description": "; ".join(sorted(by_status[status]))}
        if status in (429, 503):
            entry["headers"] = RETRY_AFTER
        out[status] = entry
    return out


def body(model: Any, description: str = "OK", status: int = 200) -> Responses:
    """A typed success body, documented (the route returns the service's JSON as it is)."""
    return {status: {"model": model, "description": description}}


def event_stream(chunk: type[BaseModel], *, done: bool = True) -> dict[str, Any]:
    """The ``text/event-stream`` content of a streamed 200, one server-sent event described (the
    Open API 3.1 reading of ``schema`` for event streams): ``data`` is a chunk as JSON, or OpenAI's
    error body when the stream fails after its first chunk, or the final ``[DONE]``."""
    _EXTRA_MODELS.append(chunk)
    payload = {"anyOf": [{"$ref": f"#/components/schemas/{chunk.__name__}"}, {"$ref": ERROR_REF}]}
    json_data = {"type": "string", "contentMediaType": "application/json", "contentSchema": payload}
    event = {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"anyOf": [{"const": "[DONE]"}, json_data]} if done else json_data},
        "description": f"`data: <{chunk.__name__} JSON>` per chunk, then `data: [DONE]`; a failure after "
        "the first chunk ends the stream with an error event (OpenAI's error body) and no `[DONE]`.",
    }
    return {"text/event-stream": {"schema": event}}


def request_body(*models: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its JSON body as it is: one of ``models``."""
    _EXTRA_MODELS.extend(m for m in models if m not in _EXTRA_MODELS)
    refs = [{"$ref": f"#/components/schemas/{m.__name__}"} for m in models]
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": refs}}}}}


def install(app: FastAPI) -> None:
    """Serve the schema without FastAPI's unsent 422 (and its unused components)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                openapi_version=app.openapi_version,
                servers=app.servers,
                tags=app.openapi_tags,
                separate_input_output_schemas=app.separate_input_output_schemas,
            )
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    response = operation.get("responses", {}).get("422")
                    if response and "HTTPValidationError" in str(response):
                        del operation["responses"]["422"]
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            if _EXTRA_MODELS:
                _, extra = models_json_schema(
                    [(m, "validation") for m in _EXTRA_MODELS], ref_template="#/components/schemas/{model}"
                )
                for name, definition in extra.get("$defs", {}).items():
                    components.setdefault(name, definition)
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
