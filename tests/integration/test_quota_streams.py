"""Concurrency slots held by streams, and counters reconciled to the token over mixed outcomes."""

from __future__ import annotations

import json
import time

import pytest
import requests

from llm_gateway.chat.metering import prompt_count
from llm_gateway.chat.tokens import count_text
from llm_gateway.quotas.service import SLOTS_SK, Windows, key_pk
from local.fake_upstream import FakeUpstream
from tests.integration.conftest import TENANT_KEY, chat, serve
from tests.integration.quota_helpers import key_id, limit_key, quota_gateway

HEADERS = {"Authorization": f"Bearer {TENANT_KEY}"}


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream() as f:
        yield f


@pytest.fixture(autouse=True)
def _reset(fake):
    fake.reset()
    yield
    fake.release()


def open_stream(base: str, text: str = "hold") -> requests.Response:
    return requests.post(
        f"{base}/v1/chat/completions", json=chat(text, stream=True), headers=HEADERS, stream=True, timeout=10
    )


def until_admitted(base: str, seconds: float = 5.0) -> requests.Response:
    """A non-streamed request, retried until a slot is free (the freeing happens in the server's thread)."""
    end = time.monotonic() + seconds
    while True:
        r = requests.post(f"{base}/v1/chat/completions", json=chat("probe"), headers=HEADERS, timeout=10)
        if r.status_code != 429 or time.monotonic() > end:
            return r
        time.sleep(0.05)


def test_two_concurrent_key_third_stream_429_at_once_and_slots_free_on_end_cancel_and_expiry(aws, fake):
    gw, clock = quota_gateway(aws, fake)
    limit_key(gw, max_concurrent=2)
    fake.script({"block_after": 1}, {"block_after": 1})
    with serve(gw.app) as base:
        first, second = open_stream(base, "one"), open_stream(base, "two")
        assert first.status_code == second.status_code == 200
        assert fake.wait_for_blocked(2)
        started = time.monotonic()
        third = open_stream(base, "three")
        assert third.status_code == 429 and time.monotonic() - started < 2  # at once, not after a wait
        assert third.json()["error"]["code"] == "rate_limit_exceeded"
        assert third.headers["Retry-After"] == "1"
        assert fake.chat_calls == 2  # the third never reached the upstream
        # a cancelled stream (the client goes away) frees its slot
        first.close()
        assert until_admitted(base).status_code == 200
        # a stream that ends frees its slot: release the second, read it to [DONE]
        fake.release()
        body = second.content.decode()
        assert body.rstrip().endswith("data: [DONE]")
        assert until_admitted(base).status_code == 200
        slots = gw.services.quotas.counters.read(key_pk("tenant-a", key_id(gw)), SLOTS_SK)
        assert not slots.get("holders")
    # a crashed holder (reserved, never settled) blocks its slot until its expiry has passed
    alias = gw.services.routing.resolve("default")
    for _ in range(2):
        gw.services.quotas.admit("tenant-a", key_id(gw), alias, 10, 5, hold_seconds=30)
    r = gw.post("/v1/chat/completions", chat("after crash"))
    assert r.status_code == 429
    clock.now += 36  # past the holders' expiry
    r = gw.post("/v1/chat/completions", chat("after expiry"))
    assert r.status_code == 200, r.text


def wait_for_no_holders(gw, seconds: float = 10.0) -> bool:
    pk = key_pk("tenant-a", key_id(gw))
    end = time.monotonic() + seconds
    while gw.services.quotas.counters.read(pk, SLOTS_SK).get("holders"):
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def sse_events(response: requests.Response) -> list[dict]:
    events = []
    for line in response.iter_lines():
        if line.startswith(b"data: ") and line != b"data: [DONE]":
            events.append(json.loads(line[6:]))
    return events


def test_reconciliation_over_200_mixed_calls_is_exact_to_the_token(aws, fake):
    gw, clock = quota_gateway(aws, fake, max_attempts=2)
    limit_key(gw, rpm=10_000, tpm=10_000_000, usd_per_day=100.0, max_concurrent=50)
    deployment = gw.services.routing.resolve("default").deployments[0]
    expected = {"in": 0, "out": 0, "nusd": 0, "req": 0}
    outcomes: dict[str, int] = {}

    def charge(prompt: int, completion: int) -> None:
        expected["in"] += prompt
        expected["out"] += completion
        expected["nusd"] += round(deployment.cost(prompt, completion) * 1e9)

    with serve(gw.app) as base:
        for i in range(200):
            kind = ("ok", "bad", "unavailable", "stream", "cut", "cancel")[i % 6]
            text = f"call {i} " + "word " * (i % 7)
            messages = [{"role": "user", "content": text}]
            expected["req"] += 1
            if kind == "ok":
                r = requests.post(f"{base}/v1/chat/completions", json=chat(text), headers=HEADERS, timeout=10)
                assert r.status_code == 200
                charge(r.json()["usage"]["prompt_tokens"], r.json()["usage"]["completion_tokens"])
            elif kind in ("bad", "unavailable"):
                fake.script(*([{"status": 400}] if kind == "bad" else [{"status": 503}] * 2))
                r = requests.post(f"{base}/v1/chat/completions", json=chat(text), headers=HEADERS, timeout=10)
                assert r.status_code == (400 if kind == "bad" else 503)  # charged nothing
            elif kind == "stream":
                body = chat(text, stream=True, stream_options={"include_usage": True})
                r = requests.post(f"{base}/v1/chat/completions", json=body, headers=HEADERS, stream=True, timeout=10)
                usage = [e["usage"] for e in sse_events(r) if e.get("usage")]
                charge(usage[-1]["prompt_tokens"], usage[-1]["completion_tokens"])
            elif kind == "cut":  # the upstream drops the stream after 2 content chunks: charged what came
                fake.script({"cut_after": 2})
                r = open_stream(base, text)
                got = "".join(
                    (c.get("delta") or {}).get("content") or "" for e in sse_events(r) for c in e.get("choices", [])
                )
                charge(prompt_count(messages), count_text(got))
            else:  # the client cancels after 2 content chunks (the upstream is blocked there)
                fake.script({"block_after": 2})
                r = open_stream(base, text)
                got, seen = "", 0
                for line in r.iter_lines():
                    if line.startswith(b"data: "):
                        for c in json.loads(line[6:]).get("choices", []):
                            content = (c.get("delta") or {}).get("content")
                            if content:
                                got, seen = got + content, seen + 1
                    if seen == 2:
                        break
                r.close()
                charge(prompt_count(messages), count_text(got))
                # the gateway notices the client left, aborts the upstream read and settles; only then
                # is the upstream let go (released earlier, a next chunk could race the abort)
                assert wait_for_no_holders(gw)
                fake.release()
            outcomes[kind] = outcomes.get(kind, 0) + 1
        assert wait_for_no_holders(gw)  # every stream has been settled once the server's close paths ran
    pk = key_pk("tenant-a", key_id(gw))
    day = f"D#{Windows.at(clock.now).day}"
    counters = gw.services.quotas.counters.read(pk, day)
    assert {k: counters.get(k, 0) for k in expected} == expected
    assert counters["tok"] == expected["in"] + expected["out"]
    minute = gw.services.quotas.counters.read(pk, f"M#{Windows.at(clock.now).minute}")
    assert minute["tok"] == expected["in"] + expected["out"] and minute["req"] == 200
    assert not gw.services.quotas.counters.read(pk, SLOTS_SK).get("holders")
    assert min(outcomes.values()) >= 33
