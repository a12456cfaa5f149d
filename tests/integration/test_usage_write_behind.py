"""Unlimited usage is written behind the reply; limited keys settle before it (moto server + fake upstream)."""

from __future__ import annotations

import threading

import pytest

from llm_gateway.quotas.service import SLOTS_SK, Windows, key_pk
from local.fake_upstream import FakeUpstream
from tests.integration.conftest import OTHER_KEY, chat
from tests.integration.quota_helpers import key_id, limit_key, quota_gateway


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream() as f:
        yield f


def test_an_unlimited_reply_comes_before_its_usage_write_and_a_usage_read_sees_it(aws, fake):
    fake.reset()
    gw, clock = quota_gateway(aws, fake)
    day = f"D#{Windows.at(clock.now).day}"
    held, gate = threading.Event(), threading.Event()

    def hold_the_writer(**_):  # the usage writer's transaction waits here until the test lets it go
        if threading.current_thread().name == "usage-writer":
            held.set()
            gate.wait(30)

    client = gw.services.conversations.client
    client.meta.events.register("before-call.dynamodb.TransactWriteItems", hold_the_writer)
    try:
        reply = gw.post("/v1/chat/completions", chat("hello", max_tokens=5))
        assert reply.status_code == 200, reply.text
        assert held.wait(10)  # the settlement is under way in the writer thread...
        pk = key_pk("tenant-a", key_id(gw))
        assert gw.services.quotas.counters.read(pk, day) == {}  # ...and the reply did not wait for it

        # a limited key (a concurrency slot) settles before its reply, even with the writer stuck:
        # a sequential client never meets its own slot, and its counters are exact at once
        other = key_id(gw, OTHER_KEY)
        limit_key(gw, OTHER_KEY, max_concurrent=1)
        for i in range(3):
            r = gw.post("/v1/chat/completions", chat(f"limited {i}", max_tokens=5), key=OTHER_KEY)
            assert r.status_code == 200, r.text
        limited = gw.services.quotas.counters.read(key_pk("tenant-b", other), day)
        assert limited["req"] == 3 and limited["out"] == 15
        assert not gw.services.quotas.counters.read(key_pk("tenant-b", other), SLOTS_SK).get("holders")
    finally:
        gate.set()
        client.meta.events.unregister("before-call.dynamodb.TransactWriteItems", hold_the_writer)

    usage = gw.get("/v1/usage?group_by=key&start=2027-01-15&end=2027-01-15")  # waits for the pending write
    assert usage.status_code == 200, usage.text
    (row,) = usage.json()["data"]
    prompt, completion = reply.json()["usage"]["prompt_tokens"], reply.json()["usage"]["completion_tokens"]
    assert (row["requests"], row["input_tokens"], row["output_tokens"]) == (1, prompt, completion)
    admin_view = gw.services.admin.usage(None, "tenant-b", "2027-01-15", "2027-01-15", "model")
    assert admin_view["total"]["requests"] == 3


def test_requests_pending_together_are_one_transaction_with_exact_sums(aws, fake):
    fake.reset()
    gw, _ = quota_gateway(aws, fake)
    writer = gw.services.quotas.writer
    assert writer is not None
    held, gate = threading.Event(), threading.Event()
    sent: list[int] = []

    def hold_the_first(params, **_):
        if threading.current_thread().name == "usage-writer":
            sent.append(len(params["TransactItems"]))
            held.set()
            gate.wait(30)

    client = gw.services.conversations.client
    client.meta.events.register("before-parameter-build.dynamodb.TransactWriteItems", hold_the_first)
    try:
        replies = [gw.post("/v1/chat/completions", chat("hi 0", max_tokens=3))]
        assert held.wait(10)
        replies += [gw.post("/v1/chat/completions", chat(f"hi {i}", max_tokens=3)) for i in range(1, 12)]
        assert all(r.status_code == 200 for r in replies)
        gate.set()
        assert gw.services.quotas.drain(10)
    finally:
        gate.set()
        client.meta.events.unregister("before-parameter-build.dynamodb.TransactWriteItems", hold_the_first)
    # the first request's three counters, then the eleven others' 33 updates as the same three items
    assert sent == [3, 3]
    usage = gw.get("/v1/usage?start=2027-01-15&end=2027-01-15").json()["total"]
    assert usage["requests"] == 12
    assert usage["input_tokens"] == sum(r.json()["usage"]["prompt_tokens"] for r in replies)
    assert usage["output_tokens"] == sum(r.json()["usage"]["completion_tokens"] for r in replies)
    by_model = gw.get("/v1/usage?group_by=model&start=2027-01-15&end=2027-01-15").json()["data"]
    assert [(m["model"], m["requests"]) for m in by_model] == [("default", 12)]


def test_the_worker_answers_its_batch_only_once_the_batch_usage_is_written(aws):
    """Lambda freezes the container once the batch is answered: the worker drains the writer first."""
    from tests.integration.test_jobs import _jobs
    from tests.integration.test_jobs import chat as job_chat

    setup = _jobs(aws)
    jobs = next(setup)
    held, gate, answered = threading.Event(), threading.Event(), threading.Event()

    def hold_the_writer(**_):
        if threading.current_thread().name == "usage-writer":
            held.set()
            gate.wait(30)

    client = jobs.gw.services.conversations.client
    client.meta.events.register("before-call.dynamodb.TransactWriteItems", hold_the_writer)
    try:
        submitted = jobs.submit(job_chat("a stateless job")).json()

        def poll() -> None:
            jobs.poller.poll_once()
            answered.set()

        poller = threading.Thread(target=poll)
        poller.start()
        assert held.wait(20)  # the job ran; its usage is being written behind it
        assert not answered.wait(1.0)  # and the batch is not answered while that write is pending
        gate.set()
        poller.join(30)
        assert answered.is_set()
        assert jobs.job(submitted["id"])["status"] == "succeeded"
        pk = key_pk("tenant-a", key_id(jobs.gw))
        day = jobs.gw.services.quotas.counters.read(pk, f"D#{Windows.at(jobs.gw.services.quotas.clock()).day}")
        assert day["req"] == 1  # read directly, no drain: the batch's answer came after the write
    finally:
        gate.set()
        client.meta.events.unregister("before-call.dynamodb.TransactWriteItems", hold_the_writer)
        setup.close()
