"""AdminService over the shared in-memory fakes: the bodies it builds are the documented shapes
(quotas/shapes.py), a key's limits are stored with it, and nothing secret is listed."""

from __future__ import annotations

import datetime as dt

import pytest

from llm_gateway.errors import InvalidRequest, NotFound
from llm_gateway.quotas.admin import AdminService, CreateKey
from llm_gateway.quotas.limits import Limits
from llm_gateway.quotas.shapes import ApiKeyList, CreatedApiKey, RevokedApiKey, TenantLimits, UsageReport
from tests.fakes import InMemoryCounterStore, InMemoryKeyStore, InMemoryLimitsStore


def admin() -> tuple[AdminService, InMemoryKeyStore, InMemoryLimitsStore]:
    keys, limits = InMemoryKeyStore(), InMemoryLimitsStore()
    return AdminService(keys, limits, InMemoryCounterStore(), today=lambda: dt.date(2026, 3, 15)), keys, limits


def test_a_created_key_is_shown_once_with_its_limits_and_listed_without_it():
    service, keys, limits = admin()
    created = CreatedApiKey.model_validate(
        service.create_key("key_admin", CreateKey(tenant="acme", name="ci", limits=Limits(rpm=60)))
    )
    assert created.key.startswith("sk-gw-") and keys.lookup(created.key).key_id == created.id
    assert created.limits.rpm == 60 and limits.keys[("acme", created.id)].rpm == 60
    listed = ApiKeyList.model_validate(service.list_keys("key_admin", "acme"))
    assert [k.id for k in listed.data] == [created.id]
    assert created.key not in str(listed.model_dump())
    assert service.list_keys("key_admin", "other")["data"] == []


def test_a_revoked_key_is_marked_and_an_unknown_one_is_a_404():
    service, keys, _ = admin()
    created = service.create_key("key_admin", CreateKey(tenant="acme"))
    revoked = RevokedApiKey.model_validate(service.revoke_key("key_admin", created["id"]))
    assert revoked.revoked and revoked.deleted and keys.lookup(created["key"]).revoked
    with pytest.raises(NotFound):
        service.revoke_key("key_admin", "key_nope")


def test_tenant_limits_round_trip_and_usage_is_a_report():
    service, _, _ = admin()
    put = TenantLimits.model_validate(service.put_limits("key_admin", "acme", Limits(usd_per_day=5.0)))
    assert put.limits.usd_per_day == 5.0
    assert TenantLimits.model_validate(service.get_limits("key_admin", "acme")) == put
    report = UsageReport.model_validate(service.usage("key_admin", "acme", None, None, "day"))
    assert (report.start, report.end, report.data, report.total.requests) == ("2026-03-01", "2026-03-15", [], 0)
    with pytest.raises(InvalidRequest):
        service.usage("key_admin", None, None, None, "day")
