"""Jobs count against the tenant's and the submitting key's limits when the worker runs them."""

from __future__ import annotations

import json

import pytest
from openai.types.responses import Response

from llm_gateway.jobs.messages import JobMessage, parse_job_message
from llm_gateway.quotas.limits import Limits
from tests.integration.conftest import TENANT_KEY
from tests.integration.quota_helpers import key_id, limit_key
from tests.integration.test_jobs import _jobs, chat, send


@pytest.fixture
def jobs(aws):
    yield from _jobs(aws, default_input_price_per_1m=1.0, default_output_price_per_1m=2.0)


def test_a_job_over_budget_fails_insufficient_quota_and_a_rate_limited_one_waits(jobs):
    quotas = jobs.gw.services.quotas
    quotas.limits.put_tenant("tenant-a", Limits(usd_per_day=0.0))
    broke = jobs.submit(chat("spend")).json()
    outcome = jobs.poller.poll_once()
    assert outcome.failed == [] and len(outcome.deleted) == 1  # permanent: not redelivered
    got = jobs.job(broke["id"])
    assert got["status"] == "failed" and got["error"]["code"] == "insufficient_quota"
    assert jobs.upstream.count("spend") == 0

    quotas.limits.put_tenant("tenant-a", Limits(rpm=0))
    waiting = jobs.submit(chat("later")).json()
    outcome = jobs.poller.poll_once()
    assert len(outcome.failed) == 1  # handed back to SQS for redelivery
    got = jobs.job(waiting["id"])
    assert got["status"] == "queued" and got["last_error"]["code"] == "rate_limit_exceeded"
    quotas.limits.put_tenant("tenant-a", Limits())
    jobs.drain(lambda: jobs.job(waiting["id"])["status"] == "succeeded")
    assert jobs.upstream.count("later") == 1


def test_a_job_counts_against_the_submitting_keys_limits(jobs):
    """The job message names the submitting key (version 2), so the worker applies the key's limits,
    not only the tenant's: a key over budget fails its job, a rate-limited key's job waits."""
    gw = jobs.gw
    submitted = jobs.submit(chat("from a key")).json()
    (message,) = jobs.queue_messages()
    parsed, _ = parse_job_message(message["Body"])
    assert (parsed.version, parsed.key_id) == (2, key_id(gw, TENANT_KEY))
    jobs.drain(lambda: jobs.job(submitted["id"])["status"] == "succeeded")

    limit_key(gw, usd_per_day=0.0)  # the tenant itself stays unlimited
    broke = jobs.submit(chat("key spend")).json()
    jobs.poller.poll_once()
    got = jobs.job(broke["id"])
    assert got["status"] == "failed" and got["error"]["code"] == "insufficient_quota"
    assert jobs.upstream.count("key spend") == 0

    limit_key(gw, rpm=0)
    waiting = jobs.submit(chat("key later")).json()
    assert len(jobs.poller.poll_once().failed) == 1
    assert jobs.job(waiting["id"])["last_error"]["code"] == "rate_limit_exceeded"
    limit_key(gw)  # unlimited again
    jobs.drain(lambda: jobs.job(waiting["id"])["status"] == "succeeded")
    assert jobs.upstream.count("key later") == 1

    usage = gw.get("/v1/usage?group_by=key").json()  # the key's counters saw its jobs
    (row,) = [r for r in usage["data"] if r.get("key") == key_id(gw, TENANT_KEY)]
    assert row["requests"] >= 2


def test_a_message_without_a_key_is_limited_per_tenant_only(jobs):
    """Version 1 messages (direct producers) carry no key: the tenant's limits apply, no key's."""
    limit_key(jobs.gw, usd_per_day=0.0)
    v1 = JobMessage(version=1, job_id="ext-v1-0001", tenant_id="tenant-a", request=chat("v1 job"), source="billing")
    assert json.loads(v1.body())["version"] == 1 and "key_id" not in json.loads(v1.body())
    send(jobs, v1.body(), v1.group_id(), v1.job_id)
    assert jobs.poller.poll_once().failed == []
    assert jobs.job("ext-v1-0001")["status"] == "succeeded"  # the key's zero budget did not apply
    jobs.gw.services.quotas.limits.put_tenant("tenant-a", Limits(usd_per_day=0.0))
    v2 = JobMessage(job_id="ext-v2-0001", tenant_id="tenant-a", request=chat("v2 job"))
    send(jobs, v2.body(), v2.group_id(), v2.job_id)
    jobs.poller.poll_once()
    assert jobs.job("ext-v2-0001")["error"]["code"] == "insufficient_quota"


def test_a_background_response_counts_against_the_submitting_keys_limits(jobs):
    """POST /v1/responses with background=true rides the jobs queue with the key id too."""
    gw = jobs.gw
    limit_key(gw, usd_per_day=0.0)
    r = gw.post("/v1/responses", {"model": "default", "input": "background spend", "background": True})
    assert r.status_code == 200, r.text
    (message,) = jobs.queue_messages()
    assert json.loads(message["Body"])["key_id"] == key_id(gw, TENANT_KEY)
    jobs.drain(lambda: gw.get(f"/v1/responses/{r.json()['id']}").json()["status"] not in ("queued", "in_progress"))
    done = gw.get(f"/v1/responses/{r.json()['id']}").json()
    # the key's day budget (the tenant is unlimited). A Response's error is OpenAI's ResponseError, whose
    # codes have no quota one: rate_limit_exceeded, with the type a synchronous request gets for a budget
    Response.model_validate(done)
    assert done["status"] == "failed" and "usd_per_day" in done["error"]["message"], done
    assert done["error"]["code"] == "rate_limit_exceeded" and done["error"]["type"] == "insufficient_quota"
    sync = gw.post("/v1/responses", {"model": "default", "input": "foreground spend"})
    assert sync.status_code == 429 and sync.json()["error"]["type"] == done["error"]["type"]
    assert jobs.upstream.count("background spend") == 0
