"""The app's start-up: build (and so validate) the services before the first request."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

from llm_gateway.errors import GatewayError
from llm_gateway.observability import logger
from llm_gateway.runtime import Services, settle_heap, warm_up

SHUTDOWN_DRAIN_SECONDS = 5.0  # the Web Adapter / uvicorn grace period is longer


def lifespan(
    provider: Callable[[], Services], *, from_environment: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A bad routing configuration stops the server here with a message naming the entry, instead of
    failing every request later. ``from_environment`` (the deployed app; tests pass their own services)
    also warms the container up."""

    @asynccontextmanager
    async def run(_: FastAPI) -> AsyncIterator[None]:
        try:
            ready = provider()
        except GatewayError as exc:
            logger.error("configuration error at start-up", extra={"error": exc.message})
            raise
        if from_environment:
            warm_up(ready)  # KMS Decrypt and the token encoding, in the background
            settle_heap()  # the start-up heap out of the collector's reach: no full-GC stall later
        try:
            yield
        finally:
            quotas = getattr(ready, "quotas", None)  # (some tests hand in a placeholder for the services)
            if quotas is not None:
                quotas.drain(SHUTDOWN_DRAIN_SECONDS)  # the usage still pending (quotas.writer)

    return run
