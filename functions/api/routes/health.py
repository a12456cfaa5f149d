"""Liveness: no auth, no AWS call."""

from fastapi import APIRouter

from llm_gateway import __version__

router = APIRouter(tags=["meta"])


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}
