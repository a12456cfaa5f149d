"""Admin routes: keys, tenant limits, any tenant's usage. Admin keys only (403 for others)."""

from typing import Any

from fastapi import APIRouter

from deps import AdminDep, ServicesDep
from llm_gateway.quotas.admin import CreateKey
from llm_gateway.quotas.limits import Limits

router = APIRouter(tags=["admin"])


@router.post("/v1/admin/keys")
def create_key(body: CreateKey, who: AdminDep, services: ServicesDep) -> dict[str, Any]:
    """A new gateway key for ``tenant``: the key is in this response only."""
    return services.admin.create_key(who.key_id, body)


@router.get("/v1/admin/keys")
def list_keys(who: AdminDep, services: ServicesDep, tenant: str | None = None) -> dict[str, Any]:
    return services.admin.list_keys(who.key_id, tenant)


@router.delete("/v1/admin/keys/{key_id}")
def revoke_key(key_id: str, who: AdminDep, services: ServicesDep) -> dict[str, Any]:
    return services.admin.revoke_key(who.key_id, key_id)


@router.put("/v1/admin/tenants/{tenant}/limits")
def put_limits(tenant: str, body: Limits, who: AdminDep, services: ServicesDep) -> dict[str, Any]:
    return services.admin.put_limits(who.key_id, tenant, body)


@router.get("/v1/admin/tenants/{tenant}/limits")
def get_limits(tenant: str, who: AdminDep, services: ServicesDep) -> dict[str, Any]:
    return services.admin.get_limits(who.key_id, tenant)


@router.get("/v1/admin/usage")
def tenant_usage(
    who: AdminDep,
    services: ServicesDep,
    tenant: str | None = None,
    start: str | None = None,
    end: str | None = None,
    group_by: str = "day",
) -> dict[str, Any]:
    return services.admin.usage(who.key_id, tenant, start, end, group_by)
