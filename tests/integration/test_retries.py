"""Upstream retries through the app (issue 2, "Retries"): `responses` plays the upstream."""

from __future__ import annotations

import time

import pytest
import requests

from llm_gateway.upstream.retry import RetryBudget
from tests.integration.conftest import (
    chat,
    count_calls,
    make_gateway,
    openai_error,
    regateway,
    scripted,
    set_upstream,
)

SERVER_ERROR = openai_error("The server had an error while processing your request.", "server_error")


def test_429_with_retry_after_1_then_200_succeeds_after_waiting_at_least_1s(aws):
    from tests.integration.conftest import mocked_upstream

    with mocked_upstream() as mock:
        gw = make_gateway(aws, sleep=time.sleep)  # a real sleep: the wait is measured
        gw.upstream = mock
        set_upstream(gw, scripted((429, {"Retry-After": "1"}, openai_error("Rate limit reached", "requests"))))
        started = time.monotonic()
        r = gw.post("/v1/chat/completions", chat("hello"))
        elapsed = time.monotonic() - started
        calls = len(gw.upstream_calls())
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].startswith("echo:hello")
    assert gw.sleeps == [1.0]  # Retry-After, not a backoff of its own
    assert elapsed >= 1.0
    assert calls == 2


def test_retry_after_ms_is_preferred(gateway):
    set_upstream(gateway, scripted((429, {"retry-after-ms": "250", "Retry-After": "3"}, openai_error("slow down"))))
    assert gateway.post("/v1/chat/completions", chat("x")).status_code == 200
    assert gateway.sleeps == [0.25]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_are_retried_with_full_jitter_backoff(gateway, status):
    policy = gateway.services.chat.router.policy
    for _ in range(8):
        set_upstream(gateway, scripted((status, {}, SERVER_ERROR), (status, {}, SERVER_ERROR)))
        r = gateway.post("/v1/chat/completions", chat("x"))
        assert r.status_code == 200, r.text
    assert len(gateway.upstream_calls()) == 8 * 3
    first, second = gateway.sleeps[0::2], gateway.sleeps[1::2]
    assert len(first) == len(second) == 8
    # full jitter: uniform in [0, min(cap, base * 2^(n-1))] — bounded, and not a fixed delay
    assert all(0 <= s <= min(policy.backoff_max, policy.backoff_base) for s in first)
    assert all(0 <= s <= min(policy.backoff_max, policy.backoff_base * 2) for s in second)
    assert len(set(gateway.sleeps)) > 8


@pytest.mark.parametrize(("status", "client_status"), [(400, 400), (404, 400), (422, 400)])
def test_client_errors_are_not_retried(gateway, status, client_status):
    set_upstream(gateway, scripted((status, {}, openai_error("Invalid value for 'seed'.", code="invalid_value"))))
    r = gateway.post("/v1/chat/completions", chat("x", seed=1))
    assert r.status_code == client_status
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "Invalid value for 'seed'." in error["message"]  # the upstream's reason is passed on
    assert len(gateway.upstream_calls()) == 1 and gateway.sleeps == []


def test_401_refreshes_the_key_once_then_502_without_retries(gateway):
    decrypts = count_calls(gateway.kms, ("Decrypt",))
    unauthorized = (401, {}, openai_error("Incorrect API key provided.", code="invalid_api_key"))
    set_upstream(gateway, scripted(unauthorized, unauthorized, unauthorized))
    r = gateway.post("/v1/chat/completions", chat("x"))
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_auth_failed"
    # The refresh decrypted the same ciphertext to the same key: sending it again cannot succeed, so it is
    # not sent (a rotated key is sent at once: tests/unit/test_key_refresh.py).
    assert len(gateway.upstream_calls()) == 1
    assert decrypts.attempted == {"Decrypt": 2}  # first use + one refresh
    assert gateway.sleeps == []


@pytest.mark.parametrize(("status", "client_status"), [(429, 429), (503, 503)])
def test_retry_after_past_the_deadline_fails_fast_without_sleeping(gateway, status, client_status):
    gw = regateway(gateway, request_deadline_seconds=5)
    set_upstream(gw, scripted((status, {"Retry-After": "30"}, openai_error("busy", "requests"))))
    started = time.monotonic()
    r = gw.post("/v1/chat/completions", chat("x"))
    assert r.status_code == client_status, r.text
    assert gw.sleeps == []  # no sleep at all, let alone one past the deadline
    assert len(gw.upstream_calls()) == 1
    assert time.monotonic() - started < 5  # answered before the deadline it would have slept through
    if status == 429:
        assert r.headers["Retry-After"] == "30"  # the upstream's wait is passed on to the client


@pytest.mark.parametrize("max_attempts", [1, 2, 4])
def test_attempts_never_exceed_max_attempts(gateway, max_attempts):
    gw = regateway(gateway, max_attempts=max_attempts)
    set_upstream(gw, scripted(*[(503, {}, SERVER_ERROR)] * 10))
    r = gw.post("/v1/chat/completions", chat("x"))
    assert r.status_code == 503
    assert len(gw.upstream_calls()) == max_attempts
    assert len(gw.sleeps) == max_attempts - 1


def test_connection_errors_and_timeouts_are_retried_within_max_attempts(gateway):
    set_upstream(gateway, scripted((0, {}, requests.ConnectionError("refused")), (0, {}, requests.ReadTimeout("slow"))))
    assert gateway.post("/v1/chat/completions", chat("x")).status_code == 200
    assert len(gateway.sleeps) == 2
    set_upstream(gateway, scripted(*[(0, {}, requests.ReadTimeout("slow"))] * 3))
    r = gateway.post("/v1/chat/completions", chat("x"))
    assert r.status_code == 504 and r.json()["error"]["type"] == "timeout_error"


def test_spend_limit_429_is_not_retried(gateway):
    quota = openai_error("You exceeded your current quota.", "insufficient_quota", "insufficient_quota")
    set_upstream(gateway, scripted((429, {"Retry-After": "1"}, quota)))
    r = gateway.post("/v1/chat/completions", chat("x"))
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
    assert len(gateway.upstream_calls()) == 1 and gateway.sleeps == []


def test_an_exhausted_retry_budget_stops_retries(aws):
    """Budget of 10 retries, no refill: 5 failing requests spend it, the 6th is not retried."""
    from tests.integration.conftest import mocked_upstream

    with mocked_upstream() as mock:
        gw = make_gateway(aws, budget=RetryBudget(ratio=0.0, min_per_second=0.0))
        gw.upstream = mock
        set_upstream(gw, scripted(*[(500, {}, SERVER_ERROR)] * 100))
        statuses = [gw.post("/v1/chat/completions", chat(f"x{i}")).status_code for i in range(6)]
        calls = len(gw.upstream_calls())
    assert statuses == [502] * 5 + [503]  # the last one: unavailable, since it was not retried
    assert calls == 5 * 3 + 1
    assert len(gw.sleeps) == 10


@pytest.mark.parametrize(
    "reply",
    [
        {"choices": ["not an object"]},
        {"choices": [{"index": 0, "message": "not an object", "finish_reason": "stop"}]},
    ],
    ids=["choice", "message"],
)
def test_a_malformed_completion_is_a_502_that_stores_nothing_and_frees_the_conversation(gateway, reply):
    """An upstream 200 whose body is not a chat.completion is the upstream's failure (502), never
    a 500 of ours; the conversation's lease is let go and nothing is stored."""
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    for body in (chat("hello"), chat("hello", conv)):
        set_upstream(gateway, scripted(*[(200, {}, reply)] * 3))
        r = gateway.post("/v1/chat/completions", body)
        assert r.status_code == 502, r.text
        assert r.json()["error"]["type"] == "upstream_error"
    assert gateway.get(f"/v1/conversations/{conv}").json()["message_count"] == 0
    assert gateway.post("/v1/chat/completions", chat("again", conv)).status_code == 200  # not 409


@pytest.mark.parametrize("usage", ["not an object", {"prompt_tokens": "many"}], ids=["usage", "usage-count"])
def test_unbelievable_usage_in_a_completion_is_replaced_by_our_count(gateway, usage):
    """Usage is never trusted (chat.usage): a reply whose usage makes no sense is still the reply,
    billed and stored at the gateway's own count, not the upstream's failure."""
    reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}], "usage": usage}
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    for body in (chat("hello"), chat("hello", conv)):
        set_upstream(gateway, scripted((200, {}, reply)))
        r = gateway.post("/v1/chat/completions", body)
        assert r.status_code == 200, r.text
        counted = r.json()["usage"]
        assert counted["prompt_tokens"] > 0 and counted["completion_tokens"] == 1
    assert gateway.get(f"/v1/conversations/{conv}").json()["message_count"] == 2


def test_a_reply_too_large_to_store_is_a_clear_502_that_stores_nothing(gateway):
    """A conversation message is one DynamoDB item (400 KB at most): a larger reply is reported as
    what it is, the lease is let go, nothing is stored — and stateless, the same reply is just returned."""
    huge = {
        "id": "chatcmpl-big",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "x" * 450_000}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 100_000, "total_tokens": 100_005},
    }
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    set_upstream(gateway, scripted((200, {}, huge), (200, {}, huge)))
    r = gateway.post("/v1/chat/completions", chat("write a lot", conv))
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "reply_too_large_to_store"
    assert gateway.get(f"/v1/conversations/{conv}").json()["message_count"] == 0
    stateless = gateway.post("/v1/chat/completions", chat("write a lot"))
    assert stateless.status_code == 200 and len(stateless.json()["choices"][0]["message"]["content"]) == 450_000
    assert gateway.post("/v1/chat/completions", chat("again", conv)).status_code == 200  # lease released
