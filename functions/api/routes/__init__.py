"""The API's routers, one module per resource; ``app.py`` includes them in this order."""

from fastapi import APIRouter

from routes import chat, conversations, health, jobs, models, responses

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    models.router,
    chat.router,
    responses.router,
    conversations.router,
    jobs.router,
)
