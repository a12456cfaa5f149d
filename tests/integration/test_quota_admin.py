"""Usage reports, the admin routes, and what the official openai SDK makes of our 429s."""

from __future__ import annotations

import openai
import pytest

from llm_gateway.security.api_keys import ApiKeyStore
from local.fake_upstream import FakeUpstream
from tests.integration.conftest import TENANT_KEY, chat, serve
from tests.integration.quota_helpers import key_id, limit_key, quota_gateway

ADMIN_KEY = "sk-gw-test-admin"


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream() as f:
        yield f


@pytest.fixture
def gw(aws, fake):
    fake.reset()
    gateway, clock = quota_gateway(aws, fake)
    ApiKeyStore(aws.res.table_name, client=aws.client("dynamodb")).create("ops", "admin", key=ADMIN_KEY, admin=True)
    gateway.clock = clock
    return gateway


def test_usage_equals_the_sum_of_per_call_costs(gw):
    deployment = gw.services.routing.resolve("default").deployments[0]
    costs, prompt, completion = [], 0, 0
    for i in range(7):
        r = gw.post("/v1/chat/completions", chat(f"message number {i}"))
        assert r.status_code == 200
        u = r.json()["usage"]
        prompt, completion = prompt + u["prompt_tokens"], completion + u["completion_tokens"]
        costs.append(deployment.cost(u["prompt_tokens"], u["completion_tokens"]))
    day = gw.get("/v1/usage?group_by=day&start=2027-01-15&end=2027-01-15")
    assert day.status_code == 200, day.text
    (row,) = day.json()["data"]
    assert row["day"] == "2027-01-15"  # the injected clock's day
    assert row["requests"] == 7
    assert (row["input_tokens"], row["output_tokens"]) == (prompt, completion)
    assert row["cost_usd"] == pytest.approx(sum(costs), abs=1e-9)
    by_model = gw.get("/v1/usage?group_by=model&start=2027-01-01&end=2027-01-31").json()
    assert [m["model"] for m in by_model["data"]] == ["default"]
    assert by_model["data"][0]["requests"] == 7
    by_key = gw.get("/v1/usage?group_by=key&start=2027-01-01&end=2027-01-31").json()
    assert [(k["key"], k["requests"]) for k in by_key["data"]] == [(key_id(gw), 7)]
    # another tenant sees none of it
    other = gw.get("/v1/usage?start=2027-01-01&end=2027-01-31", key="sk-gw-test-tenant-b").json()
    assert other["data"] == [] and other["total"]["requests"] == 0
    bad = gw.get("/v1/usage?group_by=week")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"


ADMIN_ROUTES = [
    ("POST", "/v1/admin/keys", {"tenant": "acme", "name": "ci", "limits": {"rpm": 5}}),
    ("GET", "/v1/admin/keys?tenant=acme", None),
    ("DELETE", "/v1/admin/keys/key_000000000000", None),
    ("PUT", "/v1/admin/tenants/acme/limits", {"usd_per_day": 1.5}),
    ("GET", "/v1/admin/tenants/acme/limits", None),
    ("GET", "/v1/admin/usage?tenant=acme", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_admin_routes_are_403_for_a_tenant_key(gw, method, path, body):
    before = ApiKeyStore(gw.aws.res.table_name, client=gw.aws.client("dynamodb")).list("acme")
    r = gw.client.request(method, path, json=body, headers=gw.headers(TENANT_KEY))
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "admin_key_required"
    assert r.json()["error"]["type"] == "permission_error"
    assert ApiKeyStore(gw.aws.res.table_name, client=gw.aws.client("dynamodb")).list("acme") == before


def test_admin_routes_work_for_the_admin_key(gw, fake, caplog):
    admin = gw.headers(ADMIN_KEY)
    body = {"tenant": "acme", "name": "ci", "limits": {"rpm": 2}}
    created = gw.client.post("/v1/admin/keys", json=body, headers=admin)
    assert created.status_code == 200, created.text
    new = created.json()
    assert new["key"].startswith("sk-gw-") and new["tenant"] == "acme" and new["limits"]["rpm"] == 2
    assert set(new) >= {"id", "key", "tenant", "name", "limits"}
    # the new key works, within its own limits
    statuses = [gw.post("/v1/chat/completions", chat("hi"), key=new["key"]).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    listed = gw.client.get("/v1/admin/keys?tenant=acme", headers=admin).json()
    assert [k["id"] for k in listed["data"]] == [new["id"]]
    assert "key" not in listed["data"][0]
    limits = {"usd_per_day": 1.5, "models": ["default"]}
    put = gw.client.put("/v1/admin/tenants/acme/limits", json=limits, headers=admin)
    assert put.status_code == 200 and put.json()["limits"]["usd_per_day"] == 1.5
    got = gw.client.get("/v1/admin/tenants/acme/limits", headers=admin).json()
    assert got["limits"] == {**limits, "rpm": None, "tpm": None, "max_concurrent": None} | {
        "usd_per_month": None,
        "tokens_per_day": None,
    }
    bad = gw.client.put("/v1/admin/tenants/acme/limits", json={"rpm": -1}, headers=admin)
    assert bad.status_code == 400
    usage = gw.client.get("/v1/admin/usage?tenant=acme&start=2027-01-01&end=2027-01-31", headers=admin).json()
    assert usage["tenant"] == "acme" and usage["total"]["requests"] == 2  # the refused request left no trace
    assert gw.client.get("/v1/admin/usage", headers=admin).status_code == 400  # tenant is required
    revoked = gw.client.delete(f"/v1/admin/keys/{new['id']}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert gw.client.delete("/v1/admin/keys/key_000000000000", headers=admin).status_code == 404
    # every action was logged with who and what, never a key
    actions = [r for r in caplog.records if r.getMessage() == "admin action"]
    assert {getattr(a, "action", None) for a in actions} >= {
        "create_key",
        "list_keys",
        "put_tenant_limits",
        "get_tenant_limits",
        "get_usage",
        "revoke_key",
    }
    admin_id = gw.services.auth.keys.lookup(ADMIN_KEY).key_id
    assert all(getattr(a, "admin_key_id", None) == admin_id for a in actions)
    text = "\n".join(str(r.__dict__) for r in caplog.records)
    assert new["key"] not in text and ADMIN_KEY not in text


def test_a_key_may_not_use_a_model_outside_its_list(gw):
    limit_key(gw, models=["other"])
    r = gw.post("/v1/chat/completions", chat("hi"))
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "model_not_allowed" and r.json()["error"]["param"] == "model"


def test_openai_sdk_sees_rate_limit_error_and_does_not_retry_a_spent_budget(gw, fake):
    limit_key(gw, usd_per_day=0.0)
    attempts = []
    with serve(gw.app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=TENANT_KEY, max_retries=2)
        client._client.event_hooks["request"].append(lambda request: attempts.append(request.url.path))
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "insufficient_quota"
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert attempts == ["/v1/chat/completions"]  # one attempt: the SDK honoured x-should-retry
    assert fake.chat_calls == 0


def test_openai_sdk_sees_rate_limit_error_on_rpm(gw, fake):
    limit_key(gw, rpm=1)
    with serve(gw.app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=TENANT_KEY, max_retries=0)
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "rate_limit_exceeded"
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert fake.chat_calls == 1
