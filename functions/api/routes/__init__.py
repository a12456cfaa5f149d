"""The API's routers, one module per resource; ``app.py`` includes them in this order."""

from fastapi import APIRouter

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
