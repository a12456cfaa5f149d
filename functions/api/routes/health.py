"""Liveness: no auth, no AWS call."""

from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel

import openapi
from llm_gateway import __version__

router = APIRouter(tags=["meta"])


class Health(BaseModel):
    status: Literal["ok"]
    version: str


@router.get("/health", responses=openapi.errors(public=True))
def health() -> Health:
    return Health(status="ok", version=__version__)


@router.head("/health", response_class=Response, responses=openapi.errors(public=True))
def health_head() -> Response:
    """Liveness without a body (load balancers, uptime checks)."""
    return Response(status_code=200)
