"""QuotaService over the in-memory counter store: estimates, caps, slots, settlement arithmetic."""

from __future__ import annotations

import pytest

from llm_gateway.errors import ModelNotAllowed, QuotaExhausted, RateLimited, to_http
from llm_gateway.quotas.counters import NANO
from llm_gateway.quotas.limits import Limits
from llm_gateway.quotas.service import QuotaService, Windows, key_pk, tenant_pk
from llm_gateway.upstream.aliases import Deployment, ModelAlias
from tests.fakes import InMemoryCounterStore, InMemoryLimitsStore

NOW = 1_800_000_030.0  # 2027-01-15T08:00:30Z
ALIAS = ModelAlias(
    name="m",
    deployments=[
        Deployment(name="cheap", model="x", input_price_per_1m=1.0, output_price_per_1m=2.0),
        Deployment(name="dear", model="y", input_price_per_1m=3.0, output_price_per_1m=4.0),
    ],
)


@pytest.fixture
def quotas():
    clock = {"now": NOW}
    service = QuotaService(InMemoryCounterStore(), InMemoryLimitsStore(), output_reserve_tokens=100)
    service.clock = lambda: clock["now"]
    service.clock_state = clock  # type: ignore[attr-defined]
    return service


def day(service, pk):
    return service.counters.read(pk, f"D#{Windows.at(NOW).day}")


def test_estimate_is_prompt_plus_capped_allowance_at_the_dearest_deployment(quotas):
    assert quotas.estimate(ALIAS, 50, None).tokens == 150  # no max_tokens: the reserve
    assert quotas.estimate(ALIAS, 50, 10).tokens == 60
    assert quotas.estimate(ALIAS, 50, 1_000_000).tokens == 150  # capped
    assert quotas.estimate(ALIAS, 50, 10, choices=3).tokens == 80
    assert quotas.estimate(ALIAS, 1_000_000, 0 or None).nano_usd == (3 * NANO + 100 * 4 * 1000)


def test_settlement_adds_the_difference_so_counters_equal_real_usage(quotas):
    quotas.limits.put_key("t", "k", Limits(rpm=10, usd_per_day=1.0, usd_per_month=5.0))
    hold = quotas.admit("t", "k", ALIAS, 50, 20, 30)
    assert day(quotas, key_pk("t", "k"))["tok"] == 70  # the estimate, while in flight
    hold.settle(48, 7, 0.000123)
    hold.settle(1, 1, 1.0)  # a second settle is a no-op
    key_day = day(quotas, key_pk("t", "k"))
    assert (key_day["req"], key_day["tok"], key_day["in"], key_day["out"]) == (1, 55, 48, 7)
    assert key_day["nusd"] == 123_000
    month = quotas.counters.read(key_pk("t", "k"), f"MO#{Windows.at(NOW).month}")
    assert month["nusd"] == 123_000
    per_model = quotas.counters.read(tenant_pk("t"), f"D#{Windows.at(NOW).day}#A#m")
    assert (per_model["req"], per_model["in"], per_model["out"], per_model["nusd"]) == (1, 48, 7, 123_000)


def test_a_failed_call_releases_everything_but_the_request(quotas):
    quotas.limits.put_key("t", "k", Limits(tpm=1_000, max_concurrent=1))
    quotas.admit("t", "k", ALIAS, 50, 20, 30).release()
    minute = quotas.counters.read(key_pk("t", "k"), f"M#{Windows.at(NOW).minute}")
    assert (minute["req"], minute["tok"]) == (1, 0)
    assert not quotas.counters.read(key_pk("t", "k"), "SLOTS")["holders"]


def test_rpm_denial_names_the_limit_with_retry_after_to_the_minute_end(quotas):
    quotas.limits.put_key("t", "k", Limits(rpm=2))
    quotas.admit("t", "k", ALIAS, 5, 5, 30)
    quotas.admit("t", "k", ALIAS, 5, 5, 30)
    with pytest.raises(RateLimited) as caught:
        quotas.admit("t", "k", ALIAS, 5, 5, 30)
    http = to_http(caught.value)
    assert http.status == 429 and http.body["error"]["code"] == "rate_limit_exceeded"
    assert http.headers["Retry-After"] == "30"
    assert http.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-should-retry" not in http.headers


def test_a_budget_denial_is_insufficient_quota_and_says_do_not_retry(quotas):
    quotas.limits.put_tenant("t", Limits(usd_per_day=0.0005))
    quotas.admit("t", None, ALIAS, 50, 50, 30).settle(50, 50, 0.0004)
    with pytest.raises(QuotaExhausted) as caught:
        quotas.admit("t", None, ALIAS, 50, 50, 30)
    http = to_http(caught.value)
    assert http.body["error"] == {
        "message": http.body["error"]["message"],
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
    assert http.headers["x-should-retry"] == "false"
    assert int(http.headers["Retry-After"]) == 86_400 - (8 * 3600 + 30)  # to the UTC midnight


def test_an_estimate_above_a_whole_limit_writes_nothing(quotas):
    quotas.limits.put_key("t", "k", Limits(tpm=10))
    with pytest.raises(RateLimited) as caught:
        quotas.admit("t", "k", ALIAS, 50, 5, 30)
    assert caught.value.headers["x-should-retry"] == "false"
    assert quotas.counters.reserves == 0


def test_concurrency_slot_expires_when_its_holder_crashed(quotas):
    quotas.limits.put_key("t", "k", Limits(max_concurrent=1))
    quotas.admit("t", "k", ALIAS, 5, 5, hold_seconds=10)  # never settled
    with pytest.raises(RateLimited) as caught:
        quotas.admit("t", "k", ALIAS, 5, 5, 10)
    assert caught.value.retry_after == 1.0
    quotas.clock_state["now"] += 12
    quotas.admit("t", "k", ALIAS, 5, 5, 10).release()


def test_the_tenant_limit_holds_across_keys_and_a_disallowed_model_is_403(quotas):
    quotas.limits.put_tenant("t", Limits(rpm=1, models=["m"]))
    quotas.admit("t", "k1", ALIAS, 5, 5, 30)
    with pytest.raises(RateLimited):
        quotas.admit("t", "k2", ALIAS, 5, 5, 30)
    assert quotas.counters.read(key_pk("t", "k2"), f"M#{Windows.at(NOW).minute}") == {}  # all or nothing
    quotas.limits.put_key("t", "k3", Limits(models=["other"]))
    with pytest.raises(ModelNotAllowed) as caught:
        quotas.admit("t", "k3", ALIAS, 5, 5, 30)
    assert to_http(caught.value).status == 403


def test_unlimited_scopes_reserve_nothing_and_record_at_settlement(quotas):
    hold = quotas.admit("t", "k", ALIAS, 5, 5, 30)
    assert quotas.counters.reserves == 0 and day(quotas, tenant_pk("t")) == {}
    hold.settle(4, 3, 0.00001)
    assert quotas.counters.settles == 1
    tenant_day = day(quotas, tenant_pk("t"))
    assert (tenant_day["req"], tenant_day["tok"], tenant_day["nusd"]) == (1, 7, 10_000)


def test_windows_roll_at_utc_boundaries():
    w = Windows.at(1_798_761_599.0)  # 2026-12-31T23:59:59Z
    assert (w.minute, w.day, w.month) == ("202612312359", "20261231", "202612")
    assert w.minute_end == w.day_end == w.month_end == 1_798_761_600
