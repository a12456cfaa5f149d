"""Limits enforced before the upstream call, exactly, under concurrency (moto server + fake upstream)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from llm_gateway.quotas.counters import NANO
from llm_gateway.quotas.service import key_pk, tenant_pk
from local.fake_upstream import FakeUpstream
from tests.integration.conftest import TENANT_KEY, chat
from tests.integration.quota_helpers import day_counter, key_id, limit_key, limit_tenant, quota_gateway

RATE_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
)


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream() as f:
        yield f


@pytest.fixture(autouse=True)
def _reset(fake):
    fake.reset()


def test_denial_of_wallet_60_rpm_key_sending_1000_requests(aws, fake):
    gw, clock = quota_gateway(aws, fake)
    limit_key(gw, rpm=60)

    def send(i: int):
        return gw.post("/v1/chat/completions", chat(f"hi {i}", max_tokens=5))

    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(send, range(1000)))
    ok = [r for r in replies if r.status_code == 200]
    limited = [r for r in replies if r.status_code == 429]
    assert len(ok) == 60 and len(limited) == 940
    assert fake.chat_calls == 60  # counted at the upstream
    for r in limited[:50]:
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert r.headers["x-ratelimit-limit-requests"] == "60"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        assert "x-should-retry" not in r.headers  # a later retry can succeed
    for r in ok:
        assert all(h in r.headers for h in RATE_HEADERS)
    # after the window, requests pass again
    clock.now += 60
    again = send(1000)
    assert again.status_code == 200, again.text
    assert fake.chat_calls == 61


def test_budget_race_50_concurrent_for_a_budget_of_exactly_10(aws, fake):
    gw, clock = quota_gateway(aws, fake)
    body = chat("hello there", max_tokens=5)  # the fake answers with exactly 5 tokens (cut at max_tokens)
    prompt = fake_prompt_tokens(body)
    per_call = (prompt * 1.0 + 5 * 2.0) / 1e6  # the PRICES of quota_helpers
    limit_key(gw, usd_per_day=per_call * 10)

    with ThreadPoolExecutor(50) as pool:
        replies = list(pool.map(lambda _: gw.post("/v1/chat/completions", body), range(50)))
    ok = [r for r in replies if r.status_code == 200]
    assert len(ok) == 10 and fake.chat_calls == 10
    for r in replies:
        if r.status_code != 200:
            assert r.status_code == 429
            assert r.json()["error"]["code"] == "insufficient_quota"
            assert r.headers["x-should-retry"] == "false"
    costs = [gw.services.routing.resolve("default").deployments[0].cost(**usage(r)) for r in ok]
    recorded = day_counter(gw, key_pk("tenant-a", key_id(gw)), clock)
    assert recorded["nusd"] <= per_call * 10 * NANO + 1
    assert recorded["nusd"] == sum(round(c * NANO) for c in costs)


def test_no_over_reservation_lockout_with_a_huge_max_tokens(aws, fake):
    # $1 a day on an alias at $15 per 1M output tokens: reserving all of max_tokens=100,000 ($1.50)
    # would refuse every request; the reserve cap ($0.06) admits them, and real spend is tiny.
    gw, clock = quota_gateway(aws, fake, default_output_price_per_1m=15.0)
    limit_key(gw, usd_per_day=1.0)
    for i in range(5):
        r = gw.post("/v1/chat/completions", chat(f"hello {i}", max_tokens=100_000))
        assert r.status_code == 200, r.text
    spent = day_counter(gw, key_pk("tenant-a", key_id(gw)), clock)["nusd"] / NANO
    assert spent < 0.01


def test_tokens_per_minute_cut_at_1000(aws, fake):
    gw, clock = quota_gateway(aws, fake)
    limit_key(gw, tpm=1_000)
    body = chat("count me", max_tokens=20)
    used = 0
    for _ in range(200):
        r = gw.post("/v1/chat/completions", body)
        if r.status_code == 429:
            break
        assert r.status_code == 200
        used += r.json()["usage"]["total_tokens"]
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
    minute = gw.services.quotas.counters.read(key_pk("tenant-a", key_id(gw)), f"M#{_minute(clock)}")
    assert minute["tok"] == used <= 1_000  # reconciled to the real tokens
    estimate = fake_prompt_tokens(body) + 20
    assert used + estimate > 1_000  # cut only when the next estimate no longer fits
    assert r.headers["x-ratelimit-limit-tokens"] == "1000"
    clock.now += 60
    assert gw.post("/v1/chat/completions", body).status_code == 200


def test_tenant_limit_applies_across_its_keys(aws, fake):
    gw, clock = quota_gateway(aws, fake)
    limit_tenant(gw, rpm=3)
    second, _ = gw.services.auth.keys.create("tenant-a", "second")
    statuses = [gw.post("/v1/chat/completions", chat("x"), key=k).status_code for k in (TENANT_KEY, second) * 2]
    assert statuses == [200, 200, 200, 429]
    assert gw.services.quotas.counters.read(tenant_pk("tenant-a"), f"M#{_minute(clock)}")["req"] == 3


def _minute(clock) -> str:
    from llm_gateway.quotas.service import Windows

    return Windows.at(clock.now).minute


def usage(reply) -> dict:
    u = reply.json()["usage"]
    return {"prompt_tokens": u["prompt_tokens"], "completion_tokens": u["completion_tokens"]}


def fake_prompt_tokens(body: dict) -> int:
    from local.fake_upstream import count_prompt_tokens

    return count_prompt_tokens(body["messages"])


def test_alias_caps_on_n_and_max_tokens_are_400s_naming_the_field(aws, fake):
    gw, _ = quota_gateway(aws, fake)
    too_many = gw.post("/v1/chat/completions", chat("hi", n=9))
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "n"
    huge = gw.post("/v1/chat/completions", chat("hi", max_tokens=10_000_000))
    assert huge.status_code == 400 and huge.json()["error"]["param"] == "max_tokens"
    assert fake.chat_calls == 0
    assert gw.post("/v1/chat/completions", chat("hi", n=8, max_tokens=100_000)).status_code == 200
