"""Jobs count against the tenant's limits when the worker runs them."""

from __future__ import annotations

import pytest

from llm_gateway.quotas.limits import Limits
from tests.integration.test_jobs import _jobs, chat


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
