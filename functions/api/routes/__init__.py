"""The API's routers, one module per resource; ``app.py`` includes them in this order."""

from fastapi import APIRouter, FastAPI

import openapi
from routes import admin, chat, conversations, health, jobs, models, responses, usage

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    models.router,
    chat.router,
    responses.router,
    conversations.router,
    jobs.router,
    usage.router,
    admin.router,
)


def include_routers(app: FastAPI) -> None:
    """Every router, each operation documenting the errors any route can send (its own add more)."""
    for router in ROUTERS:
        extra = openapi.ADMIN_ERRORS if router is admin.router else ()
        app.include_router(router, responses=openapi.errors(*extra, public=router is health.router))
