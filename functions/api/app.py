"""The HTTP API: one FastAPI app for every route, thin over ``llm_gateway``.

In AWS it runs under the Lambda Web Adapter (``run.sh``); locally under uvicorn. Routes
(``routes/``, one router per resource) translate HTTP into service calls and back; every
error leaves through ``llm_gateway.errors.to_http`` in OpenAI's shape (``http_errors.py``);
``openapi.py`` makes ``/openapi.json`` the contract. ``/docs`` serves Swagger UI from the
``fastapi-offline`` package: no CDN, so it works offline and in a private VPC.
"""

from __future__ import annotations

import gc

# No garbage collection while the modules below load and the app is built: hundreds of collections
# that would walk a growing heap of module objects (~10% of start-up) and find almost nothing.
gc.disable()

from collections.abc import Callable
from functools import lru_cache

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

import openapi
from deps import ServicesProvider, encodable_body
from http_errors import install_error_handlers
from lifespan import lifespan
from llm_gateway import __version__
from llm_gateway.runtime import Services, build_services
from llm_gateway.settings import Settings, get_settings
from middleware import GatewayMiddleware
from routes import include_routers

# Response headers a browser app may read (CORS).
EXPOSED_HEADERS = ["x-request-id", "x-conversation-id", "x-llm-gateway-deployment", "Retry-After"]


@lru_cache(maxsize=1)
def default_services() -> Services:
    return build_services(get_settings())


def create_app(services: Services | Callable[[], Services] | None = None, settings: Settings | None = None) -> FastAPI:
    """The app over ``services`` (or a factory of them; default: built from the environment once).

    Given a ``Services``, the app reads its settings from it, never the global ones.
    """
    provider: ServicesProvider
    from_environment = services is None  # the deployed app (tests pass their own services)
    if isinstance(services, Services):
        built = services
        provider = lambda: built  # noqa: E731
        settings = settings or built.settings
    else:
        provider = services or default_services
        settings = settings or get_settings()

    app = FastAPIOffline(
        title="llm-gateway",
        version=__version__,
        summary="OpenAI-compatible LLM gateway with server-side conversations.",
        root_path=settings.api_root_path,
        lifespan=lifespan(provider, from_environment=from_environment),
        redoc_url=None,
        swagger_ui_parameters={"validatorUrl": None},  # no call to swagger.io's validator
        dependencies=[Depends(encodable_body)],
    )
    app.state.services = provider
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=EXPOSED_HEADERS,
        )
    app.add_middleware(  # outermost
        GatewayMiddleware,
        max_body_bytes=settings.max_body_bytes,
        trust_adapter_headers=settings.adapter_headers_trusted,
        deadline_seconds=settings.request_deadline_seconds,
        deadline_margin=settings.deadline_margin_seconds,
    )
    install_error_handlers(app)
    include_routers(app)
    openapi.install(app)
    return app


app = create_app()
# Out of the collector's reach before it runs again: the first collection after gc.enable() would
# otherwise walk (and promote, to walk again in generation 1) every object the imports made, on the
# cold start's path (~50-100 ms here). settle_heap() freezes the rest once the services are built.
gc.freeze()
gc.enable()
