"""The HTTP API: one FastAPI app for every route, thin over ``llm_gateway``.

In AWS it runs under the Lambda Web Adapter (``run.sh``); locally under uvicorn. Routes
(``routes/``, one router per resource) translate HTTP into service calls and back; every
error leaves through ``llm_gateway.errors.to_http`` in OpenAI's shape (``http_errors.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import lru_cache

from fastapi import FastAPI

from deps import ServicesProvider
from http_errors import install_error_handlers
from llm_gateway import __version__
from llm_gateway.errors import GatewayError
from llm_gateway.observability import logger
from llm_gateway.runtime import Services, build_services
from llm_gateway.settings import Settings, get_settings
from middleware import GatewayMiddleware
from routes import ROUTERS


@lru_cache(maxsize=1)
def default_services() -> Services:
    return build_services(get_settings())


def create_app(services: Services | Callable[[], Services] | None = None, settings: Settings | None = None) -> FastAPI:
    """The app over ``services`` (or a factory of them; default: built from the environment once).

    Given a ``Services``, the app reads its settings from it, never the global ones.
    """
    provider: ServicesProvider
    if isinstance(services, Services):
        built = services
        provider = lambda: built  # noqa: E731
        settings = settings or built.settings
    else:
        provider = services or default_services
        settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Build (and so validate) the services at start-up: a bad routing configuration stops the
        # server here with a message naming the entry, instead of failing every request later.
        try:
            provider()
        except GatewayError as exc:
            logger.error("configuration error at start-up", extra={"error": exc.message})
            raise
        yield

    app = FastAPI(
        title="llm-gateway",
        version=__version__,
        summary="OpenAI-compatible LLM gateway with server-side conversations.",
        root_path=settings.api_root_path,
        lifespan=lifespan,
    )
    app.state.services = provider
    app.add_middleware(GatewayMiddleware, max_body_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app


app = create_app()
