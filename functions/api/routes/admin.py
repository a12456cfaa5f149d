"""Admin routes: keys, tenant limits, any tenant's usage. Admin keys only (403 for others)."""

from typing import Any

from fastapi import APIRouter

import openapi
from deps import AdminDep, ServicesDep
from llm_gateway.quotas.admin import CreateKey
from llm_gateway.quotas.limits import Limits
from llm_gateway.quotas.shapes import ApiKeyList, CreatedApiKey, RevokedApiKey, TenantLimits, UsageReport

router = APIRouter(tags=["admin"])


@router.post("/v1/admin/keys", response_model=None, responses=openapi.body(CreatedApiKey))
def create_key(body: CreateKey, who: AdminDep, services: ServicesDep) -> dict[str, Any]:
    """A new gateway key for ``tenant``: the key is in this response only."""
    return services.admin.create_key(who.key_id, body)


@router.get("/v1/admin/keys", response_model=None, responses=openapi.body(ApiKeyList))
def list_keys(who: AdminDep, services: ServicesDep, tenant: str | None = None) -> dict[str, Any]:
    return services.admin.list_keys(who.key_id, tenant)


@router.delete("/v1/admin/keys/{key_id}", response_model=None, responses=openapi.body(RevokedApiKey))
def revoke_key(key_id: str, who: AdminDep, services: ServicesDep) -> dict[str, Any]:
    return services.admin.revoke_key(who.key_id, key_id)


@router.put("/v1/admin/tenants/{tenant}/limits", response_model=None, responses=openapi.body(TenantLimits))
def put_limits(tenant: str, body: Limits, who: AdminDep, services: ServicesDep) -> dict[str, Any]:
    return services.admin.put_limits(who.key_id, tenant, body)


@router.get("/v1/admin/tenants/{tenant}/limits", response_model=None, responses=openapi.body(TenantLimits))
def get_limits(tenant: str, who: AdminDep, services: ServicesDep) -> dict[str, Any]:
    return services.admin.get_limits(who.key_id, tenant)


@router.get("/v1/admin/usage", response_model=None, responses=openapi.body(UsageReport))
def tenant_usage(
    who: AdminDep,
    services: ServicesDep,
    tenant: str | None = None,
    start: str | None = None,
    end: str | None = None,
    group_by: str = "day",
) -> dict[str, Any]:
    return services.admin.usage(who.key_id, tenant, start, end, group_by)
