"""The caller tenant's usage, read from the quota counters."""

from typing import Any

from fastapi import APIRouter

import openapi
from deps import CallerDep, ServicesDep
from llm_gateway.quotas.shapes import UsageReport

router = APIRouter(tags=["usage"])


@router.get("/v1/usage", response_model=None, responses=openapi.body(UsageReport))
def get_usage(
    who: CallerDep, services: ServicesDep, start: str | None = None, end: str | None = None, group_by: str = "day"
) -> dict[str, Any]:
    """Requests, input and output tokens and cost (USD) per UTC day, model alias or key, between
    ``start`` and ``end`` (YYYY-MM-DD or Unix seconds, inclusive; default: this month so far)."""
    return services.admin.usage(None, who.tenant, start, end, group_by)
