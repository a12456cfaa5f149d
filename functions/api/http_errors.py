"""Every error leaves the API through ``llm_gateway.errors.to_http``: one table, OpenAI's shape."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llm_gateway.chat.models import validation_reason
from llm_gateway.errors import (
    GatewayError,
    HttpError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    internal_error,
    to_http,
)
from llm_gateway.observability import logger


def error_response(error: GatewayError | HttpError) -> JSONResponse:
    http = to_http(error) if isinstance(error, GatewayError) else error
    return JSONResponse(http.body, status_code=http.status, headers=http.headers)


async def _gateway_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, param = validation_reason(list(exc.errors()))
    return error_response(InvalidRequest(message, param=param))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, GatewayError):  # e.g. the body limit, hit while FastAPI read the body
        return error_response(exc.__cause__)
    if exc.status_code == 404:
        return error_response(NotFound("Unknown route.", code="unknown_route"))
    http = to_http(MethodNotAllowed(str(exc.detail)) if exc.status_code == 405 else InvalidRequest(str(exc.detail)))
    return JSONResponse(http.body, status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", extra={"error_type": type(exc).__name__})
    return error_response(internal_error())


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
