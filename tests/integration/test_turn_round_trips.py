"""A conversation turn's DynamoDB round trips: the quota settlement rides on the turn's commit.

Unlimited keys write their usage once, after the call; on a conversation that write is part of
the commit's TransactWriteItems (moto server + fake upstream; requests counted at the client)."""

from __future__ import annotations

from collections import Counter

import pytest

from llm_gateway.conversations.store import conversation_pk
from llm_gateway.errors import ConversationBusy
from llm_gateway.quotas.service import key_pk, tenant_pk
from local.fake_upstream import FakeUpstream
from tests.integration.conftest import chat
from tests.integration.quota_helpers import day_counter, key_id, limit_key, quota_gateway


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream() as f:
        yield f


def counted(gw) -> tuple[Counter, list[dict]]:
    calls: Counter = Counter()
    transactions: list[dict] = []

    def count(model, params, **_):
        calls[model.name] += 1
        if model.name == "TransactWriteItems":
            transactions.append(params)

    gw.services.conversations.client.meta.events.register("before-parameter-build.dynamodb.*", count)
    return calls, transactions


def usage_of(reply) -> tuple[int, int]:
    usage = reply.json()["usage"]
    return usage["prompt_tokens"], usage["completion_tokens"]


def test_a_turn_is_lease_history_and_one_commit_that_also_records_usage(aws, fake):
    gw, clock = quota_gateway(aws, fake)
    conv = gw.post("/v1/conversations", {}).json()["id"]
    assert gw.post("/v1/chat/completions", chat("first", conv)).status_code == 200
    calls, transactions = counted(gw)
    reply = gw.post("/v1/chat/completions", chat("second", conv))
    assert reply.status_code == 200, reply.text
    # lease and commit (with the usage): no round trip of the settlement's own, and no history Query (this
    # process committed the first turn, so its history cache holds the window at the leased version)
    assert calls == Counter({"UpdateItem": 1, "TransactWriteItems": 1})
    (commit,) = transactions
    keys = {(item["Update"]["Key"]["PK"]["S"]) for item in commit["TransactItems"] if "Update" in item}
    assert {conversation_pk("tenant-a", conv), tenant_pk("tenant-a"), key_pk("tenant-a", key_id(gw))} <= keys
    # the counters hold both turns exactly, as each reply reported them
    prompt, completion = usage_of(reply)
    day = day_counter(gw, key_pk("tenant-a", key_id(gw)), clock)
    assert day["req"] == 2 and day["out"] >= completion and day["in"] >= prompt
    assert day["tok"] == day["in"] + day["out"]


def test_a_limited_key_reserves_before_and_settles_with_the_commit_freeing_its_slot(aws, fake):
    gw, clock = quota_gateway(aws, fake)
    limit_key(gw, rpm=100, tpm=100_000, max_concurrent=2, usd_per_day=10)
    conv = gw.post("/v1/conversations", {}).json()["id"]
    first = gw.post("/v1/chat/completions", chat("hello", max_tokens=20))  # stateless; reads the limits
    calls, transactions = counted(gw)
    reply = gw.post("/v1/chat/completions", chat("hello", conv, max_tokens=20))
    assert reply.status_code == 200, reply.text
    # lease, reservation, commit (with the settlement and the slot release); no history yet
    assert calls == Counter({"UpdateItem": 1, "TransactWriteItems": 2})
    assert len(transactions[-1]["TransactItems"]) > 3  # head + 2 messages + the settlement's writes
    pk = key_pk("tenant-a", key_id(gw))
    assert not gw.services.quotas.counters.read(pk, "SLOTS").get("holders")  # the slot is free again
    day = day_counter(gw, pk, clock)
    (p1, c1), (p2, c2) = usage_of(first), usage_of(reply)
    assert (day["req"], day["in"], day["out"]) == (2, p1 + p2, c1 + c2)  # reconciled to the token


def test_a_commit_that_fails_still_records_the_call_on_its_own(aws, fake, monkeypatch):
    gw, clock = quota_gateway(aws, fake)
    conv = gw.post("/v1/conversations", {}).json()["id"]
    store = gw.services.conversations

    def busy(*_, **__):
        raise ConversationBusy("The conversation changed while this turn ran; nothing was stored.")

    monkeypatch.setattr(store, "commit_turn", busy)
    calls, _ = counted(gw)
    reply = gw.post("/v1/chat/completions", chat("hello", conv))
    assert reply.status_code == 409
    assert calls["UpdateItem"] == 2  # the lease, then its release
    day = day_counter(gw, key_pk("tenant-a", key_id(gw)), clock)
    assert day["req"] == 1 and day["out"] > 0  # the upstream call happened: it is counted
